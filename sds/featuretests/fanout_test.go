package featuretests

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
)

// reissue makes a new certificate for ca's subject and key, as an operator
// does to extend a root's validity without changing its key.
func reissue(t *testing.T, ca *pki.KeyPair) *pki.KeyPair {
	t.Helper()
	return pkitest.New(t, pkitest.Spec{CN: ca.Cert.Subject.CommonName, Key: ca.Key, NotAfter: ca.Cert.NotAfter.Add(24 * time.Hour)})
}

func chained(t *testing.T, inter, root *pki.KeyPair) *meshconfig.ResolvedMesh {
	t.Helper()
	ca, err := pki.ParseCA(append(append([]byte{}, inter.CertPEM...), root.CertPEM...), inter.KeyPEM, time.Now())
	require.NoError(t, err)
	return &meshconfig.ResolvedMesh{Name: "default", CA: ca, DPCertValidity: time.Hour}
}

func TestRootReissueIsABundleOnlyChange(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		root := pkitest.NewRootCA(t, "root")
		inter := pkitest.NewIntermediateCA(t, "intermediate", root)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": chained(t, inter, root)}, time.Now())
		h.cache.SetReady()
		web := h.connect("default", "web-1", "web")
		serial := web.held.Leaf.SerialNumber

		// The same root key, a new root certificate: the workload
		// certificates (leaf and intermediate) stay valid and are not
		// re-issued; only the trust bundle changes.
		root2 := reissue(t, root)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": chained(t, inter, root2)}, time.Now())
		web.refresh(t, false, true)
		require.Equal(t, string(root2.CertPEM), string(web.bundleSecret.GetValidationContext().GetTrustedCa().GetInlineBytes()))
		web.identity.ExpectNothing(quiet)
		require.Equal(t, serial, web.held.Leaf.SerialNumber)
		require.InDelta(t, 1, h.metric("meshsds_certificates_issued_total"), 0)

		// A new intermediate under the same root is the opposite: new
		// certificates, the same bundle.
		inter2 := pkitest.NewIntermediateCA(t, "intermediate 2", root)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": chained(t, inter2, root2)}, time.Now())
		web.refresh(t, true, false)
		web.bundle.ExpectNothing(quiet)
		require.NotEqual(t, serial, web.held.Leaf.SerialNumber)
		require.NoError(t, web.held.Leaf.CheckSignatureFrom(inter2.Cert))
	})
}

// TestCAChangeIssuesOncePerDataplane checks the eager issuing on a CA change:
// every data plane gets exactly one new certificate, shared by its streams,
// however the wake-ups and requests interleave.
func TestCAChangeIssuesOncePerDataplane(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport, func(c *cache.Config, _ *sds.ServerConfig) { c.IssueWorkers = 1 })
		h.serve(pkitest.NewRootCA(t, "ca1"))
		const n = 20
		var wls []*workload
		for i := range n {
			wls = append(wls, h.connect("default", "dp-"+string(rune('a'+i)), "web"))
			// A second identity_cert stream of the same data plane shares the
			// certificate.
		}
		require.InDelta(t, n, h.metric("meshsds_certificates_issued_total"), 0)

		ca2 := pkitest.NewRootCA(t, "ca2")
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", ca2)}, time.Now())
		rotate(t, wls...)
		for _, w := range wls {
			require.NoError(t, w.held.Leaf.CheckSignatureFrom(ca2.Cert))
		}
		require.InDelta(t, 2*n, h.metric("meshsds_certificates_issued_total"), 0)
		for _, w := range wls {
			w.identity.ExpectNothing(10 * time.Millisecond)
		}
	})
}

// TestTwoCAChangesInARowServeNothingOfTheMiddleOne checks that a CA
// replaced while its change was still in its first phase never signs what
// is served: data planes go straight from the first CA's certificate to
// the last one's, after trusting all three.
func TestTwoCAChangesInARowServeNothingOfTheMiddleOne(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport, func(c *cache.Config, _ *sds.ServerConfig) { c.IssueWorkers = 1 })
		ca1 := pkitest.NewRootCA(t, "ca1")
		h.serve(ca1)
		const n = 10
		var wls []*workload
		for i := range n {
			wls = append(wls, h.connect("default", "dp-"+string(rune('a'+i)), "web"))
		}
		ca2, ca3 := pkitest.NewRootCA(t, "ca2"), pkitest.NewRootCA(t, "ca3")
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", ca2)}, time.Now())
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", ca3)}, time.Now())
		for _, w := range wls {
			// One or two bundle pushes (with ca2, then with ca3 too), ACKed.
			for w.refresh(t, false, true); !strings.Contains(string(w.held.BundlePEM), string(ca3.CertPEM)); w.refresh(t, false, true) {
			}
			require.Contains(t, string(w.held.BundlePEM), string(ca1.CertPEM))
		}
		for _, w := range wls {
			w.refresh(t, true, false)
			require.NoError(t, w.held.Leaf.CheckSignatureFrom(ca3.Cert))
		}
		for _, w := range wls {
			w.refresh(t, false, true)
			require.Equal(t, string(ca3.CertPEM), string(w.held.BundlePEM))
		}
		// ca1's and ca3's certificates; ca2's, signed ahead of time while it was
		// the CA to come, only as far as the worker got before ca3 replaced it,
		// and never served: every data plane went from ca1's to ca3's above.
		issued := h.metric("meshsds_certificates_issued_total")
		require.GreaterOrEqual(t, issued, float64(2*n))
		require.LessOrEqual(t, issued, float64(3*n))
	})
}
