package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/cluster"
	"github.com/meshsds/meshsds/cluster/clustertest"
	"github.com/meshsds/meshsds/secretsource/store"
)

// TestChangesFromAnotherReplica: a write through one store wakes the
// other's Changes at once (LISTEN/NOTIFY), not at its next poll.
func TestChangesFromAnotherReplica(t *testing.T) {
	dbURL := newDatabase(t)
	a, b := open(t, dbURL), open(t, dbURL)
	var latencies []time.Duration
	for i := range 20 {
		drainChanges(b)
		start := time.Now()
		_, _, err := a.Put(t.Context(), store.Record{Key: store.Key{Kind: store.KindSecret, Mesh: "default", Name: "s"}, Data: []byte{byte(i)}}, 0)
		require.NoError(t, err)
		select {
		case <-b.Changes():
			latencies = append(latencies, time.Since(start))
		case <-time.After(5 * time.Second):
			t.Fatal("another replica's write did not wake Changes")
		}
	}
	slices.Sort(latencies)
	t.Logf("write to wake of the other replica: p50 %s, max %s", latencies[len(latencies)/2], latencies[len(latencies)-1])

	// A store in another schema of the database is not woken.
	exec(t, dbURL, "CREATE SCHEMA other")
	c := open(t, dbURL+"&search_path=other")
	drainChanges(c)
	_, _, err := a.Put(t.Context(), store.Record{Key: store.Key{Kind: store.KindSecret, Mesh: "default", Name: "s"}, Data: []byte("x")}, 0)
	require.NoError(t, err)
	select {
	case <-c.Changes():
		t.Fatal("a write in another schema woke this store")
	case <-time.After(200 * time.Millisecond):
	}
}

// TestChangesAfterTheListenerReconnects: the listening connection is
// killed by the server; the store listens again and reports the writes
// made meanwhile.
func TestChangesAfterTheListenerReconnects(t *testing.T) {
	dbURL := newDatabase(t)
	a, b := open(t, dbURL), open(t, dbURL)
	exec(t, dbURL, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`)
	time.Sleep(50 * time.Millisecond)
	drainChanges(b)
	_, _, err := a.Put(t.Context(), store.Record{Key: store.Key{Kind: store.KindMesh, Name: "m"}, Data: []byte("{}")}, 0)
	require.NoError(t, err)
	select {
	case <-b.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("no wake after the listener was killed")
	}
}

func drainChanges(s store.Store) {
	for {
		select {
		case <-s.Changes():
		case <-time.After(20 * time.Millisecond):
			return
		}
	}
}

func TestClusterBackend(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) (a, b cluster.Backend) {
		dbURL := newDatabase(t)
		return open(t, dbURL), open(t, dbURL)
	})
}

func TestElector(t *testing.T) {
	clustertest.RunElector(t, func(t *testing.T) (a, b cluster.Elector) {
		dbURL := newDatabase(t)
		return open(t, dbURL).Elector(100 * time.Millisecond), open(t, dbURL).Elector(100 * time.Millisecond)
	}, 5*time.Second)
}

// TestLeaderWhoseConnectionDiesIsReplaced: the server ends the leader's
// session (as when its process dies): the other replica leads within a
// few retries, and the old leader stops leading.
func TestLeaderWhoseConnectionDiesIsReplaced(t *testing.T) {
	dbURL := newDatabase(t)
	retry := 100 * time.Millisecond
	leading := make(chan string, 10)
	stopped := make(chan string, 10)
	for _, id := range []string{"a", "b"} {
		e := open(t, dbURL).Elector(retry)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = e.Lead(ctx, id, func(lctx context.Context) {
				leading <- id
				<-lctx.Done()
				stopped <- id
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	first := <-leading
	exec(t, dbURL, `SELECT pg_terminate_backend(l.pid) FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.classid = 1835364211 AND l.granted`)
	start := time.Now()
	select {
	case id := <-stopped:
		require.Equal(t, first, id, "the old leader notices")
	case <-time.After(10 * time.Second):
		t.Fatal("the old leader did not notice it lost its lock")
	}
	select {
	case id := <-leading:
		t.Logf("%s leads %s after %s's session ended", id, time.Since(start).Round(time.Millisecond), first)
	case <-time.After(10 * time.Second):
		t.Fatal("nobody took over")
	}
}
