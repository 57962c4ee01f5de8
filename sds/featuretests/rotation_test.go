package featuretests

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
)

// follow connects a live data plane of mesh "default".
func (h *harness) follow(name, svc string, ack bool) *sdstest.Live {
	h.t.Helper()
	return sdstest.Follow(h.t, h.dial("default", name, svc), "default."+name, sds.NameIdentityCert, sds.NameMeshCA, ack)
}

func signedBy(ca *pki.KeyPair) func(*sdstest.Workload) bool {
	return func(w *sdstest.Workload) bool { return w.Leaf.CheckSignatureFrom(ca.Cert) == nil }
}

func bundleIs(cas ...*pki.KeyPair) func(*sdstest.Workload) bool {
	var want []byte
	for _, ca := range cas {
		want = append(want, ca.CertPEM...)
	}
	return func(w *sdstest.Workload) bool { return string(w.BundlePEM) == string(want) }
}

func TestCAChangeWithoutAFailedHandshake(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport, func(c *cache.Config, _ *sds.ServerConfig) { c.RotationTimeout = time.Minute })
		oldCA, newCA := pkitest.NewRootCA(t, "old"), pkitest.NewRootCA(t, "new")
		h.serve(oldCA)
		web := h.follow("web-1", "web", true)
		backend := h.follow("backend-1", "backend", true)
		web.WaitFor("a certificate", signedBy(oldCA))
		backend.WaitFor("a certificate", signedBy(oldCA))

		stop := make(chan struct{})
		type result struct {
			n        int
			failures []error
		}
		done := make(chan result, 1)
		go func() {
			n, f := sdstest.HandshakeLoop(web, backend, sdstest.SPIFFE("default", "web"), sdstest.SPIFFE("default", "backend"), stop)
			done <- result{n, f}
		}()

		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", newCA)}, time.Now())
		// Phase 1: both CAs trusted, certificates still from the old one.
		web.WaitFor("a bundle with both CAs", bundleIs(oldCA, newCA))
		// Phase 2, then 3: new certificates, then the old CA leaves.
		web.WaitFor("a certificate of the new CA", signedBy(newCA))
		backend.WaitFor("a certificate of the new CA", signedBy(newCA))
		web.WaitFor("a bundle of the new CA only", bundleIs(newCA))
		backend.WaitFor("a bundle of the new CA only", bundleIs(newCA))
		require.Eventually(t, func() bool { return h.cache.MeshStatus("default").Phase == cache.PhaseSteady.String() },
			10*time.Second, 5*time.Millisecond)
		// A few more rounds with the final state.
		time.Sleep(100 * time.Millisecond)
		close(stop)
		r := <-done
		require.Empty(t, r.failures, "no handshake may fail during a CA change")
		require.Greater(t, r.n, 3, "the loop must really have run through the change")
		require.InDelta(t, 0, h.metric("meshsds_ca_rotation_timeouts_total", "mesh", "default"), 0)
	})
}

func TestCAChangeGoesOnAfterTheTimeoutWhenADataPlaneNeverACKs(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		manual, fireTimeout := manualPhaseTimeouts(t)
		h := newHarness(t, transport, manual)
		oldCA, newCA := pkitest.NewRootCA(t, "old"), pkitest.NewRootCA(t, "new")
		h.serve(oldCA)
		good := h.follow("web-1", "web", true)
		stuck := h.follow("stuck-1", "stuck", false)
		good.WaitFor("a certificate", signedBy(oldCA))
		stuck.WaitFor("a certificate", signedBy(oldCA))

		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", newCA)}, time.Now())
		phaseWaitsForOne := func(phase cache.Phase) func() bool {
			return func() bool {
				st := h.cache.MeshStatus("default")
				return st.Phase == phase.String() && st.Waiting == 1
			}
		}
		require.Eventually(t, phaseWaitsForOne(cache.PhaseTrustNew), 10*time.Second, 5*time.Millisecond,
			"the good data plane ACKs the new bundle, the stuck one never does")

		// The stuck data plane never ACKs: after the timeout the change goes
		// on, for both, and the timeout is reported.
		fireTimeout()
		good.WaitFor("a certificate of the new CA", signedBy(newCA))
		stuck.WaitFor("a certificate of the new CA", signedBy(newCA))
		require.Eventually(t, phaseWaitsForOne(cache.PhaseReissue), 10*time.Second, 5*time.Millisecond)
		fireTimeout()
		good.WaitFor("a bundle of the new CA only", bundleIs(newCA))
		require.InDelta(t, 2, h.metric("meshsds_ca_rotation_timeouts_total", "mesh", "default"), 0)
		require.Equal(t, cache.PhaseSteady.String(), h.cache.MeshStatus("default").Phase)
	})
}

func TestCAExpiringBeforeItsCertificatesIsReported(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		rm := resolved(t, "default", pkitest.NewRootCA(t, "ca")) // valid for a year
		rm.DPCertValidity = 2 * 365 * 24 * time.Hour
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": rm}, time.Now())
		status := h.cache.MeshStatus("default")
		require.Contains(t, status.Warning, "expires")
		require.InDelta(t, 1, h.metric("meshsds_ca_expires_within_workload_validity", "mesh", "default"), 0)
		require.InDelta(t, float64(rm.CA.Chain[0].NotAfter.Unix()), h.metric("meshsds_ca_expiry_timestamp_seconds", "mesh", "default"), 0)
	})
}

func TestCAChangeSignsTheNewCertificatesDuringTheTrustPhase(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		manual, fireTimeout := manualPhaseTimeouts(t)
		h := newHarness(t, transport, manual)
		oldCA, newCA := pkitest.NewRootCA(t, "old"), pkitest.NewRootCA(t, "new")
		h.serve(oldCA)
		good := h.follow("web-1", "web", true)
		stuck := h.follow("stuck-1", "stuck", false) // holds the trust phase until its timeout fires
		good.WaitFor("a certificate", signedBy(oldCA))
		stuck.WaitFor("a certificate", signedBy(oldCA))
		require.InDelta(t, 2, h.metric("meshsds_certificates_issued_total"), 0)

		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", newCA)}, time.Now())
		require.Eventually(t, func() bool { return h.metric("meshsds_certificates_issued_total") == 4 }, 5*time.Second, 5*time.Millisecond,
			"both certificates of the new CA are signed while the trust phase waits")
		require.Equal(t, cache.PhaseTrustNew.String(), h.cache.MeshStatus("default").Phase)
		cur, err := good.Current()
		require.NoError(t, err)
		require.False(t, signedBy(newCA)(cur), "nothing of the new CA is served before everyone trusts it")

		// Once the new CA signs, those very certificates are served: none is
		// signed twice.
		fireTimeout()
		for _, dp := range []*sdstest.Live{good, stuck} {
			dp.WaitFor("a certificate of the new CA", signedBy(newCA))
		}
		require.InDelta(t, 4, h.metric("meshsds_certificates_issued_total"), 0)
	})
}

// manualPhaseTimeouts makes the CA change's phase timeouts fire when the
// test calls fire, not by the clock, so that what a test reads between
// them cannot race them. Other timers run as usual.
func manualPhaseTimeouts(t *testing.T) (opt harnessOpt, fire func()) {
	const timeout = time.Hour
	var (
		mu      sync.Mutex
		pending []func()
	)
	opt = func(c *cache.Config, _ *sds.ServerConfig) {
		c.RotationTimeout = timeout
		c.AfterFunc = func(d time.Duration, f func()) func() bool {
			if d != timeout {
				return time.AfterFunc(d, f).Stop
			}
			mu.Lock()
			defer mu.Unlock()
			pending = append(pending, f)
			return func() bool { return true }
		}
	}
	fire = func() {
		mu.Lock()
		require.NotEmpty(t, pending, "no phase timeout is scheduled")
		f := pending[len(pending)-1]
		pending = nil
		mu.Unlock()
		f() // a timer of an earlier phase would do nothing: the latest is the one
	}
	return opt, fire
}
