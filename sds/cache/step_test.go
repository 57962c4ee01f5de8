package cache

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

func TestNextStep(t *testing.T) {
	now := time.Now()
	ca := func(fp string, expired bool) *pki.CA {
		c := resolvedCAForStep(fp, now, expired)
		return c
	}
	a, b, c := ca("a", false), ca("b", false), ca("c", false)
	dead := ca("dead", true)
	reissuedA := &pki.CA{Fingerprint: "a-reissued", Chain: []*x509.Certificate{{NotAfter: now.Add(2 * time.Hour), RawSubject: []byte("a")}}}
	steadyA := rotationStep{issuing: a, trusted: []*pki.CA{a}}

	tests := []struct {
		name       string
		prev       rotationStep
		prevTarget *pki.CA
		target     *pki.CA
		want       rotationStep
	}{
		{"first CA", rotationStep{}, nil, a, steadyA},
		{"mTLS off", steadyA, a, nil, rotationStep{}},
		{"unchanged", steadyA, a, a, steadyA},
		{
			"new CA: trust both, keep signing with the old", steadyA, a, b,
			rotationStep{issuing: a, trusted: []*pki.CA{a, b}, phase: PhaseTrustNew},
		},
		{
			"change in progress carries on",
			rotationStep{issuing: a, trusted: []*pki.CA{a, b}, phase: PhaseReissue},
			b, b,
			rotationStep{issuing: a, trusted: []*pki.CA{a, b}, phase: PhaseReissue},
		},
		{
			"another CA mid-change: trust all three again",
			rotationStep{issuing: b, trusted: []*pki.CA{a, b}, phase: PhaseReissue},
			b, c,
			rotationStep{issuing: b, trusted: []*pki.CA{a, b, c}, phase: PhaseTrustNew},
		},
		{
			"joined a change without a signing CA: carries on holding",
			rotationStep{trusted: []*pki.CA{a, b}, phase: PhaseTrustNew},
			b, b,
			rotationStep{trusted: []*pki.CA{a, b}, phase: PhaseTrustNew},
		},
		{"back to the signing CA: the aborted one leaves", rotationStep{issuing: a, trusted: []*pki.CA{a, b}, phase: PhaseTrustNew}, b, a, steadyA},
		{
			"same names and keys, re-issued: switch at once", steadyA, a, reissuedA,
			rotationStep{issuing: reissuedA, trusted: []*pki.CA{reissuedA}},
		},
		{
			"the signing CA expired: switch at once",
			rotationStep{issuing: dead, trusted: []*pki.CA{dead}},
			dead, b,
			rotationStep{issuing: b, trusted: []*pki.CA{b}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, nextStep(tc.prev, tc.prevTarget, tc.target, now))
		})
	}
}

func TestBundlePEMJoinsEachAnchorOnce(t *testing.T) {
	a := &pki.CA{Fingerprint: "a", TrustBundlePEM: []byte("A\n")}
	sameRoot := &pki.CA{Fingerprint: "a2", TrustBundlePEM: []byte("A\n")} // another intermediate, same root
	b := &pki.CA{Fingerprint: "b", TrustBundlePEM: []byte("B")}
	require.Equal(t, "A\nB\n", string(bundlePEM([]*pki.CA{a, sameRoot, b})))
}

// resolvedCAForStep is a CA with just what nextStep reads.
func resolvedCAForStep(fp string, now time.Time, expired bool) *pki.CA {
	end := now.Add(time.Hour)
	if expired {
		end = now.Add(-time.Hour)
	}
	return &pki.CA{Fingerprint: fp, Chain: []*x509.Certificate{{NotAfter: end, RawSubject: []byte(fp)}}, TrustBundlePEM: []byte(fp)}
}

func TestRenewalTime(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(100 * time.Hour)
	require.Equal(t, nb.Add(80*time.Hour), RenewalTime(nb, na, 0))
	require.Equal(t, nb.Add(85*time.Hour), RenewalTime(nb, na, 1))
	require.Equal(t, nb.Add(75*time.Hour), RenewalTime(nb, na, -1))
}
