package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/cluster"
	"github.com/meshsds/meshsds/cluster/clustertest"
	"github.com/meshsds/meshsds/sds/cache"
)

func TestMemoryBackend(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) (a, b cluster.Backend) {
		m := clustertest.NewMemory()
		return m.Client(), m.Client()
	})
}

func TestMemoryElector(t *testing.T) {
	clustertest.RunElector(t, func(t *testing.T) (a, b cluster.Elector) {
		m := clustertest.NewMemory()
		return m.Elector(), m.Elector()
	}, 2*time.Second)
}

// replica is a coordinator whose cache is played by the test: it records
// what the coordinator tells it and reports what the test says.
type replica struct {
	t     *testing.T
	coord *cluster.Coordinator
	mu    sync.Mutex
	phase map[string]cache.Phase
}

func (r *replica) Advance(mesh, ca string, to cache.Phase, timedOut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase[mesh] = to
}

func (r *replica) at(mesh string) cache.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.phase[mesh]
}

// report says where the replica is; a phase the coordinator moved it to
// is reported as the test's cache would, not done yet.
func (r *replica) report(mesh, ca string, p cache.Phase, done bool, since time.Time) {
	r.mu.Lock()
	r.phase[mesh] = p
	r.mu.Unlock()
	r.coord.Progress(mesh, cache.Progress{CA: ca, Phase: p, Done: done, Since: since})
}

func startReplica(t *testing.T, b cluster.Backend, id string, cfg cluster.Config) (*replica, context.CancelFunc) {
	cfg.ID, cfg.Backend = id, b
	if cfg.Lease == 0 {
		cfg.Lease = time.Minute
	}
	c, err := cluster.New(cfg)
	require.NoError(t, err)
	r := &replica{t: t, coord: c, phase: map[string]cache.Phase{}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx, r); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-c.Synced()
	return r, func() { cancel(); <-done }
}

const timeout = 10 * time.Second

func TestAPhaseEndsWhenEveryReplicaIsDone(t *testing.T) {
	m := clustertest.NewMemory()
	a, _ := startReplica(t, m.Client(), "a", cluster.Config{})
	b, _ := startReplica(t, m.Client(), "b", cluster.Config{})
	now := time.Now()
	a.report("default", "old", cache.PhaseSteady, true, time.Time{})
	b.report("default", "old", cache.PhaseSteady, true, time.Time{})
	seen(t, a, "b", "old")

	// A sees the new CA first and is done at once; B has not seen it.
	a.report("default", "new", cache.PhaseTrustNew, true, now)
	require.Eventually(t, func() bool { return slicesEqual(a.coord.Waiting("default"), "b") }, timeout, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, cache.PhaseTrustNew, a.at("default"), "A waits for B")

	// B sees it, its data planes ACK: both move to reissue.
	b.report("default", "new", cache.PhaseTrustNew, false, now)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, cache.PhaseTrustNew, a.at("default"), "B's data planes have not ACKed yet")
	b.report("default", "new", cache.PhaseTrustNew, true, now)
	require.Eventually(t, func() bool { return a.at("default") == cache.PhaseReissue && b.at("default") == cache.PhaseReissue }, timeout, time.Millisecond)

	a.report("default", "new", cache.PhaseReissue, true, now)
	b.report("default", "new", cache.PhaseReissue, true, now)
	require.Eventually(t, func() bool { return a.at("default") == cache.PhaseSteady && b.at("default") == cache.PhaseSteady }, timeout, time.Millisecond)
}

func TestAReplicaThatDiesIsWaitedForUntilItsLeaseExpires(t *testing.T) {
	m := clustertest.NewMemory()
	a, _ := startReplica(t, m.Client(), "a", cluster.Config{Lease: 300 * time.Millisecond})
	b, stopB := startReplica(t, noLeave{m.Client()}, "b", cluster.Config{Lease: 300 * time.Millisecond})
	now := time.Now()
	b.report("default", "new", cache.PhaseTrustNew, false, now)
	seen(t, a, "b", "new")
	a.report("default", "new", cache.PhaseTrustNew, true, now)
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, cache.PhaseTrustNew, a.at("default"))

	// B dies without leaving: its record stays until its lease expires.
	start := time.Now()
	stopB()
	require.Eventually(t, func() bool { return a.at("default") == cache.PhaseReissue }, timeout, time.Millisecond)
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond, "B was waited for while its lease ran")
}

// noLeave is a backend whose replica dies rather than leaves: its record
// stays behind.
type noLeave struct{ cluster.Backend }

func (noLeave) Leave(context.Context, string) error { return nil }

func TestAPhaseTimesOut(t *testing.T) {
	m := clustertest.NewMemory()
	cfg := cluster.Config{RotationTimeout: 200 * time.Millisecond}
	a, _ := startReplica(t, m.Client(), "a", cfg)
	b, _ := startReplica(t, m.Client(), "b", cfg)
	now := time.Now()
	b.report("default", "new", cache.PhaseTrustNew, false, now) // never done
	seen(t, a, "b", "new")
	a.report("default", "new", cache.PhaseTrustNew, true, now)
	require.Eventually(t, func() bool { return a.at("default") == cache.PhaseReissue && b.at("default") == cache.PhaseReissue }, timeout, time.Millisecond)
}

func TestAStaleReplicaDoesNotRestartANewerChange(t *testing.T) {
	m := clustertest.NewMemory()
	a, _ := startReplica(t, m.Client(), "a", cluster.Config{})
	b, _ := startReplica(t, m.Client(), "b", cluster.Config{})
	t0 := time.Now()
	b.report("default", "zero", cache.PhaseSteady, true, time.Time{})
	seen(t, a, "b", "zero")
	// B is in a change to CA "one" its sources showed it; A has already
	// seen the change to "two", which started later, and shared it.
	a.report("default", "two", cache.PhaseTrustNew, true, t0.Add(time.Second))
	require.Eventually(t, func() bool { sc, ok := b.coord.Shared("default"); return ok && sc.CA == "two" }, timeout, time.Millisecond)
	b.report("default", "one", cache.PhaseTrustNew, true, t0)
	time.Sleep(100 * time.Millisecond)
	sc, ok := a.coord.Shared("default")
	require.True(t, ok)
	require.Equal(t, "two", sc.CA, "the newer change stays shared")
	require.Equal(t, []string{"b"}, a.coord.Waiting("default"), "and waits for B to see it")

	b.report("default", "two", cache.PhaseTrustNew, true, t0.Add(2*time.Second))
	require.Eventually(t, func() bool { return a.at("default") == cache.PhaseReissue }, timeout, time.Millisecond)
}

func TestAReplicaWithoutTheMeshIsNotWaitedFor(t *testing.T) {
	m := clustertest.NewMemory()
	a, _ := startReplica(t, m.Client(), "a", cluster.Config{})
	startReplica(t, m.Client(), "b", cluster.Config{}) // serves nothing
	a.report("default", "new", cache.PhaseTrustNew, true, time.Now())
	require.Eventually(t, func() bool { return a.at("default") == cache.PhaseReissue }, timeout, time.Millisecond)
}

// seen waits until r's coordinator has read that replica other serves
// mesh "default" with CA ca.
func seen(t *testing.T, r *replica, other, ca string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, st := range r.coord.Replicas() {
			if st.ID == other && st.Progress["default"].CA == ca {
				return true
			}
		}
		return false
	}, timeout, time.Millisecond, "%s sees %s", r.coord.ID(), other)
}

func slicesEqual(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestAChangeNobodyFinishesIsOverAndStartsAfresh: a change whose mesh went
// back to the old CA everywhere is over; changing to that CA again later
// starts a new change (its phases are not skipped or timed out at once).
func TestAChangeNobodyFinishesIsOverAndStartsAfresh(t *testing.T) {
	m := clustertest.NewMemory()
	a, _ := startReplica(t, m.Client(), "a", cluster.Config{})
	a.report("default", "new", cache.PhaseTrustNew, false, time.Now())
	require.Eventually(t, func() bool { sc, ok := a.coord.Shared("default"); return ok && sc.CA == "new" }, timeout, time.Millisecond)

	a.report("default", "old", cache.PhaseSteady, true, time.Time{}) // back to the old CA
	require.Eventually(t, func() bool { sc, _ := a.coord.Shared("default"); return sc.Phase == cache.PhaseSteady }, timeout, time.Millisecond,
		"nobody is in the change: it is over")

	a.report("default", "new", cache.PhaseTrustNew, false, time.Now())
	require.Eventually(t, func() bool { sc, _ := a.coord.Shared("default"); return sc.Phase == cache.PhaseTrustNew }, timeout, time.Millisecond,
		"the same CA again is a new change")
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, cache.PhaseTrustNew, a.at("default"), "in its first phase, waiting for the data planes")
}

// TestTheSameCAAfterACompletedChangeIsANewChange: a change completed, the
// mesh moved on, and came back to that CA: its phases run again.
func TestTheSameCAAfterACompletedChangeIsANewChange(t *testing.T) {
	m := clustertest.NewMemory()
	a, _ := startReplica(t, m.Client(), "a", cluster.Config{})
	a.report("default", "new", cache.PhaseTrustNew, true, time.Now())
	require.Eventually(t, func() bool { return a.at("default") == cache.PhaseReissue }, timeout, time.Millisecond)
	a.report("default", "new", cache.PhaseReissue, true, time.Now())
	require.Eventually(t, func() bool { return a.at("default") == cache.PhaseSteady }, timeout, time.Millisecond)
	a.report("default", "new", cache.PhaseSteady, true, time.Time{})

	time.Sleep(10 * time.Millisecond)
	a.report("default", "new", cache.PhaseTrustNew, false, time.Now())
	require.Eventually(t, func() bool { sc, _ := a.coord.Shared("default"); return sc.Phase == cache.PhaseTrustNew }, timeout, time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, cache.PhaseTrustNew, a.at("default"), "not moved to the end of the old change")
}
