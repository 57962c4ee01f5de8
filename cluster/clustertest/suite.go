package clustertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/cluster"
)

// wakeTimeout bounds how long a Wake may take: the 1 s propagation bound
// of replicas, with room for a loaded machine.
const wakeTimeout = 5 * time.Second

// Run checks a Backend: open returns two clients of one fresh shared
// state, as two replicas would hold.
func Run(t *testing.T, open func(t *testing.T) (a, b cluster.Backend)) {
	t.Run("PublishAndLoad", func(t *testing.T) { testPublish(t, open) })
	t.Run("LeaseExpires", func(t *testing.T) { testLease(t, open) })
	t.Run("Leave", func(t *testing.T) { testLeave(t, open) })
	t.Run("SetChangeCompareAndSwap", func(t *testing.T) { testSetChange(t, open) })
}

func drain(b cluster.Backend) {
	for {
		select {
		case <-b.Wake():
		default:
			return
		}
	}
}

func woken(t *testing.T, b cluster.Backend, what string) {
	t.Helper()
	select {
	case <-b.Wake():
	case <-time.After(wakeTimeout):
		t.Fatalf("not woken within %s by %s", wakeTimeout, what)
	}
}

func find(st cluster.State, id string) (cluster.ReplicaRecord, bool) {
	for _, r := range st.Replicas {
		if r.ID == id {
			return r, true
		}
	}
	return cluster.ReplicaRecord{}, false
}

func testPublish(t *testing.T, open func(t *testing.T) (a, b cluster.Backend)) {
	ctx := t.Context()
	a, b := open(t)
	drain(b)
	require.NoError(t, a.Publish(ctx, "replica-a", []byte(`{"default":{}}`), time.Minute))
	woken(t, b, "a replica joining")
	st, err := b.Load(ctx)
	require.NoError(t, err)
	r, ok := find(st, "replica-a")
	require.True(t, ok, "a published replica is live")
	require.JSONEq(t, `{"default":{}}`, string(r.Progress))
	require.Greater(t, r.Remaining, 50*time.Second)
	require.LessOrEqual(t, r.Remaining, time.Minute)

	require.NoError(t, b.Publish(ctx, "replica-b", []byte(`{}`), time.Minute))
	drain(b)
	require.NoError(t, a.Publish(ctx, "replica-a", []byte(`{"other":{}}`), time.Minute))
	woken(t, b, "a changed progress")
	st, err = a.Load(ctx)
	require.NoError(t, err)
	require.Len(t, st.Replicas, 2)
	r, _ = find(st, "replica-a")
	require.JSONEq(t, `{"other":{}}`, string(r.Progress), "the latest progress")
}

func testLease(t *testing.T, open func(t *testing.T) (a, b cluster.Backend)) {
	ctx := t.Context()
	a, b := open(t)
	require.NoError(t, a.Publish(ctx, "short", []byte(`{}`), 300*time.Millisecond))
	require.NoError(t, a.Publish(ctx, "long", []byte(`{}`), time.Minute))
	require.Eventually(t, func() bool {
		st, err := b.Load(ctx)
		require.NoError(t, err)
		_, short := find(st, "short")
		_, long := find(st, "long")
		return !short && long
	}, 10*time.Second, 50*time.Millisecond, "a replica whose lease expired is not live")
	require.NoError(t, a.Publish(ctx, "short", []byte(`{}`), time.Minute))
	st, err := b.Load(ctx)
	require.NoError(t, err)
	_, ok := find(st, "short")
	require.True(t, ok, "renewing brings it back")
}

func testLeave(t *testing.T, open func(t *testing.T) (a, b cluster.Backend)) {
	ctx := t.Context()
	a, b := open(t)
	require.NoError(t, a.Publish(ctx, "leaving", []byte(`{}`), time.Minute))
	drain(b)
	require.NoError(t, a.Leave(ctx, "leaving"))
	woken(t, b, "a replica leaving")
	st, err := b.Load(ctx)
	require.NoError(t, err)
	_, ok := find(st, "leaving")
	require.False(t, ok)
	require.NoError(t, a.Leave(ctx, "never-there"), "leaving twice is not an error")
}

func testSetChange(t *testing.T, open func(t *testing.T) (a, b cluster.Backend)) {
	ctx := t.Context()
	a, b := open(t)
	drain(b)
	ok, err := a.SetChange(ctx, "default", []byte(`{"phase":"trust-new-ca"}`), 0)
	require.NoError(t, err)
	require.True(t, ok, "version 0 creates")
	woken(t, b, "a change written")
	ok, err = b.SetChange(ctx, "default", []byte(`{"phase":"other"}`), 0)
	require.NoError(t, err)
	require.False(t, ok, "version 0 when one exists loses")

	st, err := b.Load(ctx)
	require.NoError(t, err)
	rec := st.Changes["default"]
	require.JSONEq(t, `{"phase":"trust-new-ca"}`, string(rec.Change))
	require.NotZero(t, rec.Version)

	// Two replicas moving the same version on: exactly one wins.
	var wins int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range []cluster.Backend{a, b} {
		wg.Go(func() {
			ok, err := c.SetChange(ctx, "default", []byte(`{"phase":"reissue"}`), rec.Version)
			require.NoError(t, err)
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1, wins)
	st, err = a.Load(ctx)
	require.NoError(t, err)
	require.JSONEq(t, `{"phase":"reissue"}`, string(st.Changes["default"].Change))
	require.NotEqual(t, rec.Version, st.Changes["default"].Version)

	ok, err = a.SetChange(ctx, "other", []byte(`{}`), 0)
	require.NoError(t, err)
	require.True(t, ok, "meshes are independent")
	st, err = b.Load(ctx)
	require.NoError(t, err)
	require.Len(t, st.Changes, 2)
}

// RunElector checks an Elector: open returns two electors of one shared
// state; depose makes the leader lose its leadership as if it had died
// (nil when the backend has no such means: then only the cancellation of
// the leader's campaign is tested). bound is how soon a new leader must
// take over.
func RunElector(t *testing.T, open func(t *testing.T) (a, b cluster.Elector), bound time.Duration) {
	a, b := open(t)
	var mu sync.Mutex
	leading := map[string]bool{}
	both := 0
	lead := func(id string) func(ctx context.Context) {
		return func(ctx context.Context) {
			mu.Lock()
			leading[id] = true
			n := 0
			for _, l := range leading {
				if l {
					n++
				}
			}
			both = max(both, n)
			mu.Unlock()
			<-ctx.Done()
			mu.Lock()
			leading[id] = false
			mu.Unlock()
		}
	}
	leader := func() string {
		mu.Lock()
		defer mu.Unlock()
		for id, l := range leading {
			if l {
				return id
			}
		}
		return ""
	}
	ctxA, cancelA := context.WithCancel(t.Context())
	ctxB, cancelB := context.WithCancel(t.Context())
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	go func() { doneA <- a.Lead(ctxA, "replica-a", lead("replica-a")) }()
	go func() { doneB <- b.Lead(ctxB, "replica-b", lead("replica-b")) }()
	defer func() {
		cancelA()
		cancelB()
		<-doneA
		<-doneB
	}()
	require.Eventually(t, func() bool { return leader() != "" }, bound, 10*time.Millisecond, "one of two campaigning replicas leads")
	first := leader()
	time.Sleep(bound / 4)
	require.Equal(t, first, leader(), "the leadership stays while its holder lives")

	// The leader stops: the other takes over within bound.
	start := time.Now()
	if first == "replica-a" {
		cancelA()
		require.NoError(t, <-doneA)
		doneA <- nil
	} else {
		cancelB()
		require.NoError(t, <-doneB)
		doneB <- nil
	}
	require.Eventually(t, func() bool { l := leader(); return l != "" && l != first }, bound, 10*time.Millisecond,
		"the other replica leads once the leader stops")
	t.Logf("new leader after %s", time.Since(start).Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, both, "never two leaders at once")
}
