package cache

import "time"

// RenewalTime is when a certificate valid from notBefore to notAfter is
// replaced: at 4/5 of its lifetime, moved by jitter (a fraction in [-1, 1])
// by up to 1/20 of the lifetime so that data planes issued together do not
// all renew in the same instant.
func RenewalTime(notBefore, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(notBefore)
	at := notBefore.Add(life * 4 / 5)
	return at.Add(time.Duration(jitter * float64(life/20)))
}

// renew evicts e, the certificate of identity key, and wakes the streams
// that serve it so that they fetch a fresh one. An identity without streams
// is simply forgotten and issued anew when it reconnects.
func (c *Cache) renew(mesh, key string, e *certEntry) {
	c.mu.Lock()
	defer c.unlock()
	if c.certs[key] != e {
		return
	}
	delete(c.certs, key)
	ms := c.meshes[mesh]
	if ms == nil {
		return
	}
	now := c.cfg.Now()
	for w := range ms.watchers[key] {
		if w.interest.Load()&wantIdentity != 0 {
			c.wakeLater(w, now)
		}
	}
}
