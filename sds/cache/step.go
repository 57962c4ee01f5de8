package cache

import (
	"bytes"
	"fmt"
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// Phase is where a mesh is in a change of its CA. A change never breaks a
// handshake: the new CA is trusted everywhere before anything it signed is
// served, and the old one is trusted until nothing it signed is served.
type Phase int

// The phases of a CA change.
const (
	// PhaseSteady: one CA signs certificates and is the whole bundle.
	PhaseSteady Phase = iota
	// PhaseTrustNew: the bundle carries the old and the new CA; certificates
	// still come from the old one. Ends when every connected data plane has
	// ACKed that bundle, or after the rotation timeout.
	PhaseTrustNew
	// PhaseReissue: certificates come from the new CA; the bundle still
	// carries both. Ends when every connected data plane has ACKed a
	// certificate of the new CA, or after the rotation timeout; then the old
	// CA leaves the bundle.
	PhaseReissue
)

// String names the phase in status, metrics and logs.
func (p Phase) String() string {
	switch p {
	case PhaseTrustNew:
		return "trust-new-ca"
	case PhaseReissue:
		return "reissue"
	default:
		return "steady"
	}
}

// MarshalText writes the phase's name (String), so that what replicas
// share reads plainly and survives a renumbering.
func (p Phase) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads a phase's name.
func (p *Phase) UnmarshalText(b []byte) error {
	for _, q := range []Phase{PhaseSteady, PhaseTrustNew, PhaseReissue} {
		if string(b) == q.String() {
			*p = q
			return nil
		}
	}
	return fmt.Errorf("unknown CA change phase %q", b)
}

// rotationStep is the CA state of a mesh: who signs, who is trusted.
type rotationStep struct {
	issuing *pki.CA
	trusted []*pki.CA
	phase   Phase
}

// nextStep decides how a mesh moves from prev (its state, whose target was
// prevTarget) to target, the CA it resolves to now. It is a pure function.
func nextStep(prev rotationStep, prevTarget, target *pki.CA, now time.Time) rotationStep {
	switch {
	case target == nil:
		return rotationStep{phase: PhaseSteady}
	case pki.SameCA(target, prevTarget):
		// No news: carry on with the change in progress, if any (also one
		// this replica joined without a signing CA, see joinLocked).
		return prev
	case prev.issuing == nil:
		// The first CA, or mTLS turned on: nothing to stay compatible with.
		return rotationStep{issuing: target, trusted: []*pki.CA{target}}
	case pki.SameCA(target, prev.issuing):
		// Back to the CA that still signs everything: the aborted target
		// signed nothing yet, so it can leave the bundle at once.
		return rotationStep{issuing: prev.issuing, trusted: []*pki.CA{prev.issuing}}
	case prev.phase == PhaseSteady && compatibleCA(prev.issuing, target):
		// The same names and keys (a root or intermediate re-issued to
		// extend it): what either signs verifies under the other, so the
		// change needs no phases.
		return rotationStep{issuing: target, trusted: []*pki.CA{target}}
	case !prev.issuing.Chain[0].NotAfter.After(now):
		// The signing CA has expired: what it signed is dead already, so
		// there is nothing to keep working.
		return rotationStep{issuing: target, trusted: []*pki.CA{target}}
	}
	trusted := append([]*pki.CA(nil), prev.trusted...)
	if !containsCA(trusted, target) {
		trusted = append(trusted, target)
	}
	return rotationStep{issuing: prev.issuing, trusted: trusted, phase: PhaseTrustNew}
}

// compatibleCA reports whether a and b chain the same subjects with the
// same keys, level by level: a certificate signed under one then verifies
// under the other's trust anchor.
func compatibleCA(a, b *pki.CA) bool {
	if len(a.Chain) != len(b.Chain) {
		return false
	}
	for i := range a.Chain {
		x, y := a.Chain[i], b.Chain[i]
		if !bytes.Equal(x.RawSubject, y.RawSubject) || !bytes.Equal(x.RawSubjectPublicKeyInfo, y.RawSubjectPublicKeyInfo) {
			return false
		}
	}
	return true
}

func containsCA(list []*pki.CA, ca *pki.CA) bool {
	for _, c := range list {
		if pki.SameCA(c, ca) {
			return true
		}
	}
	return false
}

// bundlePEM joins the trust anchors of cas, each once, in order.
func bundlePEM(cas []*pki.CA) []byte {
	var out []byte
	var seen [][]byte
	for _, ca := range cas {
		dup := false
		for _, s := range seen {
			if bytes.Equal(s, ca.TrustBundlePEM) {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		seen = append(seen, ca.TrustBundlePEM)
		out = append(out, ca.TrustBundlePEM...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
	}
	return out
}
