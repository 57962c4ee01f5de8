package cache

import (
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds"
)

// Coordinator makes the replicas that serve the same meshes go through
// each CA change together (package cluster implements it over a shared
// database). Without one, a replica moves a change on as soon as its own
// data planes are done; with one, it reports its progress and moves on
// when the replicas agree (Advance), so that a data plane on one replica
// never presents a certificate that a data plane on another does not trust
// yet.
type Coordinator interface {
	// Progress reports where this replica is in mesh; the zero Progress
	// means it does not serve mesh (any more). It is called with the
	// cache's lock held: it must neither block nor call the cache.
	Progress(mesh string, p Progress)
	// Shared returns the CA change of mesh in progress, as the replicas
	// agreed on it. A replica that starts serving a mesh in the middle of
	// a change joins it in its current phase. Called with the cache's lock
	// held.
	Shared(mesh string) (SharedChange, bool)
	// Waiting names the replicas the current phase of mesh's change still
	// waits for, for the mesh's status. Called with the cache's lock held.
	Waiting(mesh string) []string
}

// Progress is where one replica is in a mesh's CA.
type Progress struct {
	// CA is the fingerprint of the CA the mesh resolves to: the one a
	// change moves to.
	CA string `json:"ca"`
	// Phase is the replica's phase of the change (steady when none).
	Phase Phase `json:"phase"`
	// Done: no data plane connected here waits for anything in Phase.
	Done bool `json:"done,omitempty"`
	// Since is when this replica saw the change start.
	Since time.Time `json:"since,omitzero"`
	// Trusted are the CAs trusted besides CA during the change, for a
	// replica that joins it (they are not published per replica).
	Trusted []*pki.CA `json:"-"`
}

// SharedChange is a CA change as the replicas agreed on it.
type SharedChange struct {
	// CA is the fingerprint of the CA the mesh changes to.
	CA string
	// Phase is the phase every replica is in or moving to.
	Phase Phase
	// Trusted are the CAs trusted besides CA until the change completes:
	// certificates only, without keys.
	Trusted []*pki.CA
}

// Later reports whether phase p comes after q in a CA change, where
// steady is the end of a change rather than its absence.
func (p Phase) Later(q Phase) bool { return phaseRank(p) > phaseRank(q) }

func phaseRank(p Phase) int {
	if p == PhaseSteady {
		return 3
	}
	return int(p)
}

// Next is the phase after p; steady is the last.
func (p Phase) Next() Phase {
	if p == PhaseTrustNew {
		return PhaseReissue
	}
	return PhaseSteady
}

// Advance moves mesh's change to ca on to phase to, as the replicas
// agreed (Coordinator): through the reissue phase, then to steady, when it
// is behind. Nothing happens when the mesh does not change to ca.
func (c *Cache) Advance(mesh, ca string, to Phase, timedOut bool) {
	c.mu.Lock()
	defer c.unlock()
	ms := c.meshes[mesh]
	if ms == nil || ms.target == nil || ms.target.Fingerprint != ca {
		return
	}
	for ms.phase != PhaseSteady && to.Later(ms.phase) {
		c.advanceLocked(mesh, ms, timedOut)
	}
}

// reportLocked tells the coordinator where this replica is in mesh.
func (c *Cache) reportLocked(mesh string, ms *meshState) {
	if c.cfg.Coordinator == nil {
		return
	}
	if ms == nil || ms.resolved == nil || ms.target == nil {
		c.cfg.Coordinator.Progress(mesh, Progress{})
		return
	}
	p := Progress{CA: ms.target.Fingerprint, Phase: ms.phase, Done: ms.phase == PhaseSteady || ms.done}
	if ms.phase != PhaseSteady {
		p.Since = ms.changeSince
		for _, ca := range ms.trusted {
			if !pki.SameCA(ca, ms.target) {
				p.Trusted = append(p.Trusted, ca)
			}
		}
	}
	c.cfg.Coordinator.Progress(mesh, p)
}

// joinLocked starts ms in the CA change the replicas are in, when this
// replica has no signing CA of its own for the mesh yet (it just started,
// or mTLS was just turned on) and the mesh resolves to the CA the change
// moves to. It trusts what the others trust. In the trust phase it cannot
// sign with the old CA, whose key it may never have seen: it holds the
// certificates of its data planes until the reissue phase (they keep what
// they have meanwhile) rather than serve one that a data plane on another
// replica does not trust yet. It reports whether ms joined a change.
func (c *Cache) joinLocked(mesh string, ms *meshState) bool {
	if c.cfg.Coordinator == nil || ms.target == nil {
		return false
	}
	sc, ok := c.cfg.Coordinator.Shared(mesh)
	if !ok || sc.CA != ms.target.Fingerprint || sc.Phase == PhaseSteady {
		return false
	}
	ms.trusted = append(append([]*pki.CA(nil), sc.Trusted...), ms.target)
	ms.phase = sc.Phase
	ms.ca = nil
	if sc.Phase == PhaseReissue {
		ms.ca = ms.target
	}
	ms.joined = true
	ms.changeSince = c.cfg.Now()
	c.log.Info("CA change in progress on the other replicas: joining it", sds.LogMesh, mesh, "phase", sc.Phase.String())
	return true
}
