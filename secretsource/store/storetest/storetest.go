// Package storetest is the conformance suite of store.Store: every
// implementation's tests call Run with a function that opens a fresh, empty
// store, and so are held to the same contract.
//
// Besides what the store.Store docs say, the suite holds implementations to
// these details, which the admin API and GetOrCreate rely on:
//
//   - keys are checked with store.Key.Validate (and List's arguments with
//     store.ValidateListArgs) before anything else; an invalid key is an
//     error of its own, not ErrNotFound;
//   - Put and Create ignore the Version and times of the record given; a
//     record starts at version 1 (again after a Delete) and every write adds
//     one, even with unchanged data; a negative expected version is an error;
//   - Data is never nil in returned records, and neither the records given
//     nor the ones returned alias the store's memory or each other;
//   - Revision grows on every successful write and does not change on reads
//     or refused writes (conflicts, missing records, invalid keys);
//   - a canceled context makes every method return an error wrapping
//     context.Canceled, and nothing is written.
//
// Times are compared with time.Time.Equal and only for order, never against
// a clock, so an implementation may keep them at microsecond precision and
// in any location. Sort order is byte order (PostgreSQL: COLLATE "C").
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/secretsource/store"
)

// concurrency is how many goroutines the concurrent tests start.
const concurrency = 16

// Run runs the conformance suite as subtests of t. open must return a new,
// empty store each time it is called, and close it when t ends (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutCreateThenUpdate", testPutCreateThenUpdate},
		{"PutExpectVersion", testPutExpectVersion},
		{"PutExpectVersionOfMissing", testPutExpectVersionOfMissing},
		{"CreateIfAbsent", testCreateIfAbsent},
		{"ConcurrentCreate", testConcurrentCreate},
		{"ConcurrentCompareAndSwap", testConcurrentCompareAndSwap},
		{"Delete", testDelete},
		{"List", testList},
		{"Namespaces", testNamespaces},
		{"BinaryData", testBinaryData},
		{"CallerOwnsData", testCallerOwnsData},
		{"Revision", testRevision},
		{"ChangesAfterEveryWrite", testChanges},
		{"InvalidKeys", testInvalidKeys},
		{"CanceledContext", testCanceledContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

func secretKey(mesh, name string) store.Key {
	return store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name}
}

// requireSame requires got to be want, times compared with Equal.
func requireSame(t *testing.T, want, got store.Record) {
	t.Helper()
	require.Equal(t, want.Key, got.Key)
	require.True(t, bytes.Equal(want.Data, got.Data), "data of %s differs: want %d bytes, got %d", want.Key, len(want.Data), len(got.Data))
	require.Equal(t, want.Version, got.Version, "version of %s", want.Key)
	require.True(t, want.CreatedAt.Equal(got.CreatedAt), "CreatedAt of %s: want %s, got %s", want.Key, want.CreatedAt, got.CreatedAt)
	require.True(t, want.ModifiedAt.Equal(got.ModifiedAt), "ModifiedAt of %s: want %s, got %s", want.Key, want.ModifiedAt, got.ModifiedAt)
}

func mustGet(t *testing.T, s store.Store, key store.Key) store.Record {
	t.Helper()
	rec, err := s.Get(t.Context(), key)
	require.NoError(t, err)
	return rec
}

func mustRevision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	require.NoError(t, err)
	return rev
}

func testGetMissing(t *testing.T, s store.Store) {
	for _, key := range []store.Key{
		secretKey("default", "missing"),
		{Kind: store.KindMesh, Name: "missing"},
		{Kind: store.KindGlobalSecret, Name: "missing"},
	} {
		_, err := s.Get(t.Context(), key)
		require.ErrorIs(t, err, store.ErrNotFound, "%s", key)
	}
}

func testPutCreateThenUpdate(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := secretKey("default", "ca-cert")

	first, created, err := s.Put(ctx, store.Record{Key: key, Data: []byte("one"), Version: 42}, 0)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, key, first.Key)
	require.Equal(t, []byte("one"), first.Data)
	require.Equal(t, int64(1), first.Version, "the store sets the version, ignoring the one given")
	require.False(t, first.CreatedAt.IsZero())
	require.True(t, first.ModifiedAt.Equal(first.CreatedAt), "a new record is modified when created")
	requireSame(t, first, mustGet(t, s, key))

	second, created, err := s.Put(ctx, store.Record{Key: key, Data: []byte("two")}, 0)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, []byte("two"), second.Data)
	require.Equal(t, int64(2), second.Version)
	require.True(t, second.CreatedAt.Equal(first.CreatedAt), "CreatedAt is kept on update")
	require.False(t, second.ModifiedAt.Before(first.ModifiedAt), "ModifiedAt does not go back")
	requireSame(t, second, mustGet(t, s, key))

	third, created, err := s.Put(ctx, store.Record{Key: key, Data: []byte("two")}, 0)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, int64(3), third.Version, "every write bumps the version, even with the same data")
	requireSame(t, third, mustGet(t, s, key))
}

func testPutExpectVersion(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := secretKey("default", "token")
	v1, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("v1")}, 0)
	require.NoError(t, err)

	v2, created, err := s.Put(ctx, store.Record{Key: key, Data: []byte("v2")}, v1.Version)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, int64(2), v2.Version)

	for _, stale := range []int64{v1.Version, v2.Version + 1, 1000} {
		rev := mustRevision(t, s)
		_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("lost")}, stale)
		require.ErrorIs(t, err, store.ErrConflict, "expect version %d", stale)
		requireSame(t, v2, mustGet(t, s, key))
		require.Equal(t, rev, mustRevision(t, s), "a refused Put is not a write")
	}

	_, _, err = s.Put(ctx, store.Record{Key: key, Data: []byte("v2")}, -1)
	require.Error(t, err, "a negative expected version is refused")
	requireSame(t, v2, mustGet(t, s, key))
}

func testPutExpectVersionOfMissing(t *testing.T, s store.Store) {
	key := secretKey("default", "absent")
	_, _, err := s.Put(t.Context(), store.Record{Key: key, Data: []byte("x")}, 1)
	require.ErrorIs(t, err, store.ErrConflict, "an expected version needs an existing record")
	_, err = s.Get(t.Context(), key)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testCreateIfAbsent(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := store.Key{Kind: store.KindGlobalSecret, Name: "signing-key"}

	first, err := s.Create(ctx, store.Record{Key: key, Data: []byte("first"), Version: 9})
	require.NoError(t, err)
	require.Equal(t, int64(1), first.Version)
	require.Equal(t, []byte("first"), first.Data)
	require.False(t, first.CreatedAt.IsZero())
	requireSame(t, first, mustGet(t, s, key))

	rev := mustRevision(t, s)
	_, err = s.Create(ctx, store.Record{Key: key, Data: []byte("second")})
	require.ErrorIs(t, err, store.ErrConflict)
	requireSame(t, first, mustGet(t, s, key))
	require.Equal(t, rev, mustRevision(t, s), "a refused Create is not a write")

	// Create after Delete creates again, from version 1.
	require.NoError(t, s.Delete(ctx, key))
	again, err := s.Create(ctx, store.Record{Key: key, Data: []byte("again")})
	require.NoError(t, err)
	require.Equal(t, int64(1), again.Version)
	requireSame(t, again, mustGet(t, s, key))
}

// start runs fn(i) in n goroutines released at once and waits for them.
func start(n int, fn func(i int)) {
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-gate
			fn(i)
		}()
	}
	ready.Wait()
	close(gate)
	done.Wait()
}

func testConcurrentCreate(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := store.Key{Kind: store.KindGlobalSecret, Name: "ca"}
	errs := make([]error, concurrency)
	recs := make([]store.Record, concurrency)
	start(concurrency, func(i int) {
		recs[i], errs[i] = s.Create(ctx, store.Record{Key: key, Data: []byte("candidate-" + strconv.Itoa(i))})
	})

	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "two Creates won: %d and %d", winner, i)
			winner = i
			continue
		}
		require.ErrorIs(t, err, store.ErrConflict, "goroutine %d", i)
	}
	require.NotEqual(t, -1, winner, "no Create won")
	stored := mustGet(t, s, key)
	requireSame(t, recs[winner], stored)
	require.Equal(t, "candidate-"+strconv.Itoa(winner), string(stored.Data))
}

// testConcurrentCompareAndSwap increments a counter from many goroutines with
// read-modify-write loops guarded by expectVersion: no increment may be lost.
func testConcurrentCompareAndSwap(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := secretKey("default", "counter")
	_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("0")}, 0)
	require.NoError(t, err)

	const increments = 5
	// Each attempt that fails lost to another goroutine's success, so the
	// total number of attempts is bounded; this bound only stops a broken
	// store from looping forever.
	const maxAttempts = concurrency * increments * concurrency
	errs := make([]error, concurrency)
	start(concurrency, func(i int) {
		attempts := 0
		for range increments {
			for {
				attempts++
				if attempts > maxAttempts {
					errs[i] = errors.New("too many attempts")
					return
				}
				cur, err := s.Get(ctx, key)
				if err != nil {
					errs[i] = err
					return
				}
				n, err := strconv.Atoi(string(cur.Data))
				if err != nil {
					errs[i] = err
					return
				}
				_, _, err = s.Put(ctx, store.Record{Key: key, Data: []byte(strconv.Itoa(n + 1))}, cur.Version)
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				if err != nil {
					errs[i] = err
					return
				}
				break
			}
		}
	})
	for i, err := range errs {
		require.NoError(t, err, "goroutine %d", i)
	}
	final := mustGet(t, s, key)
	require.Equal(t, strconv.Itoa(concurrency*increments), string(final.Data))
	require.Equal(t, int64(1+concurrency*increments), final.Version)
}

func testDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := secretKey("default", "gone")
	keep := secretKey("default", "kept")
	for _, k := range []store.Key{key, keep} {
		_, _, err := s.Put(ctx, store.Record{Key: k, Data: []byte(k.Name)}, 0)
		require.NoError(t, err)
	}

	require.NoError(t, s.Delete(ctx, key))
	_, err := s.Get(ctx, key)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Equal(t, []byte("kept"), mustGet(t, s, keep).Data)

	rev := mustRevision(t, s)
	require.ErrorIs(t, s.Delete(ctx, key), store.ErrNotFound)
	require.ErrorIs(t, s.Delete(ctx, secretKey("other", "gone")), store.ErrNotFound)
	require.Equal(t, rev, mustRevision(t, s), "a refused Delete is not a write")

	// Put after Delete creates again, from version 1.
	rec, created, err := s.Put(ctx, store.Record{Key: key, Data: []byte("back")}, 0)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, int64(1), rec.Version)
}

func keysOf(recs []store.Record) []store.Key {
	keys := make([]store.Key, len(recs))
	for i, r := range recs {
		keys[i] = r.Key
	}
	return keys
}

func testList(t *testing.T, s store.Store) {
	ctx := t.Context()

	empty, err := s.List(ctx, store.KindSecret, "")
	require.NoError(t, err)
	require.Empty(t, empty)

	// Inserted out of order. "a-b" < "a.c" < "ab" in byte order, but not
	// in a locale collation that ignores punctuation.
	secrets := []store.Key{
		secretKey("prod", "ab"),
		secretKey("default", "z"),
		secretKey("prod", "a.c"),
		secretKey("default", "a"),
		secretKey("prod", "a-b"),
		secretKey("default-2", "m"),
	}
	meshes := []store.Key{
		{Kind: store.KindMesh, Name: "prod"},
		{Kind: store.KindMesh, Name: "default"},
	}
	globals := []store.Key{{Kind: store.KindGlobalSecret, Name: "signing-key"}}
	want := map[store.Key]store.Record{}
	for _, k := range slices.Concat(secrets, meshes, globals) {
		rec, _, err := s.Put(ctx, store.Record{Key: k, Data: []byte(k.String())}, 0)
		require.NoError(t, err)
		want[k] = rec
	}

	tests := []struct {
		kind store.Kind
		mesh string
		want []store.Key
	}{
		{store.KindSecret, "", []store.Key{
			secretKey("default", "a"), secretKey("default", "z"), secretKey("default-2", "m"),
			secretKey("prod", "a-b"), secretKey("prod", "a.c"), secretKey("prod", "ab"),
		}},
		{store.KindSecret, "prod", []store.Key{secretKey("prod", "a-b"), secretKey("prod", "a.c"), secretKey("prod", "ab")}},
		{store.KindSecret, "default", []store.Key{secretKey("default", "a"), secretKey("default", "z")}},
		{store.KindSecret, "nowhere", []store.Key{}},
		{store.KindMesh, "", []store.Key{{Kind: store.KindMesh, Name: "default"}, {Kind: store.KindMesh, Name: "prod"}}},
		{store.KindGlobalSecret, "", globals},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.kind, tt.mesh), func(t *testing.T) {
			got, err := s.List(ctx, tt.kind, tt.mesh)
			require.NoError(t, err)
			require.Equal(t, tt.want, keysOf(got))
			for _, rec := range got {
				requireSame(t, want[rec.Key], rec)
			}
		})
	}

	_, err = s.List(ctx, store.KindMesh, "prod")
	require.Error(t, err, "a Mesh has no mesh to filter by")
	_, err = s.List(ctx, store.Kind("Dataplane"), "")
	require.Error(t, err, "unknown kind")
}

func testNamespaces(t *testing.T, s store.Store) {
	ctx := t.Context()
	// The same name under every kind and in two meshes: five records.
	keys := []store.Key{
		secretKey("default", "shared"),
		secretKey("prod", "shared"),
		{Kind: store.KindMesh, Name: "shared"},
		{Kind: store.KindGlobalSecret, Name: "shared"},
	}
	for _, k := range keys {
		_, created, err := s.Put(ctx, store.Record{Key: k, Data: []byte(k.String())}, 0)
		require.NoError(t, err)
		require.True(t, created, "%s is a record of its own", k)
	}
	for _, k := range keys {
		require.Equal(t, k.String(), string(mustGet(t, s, k).Data))
	}
	_, err := s.Create(ctx, store.Record{Key: secretKey("staging", "shared"), Data: []byte("staging")})
	require.NoError(t, err, "Create sees only its own key")

	require.NoError(t, s.Delete(ctx, secretKey("default", "shared")))
	for _, k := range keys[1:] {
		require.Equal(t, k.String(), string(mustGet(t, s, k).Data), "deleting another namespace's record left %s", k)
	}
	globals, err := s.List(ctx, store.KindGlobalSecret, "")
	require.NoError(t, err)
	require.Equal(t, []store.Key{{Kind: store.KindGlobalSecret, Name: "shared"}}, keysOf(globals))
}

func testBinaryData(t *testing.T, s store.Store) {
	allBytes := make([]byte, 0, 512)
	for i := range 256 {
		allBytes = append(allBytes, byte(i))
	}
	for i := 255; i >= 0; i-- {
		allBytes = append(allBytes, byte(i))
	}
	mib := make([]byte, 1<<20)
	_, _ = rand.Read(mib)

	tests := []struct {
		name string
		data []byte
	}{
		{"empty", []byte{}},
		{"nil", nil},
		{"all-bytes", allBytes},
		{"nul-only", []byte{0, 0, 0}},
		{"invalid-utf8", []byte{0xff, 0xfe, 0xc3, 0x28}},
		{"one-mib", mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			key := secretKey("default", tt.name)
			stored, _, err := s.Put(ctx, store.Record{Key: key, Data: tt.data}, 0)
			require.NoError(t, err)
			require.True(t, bytes.Equal(tt.data, stored.Data))
			require.NotNil(t, stored.Data, "Data is never nil")
			got := mustGet(t, s, key)
			require.True(t, bytes.Equal(tt.data, got.Data), "got %d bytes, want %d", len(got.Data), len(tt.data))
			require.NotNil(t, got.Data, "Data is never nil")

			createKey := store.Key{Kind: store.KindGlobalSecret, Name: tt.name}
			_, err = s.Create(ctx, store.Record{Key: createKey, Data: tt.data})
			require.NoError(t, err)
			require.True(t, bytes.Equal(tt.data, mustGet(t, s, createKey).Data))

			list, err := s.List(ctx, store.KindSecret, "default")
			require.NoError(t, err)
			i := slices.IndexFunc(list, func(r store.Record) bool { return r.Key == key })
			require.NotEqual(t, -1, i)
			require.True(t, bytes.Equal(tt.data, list[i].Data))
		})
	}
}

func testCallerOwnsData(t *testing.T, s store.Store) {
	ctx := t.Context()
	key := secretKey("default", "owned")
	in := []byte("original")
	stored, _, err := s.Put(ctx, store.Record{Key: key, Data: in}, 0)
	require.NoError(t, err)
	in[0] = 'X'
	stored.Data[1] = 'X'
	got := mustGet(t, s, key)
	require.Equal(t, "original", string(got.Data), "the store keeps no alias of the caller's slices")
	got.Data[2] = 'X'
	require.Equal(t, "original", string(mustGet(t, s, key).Data))

	in = []byte("created")
	created, err := s.Create(ctx, store.Record{Key: store.Key{Kind: store.KindMesh, Name: "owned"}, Data: in})
	require.NoError(t, err)
	in[0] = 'X'
	created.Data[1] = 'X'
	require.Equal(t, "created", string(mustGet(t, s, created.Key).Data))
}

func testRevision(t *testing.T, s store.Store) {
	ctx := t.Context()
	rev := mustRevision(t, s)
	key := secretKey("default", "rev")

	// write must raise the revision; read must leave it.
	write := func(what string, fn func() error) {
		t.Helper()
		require.NoError(t, fn(), what)
		next := mustRevision(t, s)
		require.Greater(t, next, rev, "%s raises the revision", what)
		rev = next
	}
	read := func(what string, fn func() error) {
		t.Helper()
		_ = fn()
		require.Equal(t, rev, mustRevision(t, s), "%s leaves the revision", what)
	}

	write("Put (create)", func() error {
		_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("a")}, 0)
		return err
	})
	write("Put (update)", func() error {
		_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("b")}, 0)
		return err
	})
	write("Put (expected version)", func() error {
		_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("c")}, 2)
		return err
	})
	write("Create", func() error {
		_, err := s.Create(ctx, store.Record{Key: store.Key{Kind: store.KindMesh, Name: "rev"}, Data: []byte("{}")})
		return err
	})
	write("Delete", func() error { return s.Delete(ctx, store.Key{Kind: store.KindMesh, Name: "rev"}) })

	read("Get", func() error { _, err := s.Get(ctx, key); return err })
	read("Get (missing)", func() error { _, err := s.Get(ctx, secretKey("default", "none")); return err })
	read("List", func() error { _, err := s.List(ctx, store.KindSecret, ""); return err })
	read("Revision", func() error { _, err := s.Revision(ctx); return err })
	read("Create (conflict)", func() error { _, err := s.Create(ctx, store.Record{Key: key}); return err })
	read("Put (conflict)", func() error { _, _, err := s.Put(ctx, store.Record{Key: key}, 1); return err })
	read("Delete (missing)", func() error { return s.Delete(ctx, secretKey("default", "none")) })

	for i := range 20 {
		write("Put #"+strconv.Itoa(i), func() error {
			_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte{byte(i)}}, 0)
			return err
		})
	}
}

func testInvalidKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, key := range []store.Key{
		{Kind: store.KindSecret, Mesh: "default"},
		{Kind: store.KindSecret, Name: "no-mesh"},
		{Kind: store.KindMesh, Mesh: "default", Name: "m"},
		{Kind: store.KindGlobalSecret, Mesh: "default", Name: "g"},
		{Kind: "Dataplane", Mesh: "default", Name: "dp"},
		{Name: "no-kind"},
	} {
		t.Run(key.String(), func(t *testing.T) {
			_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("x")}, 0)
			require.Error(t, err)
			_, err = s.Create(ctx, store.Record{Key: key, Data: []byte("x")})
			require.Error(t, err)
			_, err = s.Get(ctx, key)
			require.Error(t, err)
			require.NotErrorIs(t, err, store.ErrNotFound, "an invalid key is an error of its own")
			require.Error(t, s.Delete(ctx, key))
		})
	}
	require.Equal(t, int64(0), mustRevision(t, s), "nothing was written")
}

func testCanceledContext(t *testing.T, s store.Store) {
	key := secretKey("default", "canceled")
	existing := secretKey("default", "existing")
	_, _, err := s.Put(t.Context(), store.Record{Key: existing, Data: []byte("x")}, 0)
	require.NoError(t, err)
	rev := mustRevision(t, s)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	_, err = s.Get(ctx, existing)
	require.ErrorIs(t, err, context.Canceled, "Get")
	_, err = s.List(ctx, store.KindSecret, "")
	require.ErrorIs(t, err, context.Canceled, "List")
	_, _, err = s.Put(ctx, store.Record{Key: key, Data: []byte("x")}, 0)
	require.ErrorIs(t, err, context.Canceled, "Put")
	_, err = s.Create(ctx, store.Record{Key: key, Data: []byte("x")})
	require.ErrorIs(t, err, context.Canceled, "Create")
	require.ErrorIs(t, s.Delete(ctx, existing), context.Canceled, "Delete")
	_, err = s.Revision(ctx)
	require.ErrorIs(t, err, context.Canceled, "Revision")

	// Nothing was written.
	_, err = s.Get(t.Context(), key)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Equal(t, []byte("x"), mustGet(t, s, existing).Data)
	require.Equal(t, rev, mustRevision(t, s))
}

// Alternate returns a Store that sends each call to a and b in turn, as two
// replicas (or a process and its restarted self) sharing one database would:
// running Run over it checks that a write through one is seen at once
// through the other and that the revision is shared. Close closes neither.
func Alternate(a, b store.Store) store.Store {
	return &alternating{s: [2]store.Store{a, b}}
}

type alternating struct {
	s    [2]store.Store
	next atomic.Uint64
}

func (t *alternating) pick() store.Store { return t.s[t.next.Add(1)%2] }

func (t *alternating) Get(ctx context.Context, key store.Key) (store.Record, error) {
	return t.pick().Get(ctx, key)
}

func (t *alternating) List(ctx context.Context, kind store.Kind, mesh string) ([]store.Record, error) {
	return t.pick().List(ctx, kind, mesh)
}

func (t *alternating) Put(ctx context.Context, rec store.Record, expectVersion int64) (store.Record, bool, error) {
	return t.pick().Put(ctx, rec, expectVersion)
}

func (t *alternating) Create(ctx context.Context, rec store.Record) (store.Record, error) {
	return t.pick().Create(ctx, rec)
}

func (t *alternating) Delete(ctx context.Context, key store.Key) error {
	return t.pick().Delete(ctx, key)
}

func (t *alternating) Revision(ctx context.Context) (int64, error) {
	return t.pick().Revision(ctx)
}

func (t *alternating) Changes() <-chan struct{} { return t.s[0].Changes() }

func (t *alternating) Close() error { return nil }

// RunClock checks that a store takes its times from the clock it is given,
// keeps them to precision (time.Nanosecond, or time.Microsecond for
// PostgreSQL) and returns them in UTC. open must return a new, empty store
// reading its time from now.
func RunClock(t *testing.T, open func(t *testing.T, now func() time.Time) store.Store, precision time.Duration) {
	ctx := t.Context()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	var (
		mu  sync.Mutex
		now = t0
	)
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	s := open(t, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	kept := func(t time.Time) time.Time { return t.Truncate(precision).UTC() }

	key := store.Key{Kind: store.KindSecret, Mesh: "default", Name: "ca"}
	rec, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("a")}, 0)
	require.NoError(t, err)
	require.Equal(t, kept(t0), rec.CreatedAt, "kept to %s, in UTC", precision)
	require.Equal(t, kept(t0), rec.ModifiedAt)

	t1 := t0.Add(time.Hour)
	set(t1.In(time.FixedZone("CET", 3600)))
	rec, _, err = s.Put(ctx, store.Record{Key: key, Data: []byte("b")}, 0)
	require.NoError(t, err)
	require.Equal(t, kept(t0), rec.CreatedAt)
	require.Equal(t, kept(t1), rec.ModifiedAt, "times are returned in UTC")

	got, err := s.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, rec, got, "Get returns what Put returned")

	t2 := t1.Add(time.Minute)
	set(t2)
	created, err := s.Create(ctx, store.Record{Key: store.Key{Kind: store.KindMesh, Name: "default"}, Data: []byte("{}")})
	require.NoError(t, err)
	require.Equal(t, kept(t2), created.CreatedAt)
	require.Equal(t, kept(t2), created.ModifiedAt)
	list, err := s.List(ctx, store.KindMesh, "")
	require.NoError(t, err)
	require.Equal(t, []store.Record{created}, list)
}

// testChanges: every committed write signals Changes; a failed one or a
// read does not.
func testChanges(t *testing.T, s store.Store) {
	if _, ok := s.(*alternating); ok {
		t.Skip("Changes reports the writes of one instance; two instances see each other's through Revision (TestRevision)")
	}
	ctx := t.Context()
	drain := func() {
		select {
		case <-s.Changes():
		default:
		}
	}
	signalled := func() bool {
		select {
		case <-s.Changes():
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}
	drain()
	key := secretKey("default", "changes")
	_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("a")}, 0)
	require.NoError(t, err)
	require.True(t, signalled(), "Put")
	_, err = s.Create(ctx, store.Record{Key: secretKey("default", "changes-2"), Data: []byte("b")})
	require.NoError(t, err)
	require.True(t, signalled(), "Create")
	_, err = s.Create(ctx, store.Record{Key: key, Data: []byte("c")})
	require.ErrorIs(t, err, store.ErrConflict)
	_, err = s.Get(ctx, key)
	require.NoError(t, err)
	require.False(t, signalled(), "a refused Create and a Get write nothing")
	require.NoError(t, s.Delete(ctx, key))
	require.True(t, signalled(), "Delete")
	require.ErrorIs(t, s.Delete(ctx, key), store.ErrNotFound)
	require.False(t, signalled(), "a Delete of nothing writes nothing")
}
