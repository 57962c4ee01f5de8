package cache

import (
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds"
)

// MeshStatus reports the CA state of mesh, or nil when it is not served.
func (c *Cache) MeshStatus(mesh string) *sds.MeshStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := c.meshes[mesh]
	if ms == nil || ms.resolved == nil {
		return nil
	}
	st := &sds.MeshStatus{Phase: ms.phase.String(), Since: ms.since, Warning: ms.warning}
	if ms.phase != PhaseSteady {
		st.Waiting = c.waitingLocked(ms)
		if c.cfg.Coordinator != nil {
			st.WaitingReplicas = c.cfg.Coordinator.Waiting(mesh)
		}
	}
	if ms.resolved.Err != nil {
		st.Error = ms.resolved.Err.Error()
	}
	if ms.ca != nil {
		st.SigningCA = describeCA(ms.ca)
		st.CAExpiry = ms.ca.Chain[0].NotAfter
	}
	for _, ca := range ms.trusted {
		st.TrustedCA = append(st.TrustedCA, describeCA(ca))
	}
	return st
}

func describeCA(ca *pki.CA) string {
	fp := ca.Fingerprint
	if len(fp) > 16 {
		fp = fp[:16]
	}
	return ca.Chain[0].Subject.String() + " (sha256 " + fp + ")"
}
