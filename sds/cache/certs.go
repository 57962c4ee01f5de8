package cache

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/xds"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// certEntry is a cached workload certificate for one identity and CA. It
// keeps what is the data plane's own, its certificate and key in DER, and
// the resource is serialized only when it is sent (on connecting, renewal,
// a CA change, or with a bundle on an ADS stream): ten thousand copies of
// the CA's intermediates would cost more than the serializing.
type certEntry struct {
	caVersion string
	cert      *pki.WorkloadCert
	version   string
	renewAt   time.Time // zero: not renewed, it ends with its token
	stop      func() bool
}

// Build returns the entry's resource called name (identity_cert or its
// alias): it implements xds.Body.
func (e *certEntry) Build(name string) (*anypb.Any, error) {
	return identityResource(name, e.cert)
}

// issueCall is an issuance in progress for one identity and CA; everyone
// who needs that certificate waits for done.
type issueCall struct {
	done chan struct{}
	e    *certEntry
	err  error
}

// identityCert returns the workload certificate of w's identity, issuing
// one when none is cached for the mesh's current CA.
// ok is false while the mesh has no CA. It waits for the issuance, which
// runs on the cache's pool, never on the caller's goroutine.
func (c *Cache) identityCert(w *Watch) (e *certEntry, ok bool, err error) {
	for {
		c.mu.Lock()
		ms := c.meshes[w.id.Mesh]
		if ms == nil || ms.ca == nil {
			c.mu.Unlock()
			return nil, false, nil
		}
		if e := c.certs[w.idKey]; e != nil && e.caVersion == ms.caVersion {
			c.mu.Unlock()
			return e, true, nil
		}
		call := c.startIssueLocked(w.id, w.idKey, ms, false)
		c.mu.Unlock()

		<-call.done
		if errors.Is(call.err, errCAChanged) {
			continue // issue under the CA that replaced it
		}
		if call.err != nil {
			return nil, false, call.err
		}
		return call.e, true, nil
	}
}

// errCAChanged ends an issuance that had not started when its CA was
// replaced.
var errCAChanged = errors.New("the CA changed before issuing")

// startIssueLocked returns the issuance of the certificate of id (whose key
// is key) under ms's current CA, starting it on the pool unless it runs
// already. When wake is set, the streams of id are woken once it is done.
// c.mu must be held.
func (c *Cache) startIssueLocked(id *sds.Identity, key string, ms *meshState, wake bool) *issueCall {
	flightKey := key + "\x00" + ms.caVersion
	if call := c.inflight[flightKey]; call != nil {
		return call
	}
	call := &issueCall{done: make(chan struct{})}
	c.inflight[flightKey] = call
	ca, validity, caVersion := ms.ca, ms.validity, ms.caVersion
	c.pool.submit(func() {
		c.mu.Lock()
		stale := c.meshes[id.Mesh] == nil || c.meshes[id.Mesh].caVersion != caVersion
		c.mu.Unlock()
		if stale {
			// Queued behind a CA that is gone (two changes in a row): the
			// new CA's own issuance is queued, and wakes the streams.
			call.err = errCAChanged
			wake = false
		} else {
			call.e, call.err = c.issue(id, key, ca, validity, caVersion)
		}
		c.mu.Lock()
		delete(c.inflight, flightKey)
		close(call.done)
		var woken []*Watch
		if ms := c.meshes[id.Mesh]; wake && ms != nil {
			for w := range ms.watchers[key] {
				if w.interest.Load()&wantIdentity != 0 {
					woken = append(woken, w)
				}
			}
		}
		c.mu.Unlock()
		now := c.cfg.Now()
		for _, w := range woken {
			w.notify(now)
		}
	})
	return call
}

// issue signs a certificate for id (whose key is key) and caches it with a
// renewal timer. Only one issue per identity and CA runs at a time.
func (c *Cache) issue(id *sds.Identity, key string, ca *pki.CA, validity time.Duration, caVersion string) (*certEntry, error) {
	c.mu.Lock()
	if e := c.certs[key]; e != nil && e.caVersion == caVersion {
		c.mu.Unlock()
		return e, nil
	}
	c.mu.Unlock()

	e, err := c.sign(id, ca, validity, caVersion)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := c.meshes[id.Mesh]
	if ms == nil || ms.caVersion != caVersion {
		// The CA changed while we signed: hand this one out once, but do
		// not cache it; the streams are woken for the new CA anyway.
		e.stop = func() bool { return false }
		return e, nil
	}
	c.installLocked(id.Mesh, key, e)
	return e, nil
}

// sign issues a certificate for id under ca, valid for validity but not
// beyond its token, not yet cached.
func (c *Cache) sign(id *sds.Identity, ca *pki.CA, validity time.Duration, caVersion string) (*certEntry, error) {
	start := c.cfg.Now()
	untilToken := false
	if !id.Expires.IsZero() {
		// No identity outlives its credential: the certificate ends when
		// the token that proved it does, and is not renewed, as the stream
		// closes then.
		if left := id.Expires.Sub(start); left <= validity {
			validity, untilToken = max(left, time.Second), true
		}
	}
	cert, err := pki.IssueWorkloadCert(ca, id.URIs(), validity, c.cfg.KeyType, start)
	if err != nil {
		return nil, fmt.Errorf("issuing for %s: %w", id.NodeID(), err)
	}
	c.metrics.issued.Inc()
	c.metrics.issueSeconds.Observe(c.cfg.Now().Sub(start).Seconds())
	c.metrics.workloadExpiry.WithLabelValues(id.Mesh).Set(float64(cert.NotAfter.Unix()))
	e := &certEntry{caVersion: caVersion, cert: cert, version: xds.ContentVersion(cert.LeafDER, cert.IssuedChainPEM)}
	if !untilToken {
		e.renewAt = RenewalTime(cert.NotBefore, cert.NotAfter, c.cfg.Jitter())
	}
	return e, nil
}

// installLocked caches e as the certificate of identity key, with its
// renewal timer.
func (c *Cache) installLocked(mesh, key string, e *certEntry) {
	if old := c.certs[key]; old != nil {
		old.stop()
	}
	if e.renewAt.IsZero() {
		e.stop = func() bool { return false } // ends with its token: never renewed
	} else {
		e.stop = c.cfg.AfterFunc(e.renewAt.Sub(c.cfg.Now()), func() { c.renew(mesh, key, e) })
	}
	c.certs[key] = e
}

// identityResource serializes cert as the Secret called name.
func identityResource(name string, cert *pki.WorkloadCert) (*anypb.Any, error) {
	a := &anypb.Any{}
	err := anypb.MarshalFrom(a, &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cert.ChainPEM()}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cert.KeyPEM()}},
		}},
	}, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		return nil, fmt.Errorf("serializing workload certificate: %w", err)
	}
	return a, nil
}
