package cache

import (
	"fmt"
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds/xds"

	"github.com/meshsds/meshsds/sds"
)

// rotation is the progress of a mesh's CA change, carried from one
// meshState to the next.
type rotation struct {
	phase Phase
	since time.Time
	// gen numbers phases, so that a timer of an earlier phase does nothing.
	gen        int
	stopTimer  func() bool
	checkTimer bool   // a check of the waiting data planes is scheduled
	warnedFor  string // CA fingerprint the expiry warning was logged for
	warning    string
	// With a Coordinator: done is set once no data plane here waits for
	// anything in the phase; changeSince is when the change started here;
	// joined marks a state that joined the replicas' change (joinLocked).
	done        bool
	changeSince time.Time
	joined      bool
}

// rotationCheckDelay batches the ACKs of a fleet before counting who still
// has to ACK: only during a CA change, never when idle.
const rotationCheckDelay = 20 * time.Millisecond

// acked records what w's data plane acknowledged and, during a CA change,
// schedules a look at whether the change can go on.
func (c *Cache) acked(w *Watch, t xds.Tag) {
	if t == (xds.Tag{}) {
		return
	}
	next := w.heldTag().With(t)
	w.acked.Store(&next)
	if c.rotating.Load() == 0 {
		return // no CA change waits for it
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ms := c.meshes[w.id.Mesh]; ms != nil {
		c.scheduleCheckLocked(w.id.Mesh, ms)
	}
}

// scheduleCheckLocked schedules checkRotation for a mesh in a CA change.
func (c *Cache) scheduleCheckLocked(mesh string, ms *meshState) {
	if ms.phase == PhaseSteady || ms.checkTimer {
		return
	}
	ms.checkTimer = true
	c.cfg.AfterFunc(rotationCheckDelay, func() { c.checkRotation(mesh) })
}

// checkRotation moves a CA change to its next phase once no connected data
// plane has to ACK anything more for the current one.
func (c *Cache) checkRotation(mesh string) {
	c.mu.Lock()
	defer c.unlock()
	ms := c.meshes[mesh]
	if ms == nil {
		return
	}
	ms.checkTimer = false
	if ms.phase == PhaseSteady || c.countWaitingLocked(ms, 1) != 0 {
		return
	}
	if c.cfg.Coordinator == nil {
		c.advanceLocked(mesh, ms, false)
		return
	}
	// The other replicas decide with us: say we are done, and wait for
	// Advance.
	if !ms.done {
		ms.done = true
		c.reportLocked(mesh, ms)
	}
}

// phaseTimedOut moves a CA change on when its phase took too long: data
// planes that never ACK must not hold a mesh's CA change forever.
func (c *Cache) phaseTimedOut(mesh string, gen int) {
	c.mu.Lock()
	defer c.unlock()
	ms := c.meshes[mesh]
	if ms == nil || ms.phase == PhaseSteady || ms.gen != gen {
		return
	}
	c.advanceLocked(mesh, ms, true)
}

// waitingLocked counts the streams that have not ACKed what the current
// phase waits for: the trust bundle with the new CA, then a certificate of
// the new CA.
func (c *Cache) waitingLocked(ms *meshState) int {
	return c.countWaitingLocked(ms, -1)
}

// countWaitingLocked counts like waitingLocked but stops at limit (none
// when negative): the check after each batch of ACKs only needs to know
// whether anybody still waits, and must not walk ten thousand streams to
// learn that most do.
func (c *Cache) countWaitingLocked(ms *meshState, limit int) int {
	n := 0
	for _, set := range ms.watchers {
		for w := range set {
			in := w.interest.Load()
			switch ms.phase {
			case PhaseTrustNew:
				if in&wantBundle != 0 && w.heldTag()[tagBundle] != ms.bundleVer {
					n++
				}
			case PhaseReissue:
				if in&wantIdentity != 0 && w.heldTag()[tagCA] != ms.caVersion {
					n++
				}
			}
			if n == limit {
				return n
			}
		}
	}
	return n
}

// startPhaseLocked enters phase p: a fresh timeout, a check for meshes
// with nobody to wait for, the metric and a log line.
func (c *Cache) startPhaseLocked(mesh string, ms *meshState, p Phase) {
	if ms.stopTimer != nil {
		ms.stopTimer()
		ms.stopTimer = nil
	}
	ms.phase, ms.since = p, c.cfg.Now()
	ms.gen++
	ms.done = false
	if p == PhaseSteady {
		c.dropAheadLocked(mesh) // a change ended or was abandoned
	}
	c.metrics.rotationPhase.WithLabelValues(mesh).Set(float64(p))
	c.reportLocked(mesh, ms)
	if p == PhaseSteady {
		return
	}
	gen := ms.gen
	if c.cfg.Coordinator == nil {
		// With a coordinator, the replicas apply the timeout together.
		ms.stopTimer = c.cfg.AfterFunc(c.cfg.RotationTimeout, func() { c.phaseTimedOut(mesh, gen) })
	}
	c.scheduleCheckLocked(mesh, ms)
	c.log.Info("CA change: entering phase", sds.LogMesh, mesh, "phase", p.String(), "waiting", c.waitingLocked(ms))
}

// advanceLocked ends the current phase of a CA change.
func (c *Cache) advanceLocked(mesh string, ms *meshState, timedOut bool) {
	if timedOut {
		c.metrics.rotationTimeouts.WithLabelValues(mesh).Inc()
		c.log.Warn("CA change: data planes did not ACK in time; going on without them", sds.LogMesh, mesh,
			"phase", ms.phase.String(), "waiting", c.waitingLocked(ms), "timeout", c.cfg.RotationTimeout)
	}
	now := c.cfg.Now()
	switch ms.phase {
	case PhaseTrustNew:
		// Everyone trusts the new CA: sign with it.
		ms.ca = ms.target
		ms.caVersion = caVersionOf(ms.ca, ms.validity)
		c.dropCerts(mesh, ms.caVersion)
		c.startPhaseLocked(mesh, ms, PhaseReissue)
		c.installAheadLocked(mesh, ms)
		c.reissueLocked(ms, now)
	case PhaseReissue:
		// Nothing served chains to the old CA any more: drop it.
		ms.trusted = []*pki.CA{ms.target}
		c.startPhaseLocked(mesh, ms, PhaseSteady)
		if c.setBundle(ms) {
			c.wakeLocked(ms, wantBundle, now)
		}
		c.log.Info("CA change complete", sds.LogMesh, mesh)
	}
	c.publishLocked()
}

// issueAheadLocked signs, on the pool, the certificates the connected data
// planes of ms will need from the CA it is changing to, while they are
// still learning to trust it: the CPU the signatures take overlaps the
// round trips of the trust phase, and the reissue phase only has to push.
// They are kept aside in c.ahead until the new CA signs.
func (c *Cache) issueAheadLocked(mesh string, ms *meshState) {
	target, validity, gen := ms.target, ms.validity, ms.gen
	if target == nil {
		return
	}
	version := caVersionOf(target, validity)
	current := func() bool {
		cur := c.meshes[mesh]
		return cur != nil && cur.phase == PhaseTrustNew && cur.gen == gen
	}
	for key, set := range ms.watchers {
		for w := range set {
			if w.interest.Load()&wantIdentity == 0 {
				continue
			}
			id := w.id
			c.pool.submitLow(func() {
				c.mu.Lock()
				ok := current()
				c.mu.Unlock()
				if !ok {
					return
				}
				e, err := c.sign(id, target, validity, version)
				if err != nil {
					c.log.Error("issuing a workload certificate ahead of a CA change", sds.LogMesh, mesh, sds.LogDataplane, id.Name, sds.LogErr, err)
					return // issued again when the new CA signs
				}
				c.mu.Lock()
				if current() {
					c.ahead[key] = e
				}
				c.mu.Unlock()
			})
			break
		}
	}
}

// installAheadLocked caches the certificates issued ahead for ms's new
// signing CA, and forgets the mesh's others.
func (c *Cache) installAheadLocked(mesh string, ms *meshState) {
	for key, e := range c.ahead {
		if meshOfKey(key) != mesh {
			continue
		}
		delete(c.ahead, key)
		if e.caVersion == ms.caVersion {
			c.installLocked(mesh, key, e)
		}
	}
}

// dropAheadLocked forgets the certificates issued ahead for mesh.
func (c *Cache) dropAheadLocked(mesh string) {
	for key := range c.ahead {
		if meshOfKey(key) == mesh {
			delete(c.ahead, key)
		}
	}
}

// reissueLocked issues, ahead and on the pool, the certificates of every
// connected identity of ms; each wakes its streams when ready.
func (c *Cache) reissueLocked(ms *meshState, now time.Time) {
	for key, set := range ms.watchers {
		for w := range set {
			if w.interest.Load()&wantIdentity != 0 {
				w.since.CompareAndSwap(0, now.UnixNano())
				c.startIssueLocked(w.id, key, ms, true)
				break
			}
		}
	}
}

// wakeLocked wakes the streams of ms that want what changed.
func (c *Cache) wakeLocked(ms *meshState, want uint32, now time.Time) {
	for _, set := range ms.watchers {
		for w := range set {
			if w.interest.Load()&want != 0 {
				c.wakeLater(w, now)
			}
		}
	}
}

// rotationUpdatedLocked follows a mesh's new state after an Update: it
// starts or ends CA change phases and reports a CA that expires before the
// certificates it signs would.
func (c *Cache) rotationUpdatedLocked(mesh string, old, ms *meshState) {
	oldPhase, oldTrusted := PhaseSteady, []*pki.CA(nil)
	if old != nil {
		oldPhase, oldTrusted = old.phase, old.trusted
	}
	newChange := ms.phase == PhaseTrustNew && (oldPhase != PhaseTrustNew || len(oldTrusted) != len(ms.trusted))
	switch {
	case ms.joined:
		ms.joined = false
		p := ms.phase
		ms.phase = PhaseSteady // entered afresh below
		c.startPhaseLocked(mesh, ms, p)
		if p == PhaseTrustNew {
			c.issueAheadLocked(mesh, ms)
		}
	case newChange:
		if ms.target != nil && ms.ca != nil {
			c.log.Info("CA change started: the new CA is trusted first, then signs", sds.LogMesh, mesh,
				"from", ms.ca.Chain[0].Subject.String(), "to", ms.target.Chain[0].Subject.String())
		}
		ms.changeSince = c.cfg.Now()
		ms.phase = PhaseSteady // entered afresh below
		c.startPhaseLocked(mesh, ms, PhaseTrustNew)
		c.issueAheadLocked(mesh, ms)
	case ms.phase == PhaseSteady && oldPhase != PhaseSteady:
		c.startPhaseLocked(mesh, ms, PhaseSteady) // aborted, or mTLS turned off
	default:
		c.metrics.rotationPhase.WithLabelValues(mesh).Set(float64(ms.phase))
	}

	ms.warning = ""
	expiring := 0.0
	if ms.ca != nil {
		end := ms.ca.Chain[0].NotAfter
		if end.Before(c.cfg.Now().Add(ms.validity)) {
			expiring = 1
			ms.warning = fmt.Sprintf("the CA expires at %s, within the %s validity of the certificates it signs: they are cut short to its expiry; replace the CA",
				end.UTC().Format(time.RFC3339), ms.validity)
			if ms.warnedFor != ms.ca.Fingerprint {
				ms.warnedFor = ms.ca.Fingerprint
				c.log.Warn("CA expires soon", sds.LogMesh, mesh, "expires", end.UTC().Format(time.RFC3339), "workload_validity", ms.validity)
			}
		}
	}
	c.metrics.caExpiresSoon.WithLabelValues(mesh).Set(expiring)
}
