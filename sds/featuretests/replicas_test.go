package featuretests

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/cluster"
	"github.com/meshsds/meshsds/cluster/clustertest"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
)

// newReplica is a harness whose CA changes are coordinated with the other
// replicas on shared, as id.
func newReplica(t *testing.T, transport string, shared *clustertest.Memory, id string) *harness {
	t.Helper()
	coord, err := cluster.New(cluster.Config{ID: id, Backend: shared.Client(), Lease: time.Minute, RotationTimeout: time.Minute})
	require.NoError(t, err)
	h := newHarness(t, transport, func(c *cache.Config, _ *sds.ServerConfig) { c.Coordinator = coord })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = coord.Run(ctx, h.cache); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-coord.Synced()
	return h
}

// followOn connects a live data plane of mesh "default" to h.
func followOn(t *testing.T, h *harness, name, svc string, ack bool) *sdstest.Live {
	t.Helper()
	conn := sdstest.Dial(t, h.addr, h.token("default", name, svc))
	return sdstest.Follow(t, conn, "default."+name, sds.NameIdentityCert, sds.NameMeshCA, ack)
}

// TestCAChangeAcrossReplicasWithoutAFailedHandshake: a data plane on each
// of two replicas; one replica sees the new CA well before the other. No
// data plane may present a certificate of the new CA before every data
// plane on both replicas trusts it, and not one handshake between them
// may fail.
func TestCAChangeAcrossReplicasWithoutAFailedHandshake(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		shared := clustertest.NewMemory()
		one := newReplica(t, transport, shared, "one")
		two := newReplica(t, transport, shared, "two")
		oldCA, newCA := pkitest.NewRootCA(t, "old"), pkitest.NewRootCA(t, "new")
		one.serve(oldCA)
		two.serve(oldCA)
		web := followOn(t, one, "web-1", "web", true)
		backend := followOn(t, two, "backend-1", "backend", true)
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

		// Replica one sees the new CA; two does not yet.
		one.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", newCA)}, time.Now())
		web.WaitFor("a bundle with both CAs", bundleIs(oldCA, newCA))
		require.Eventually(t, func() bool {
			st := one.cache.MeshStatus("default")
			return len(st.WaitingReplicas) == 1 && st.WaitingReplicas[0] == "two"
		}, 10*time.Second, 5*time.Millisecond, "replica one waits for two")
		time.Sleep(300 * time.Millisecond)
		cur, err := web.Current()
		require.NoError(t, err)
		require.True(t, signedBy(oldCA)(cur), "no certificate of the new CA while another replica's data planes do not trust it")

		two.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", newCA)}, time.Now())
		for _, dp := range []*sdstest.Live{web, backend} {
			dp.WaitFor("a certificate of the new CA", signedBy(newCA))
			dp.WaitFor("a bundle of the new CA only", bundleIs(newCA))
		}
		for _, h := range []*harness{one, two} {
			require.Eventually(t, func() bool { return h.cache.MeshStatus("default").Phase == cache.PhaseSteady.String() },
				10*time.Second, 5*time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		close(stop)
		r := <-done
		require.Empty(t, r.failures, "no handshake may fail between replicas during a CA change")
		require.Greater(t, r.n, 3)
	})
}

// TestReplicaJoinsACAChangeInProgress: a replica that starts while the
// others are in the trust phase of a change serves the bundle of both CAs
// and no certificate of the new CA until the reissue phase.
func TestReplicaJoinsACAChangeInProgress(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		shared := clustertest.NewMemory()
		one := newReplica(t, transport, shared, "one")
		oldCA, newCA := pkitest.NewRootCA(t, "old"), pkitest.NewRootCA(t, "new")
		one.serve(oldCA)
		web := followOn(t, one, "web-1", "web", true)
		// A data plane that never ACKs holds the trust phase.
		stuckConn := sdstest.Dial(t, one.addr, one.token("default", "stuck-1", "stuck"))
		stuck := sdstest.Follow(t, stuckConn, "default.stuck-1", sds.NameIdentityCert, sds.NameMeshCA, false)
		web.WaitFor("a certificate", signedBy(oldCA))
		stuck.WaitFor("a certificate", signedBy(oldCA))
		one.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", newCA)}, time.Now())
		web.WaitFor("a bundle with both CAs", bundleIs(oldCA, newCA))

		// Replica two starts: its sources know only the new CA.
		two := newReplica(t, transport, shared, "two")
		two.serve(newCA)
		require.Equal(t, cache.PhaseTrustNew.String(), two.cache.MeshStatus("default").Phase, "it joins the change")
		backend := followOn(t, two, "backend-1", "backend", true)
		time.Sleep(300 * time.Millisecond)
		cur, err := backend.Current()
		require.NoError(t, err)
		require.Nil(t, cur, "no certificate before the reissue phase")

		// The stuck data plane goes away: the change goes on everywhere.
		require.NoError(t, stuckConn.Close())
		for _, dp := range []*sdstest.Live{web, backend} {
			dp.WaitFor("a certificate of the new CA", signedBy(newCA))
			dp.WaitFor("a bundle of the new CA only", bundleIs(newCA))
		}
		w, err := web.Current()
		require.NoError(t, err)
		b, err := backend.Current()
		require.NoError(t, err)
		require.NoError(t, sdstest.Handshake(w, b, sdstest.SPIFFE("default", "web"), sdstest.SPIFFE("default", "backend")))
	})
}
