package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/sqlite"
)

var signingKey = store.Key{Kind: store.KindGlobalSecret, Name: "dataplane-token-signing-key"}

// openAt opens a SQLite store at path and closes it when t ends.
func openAt(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(sqlite.Config{Path: path})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func openNew(t *testing.T) *sqlite.Store {
	return openAt(t, filepath.Join(t.TempDir(), "meshsds.db"))
}

// generator returns data, counting its calls.
func generator(data string, calls *atomic.Int32) func() ([]byte, error) {
	return func() ([]byte, error) {
		calls.Add(1)
		return []byte(data), nil
	}
}

func TestGetOrCreateCreatesOnce(t *testing.T) {
	ctx := t.Context()
	s := openNew(t)
	var calls atomic.Int32

	first, err := store.GetOrCreate(ctx, s, signingKey, generator("key-1", &calls))
	require.NoError(t, err)
	require.Equal(t, "key-1", string(first.Data))
	require.Equal(t, int64(1), first.Version)
	require.Equal(t, int32(1), calls.Load())

	again, err := store.GetOrCreate(ctx, s, signingKey, generator("key-2", &calls))
	require.NoError(t, err)
	require.Equal(t, first, again, "the existing record is returned")
	require.Equal(t, int32(1), calls.Load(), "generate is not called when the record exists")
}

func TestGetOrCreateReturnsExisting(t *testing.T) {
	ctx := t.Context()
	s := openNew(t)
	stored, _, err := s.Put(ctx, store.Record{Key: signingKey, Data: []byte("operator's")}, 0)
	require.NoError(t, err)
	var calls atomic.Int32
	got, err := store.GetOrCreate(ctx, s, signingKey, generator("generated", &calls))
	require.NoError(t, err)
	require.Equal(t, stored, got)
	require.Zero(t, calls.Load())
}

func TestGetOrCreateGenerateFails(t *testing.T) {
	ctx := t.Context()
	s := openNew(t)
	boom := errors.New("no entropy")
	_, err := store.GetOrCreate(ctx, s, signingKey, func() ([]byte, error) { return nil, boom })
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "generating GlobalSecret dataplane-token-signing-key")
	_, err = s.Get(ctx, signingKey)
	require.ErrorIs(t, err, store.ErrNotFound, "nothing is stored")
	rev, err := s.Revision(ctx)
	require.NoError(t, err)
	require.Zero(t, rev)
}

func TestGetOrCreateStoreErrors(t *testing.T) {
	s := openNew(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := store.GetOrCreate(ctx, s, signingKey, func() ([]byte, error) {
		t.Error("generate called although reading failed")
		return nil, nil
	})
	require.ErrorIs(t, err, context.Canceled)

	_, err = store.GetOrCreate(t.Context(), s, store.Key{Kind: store.KindGlobalSecret}, func() ([]byte, error) {
		t.Error("generate called for an invalid key")
		return nil, nil
	})
	require.ErrorContains(t, err, "name is empty")
}

// TestGetOrCreateLosesRace makes the race deterministic: while the first
// process generates, a second one (another Store on the same file) creates
// the record. The first must return the second's record, not its own.
func TestGetOrCreateLosesRace(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshsds.db")
	a, b := openAt(t, path), openAt(t, path)

	var winner store.Record
	got, err := store.GetOrCreate(ctx, a, signingKey, func() ([]byte, error) {
		var err error
		winner, err = b.Create(ctx, store.Record{Key: signingKey, Data: []byte("b's key")})
		require.NoError(t, err)
		return []byte("a's key"), nil
	})
	require.NoError(t, err)
	require.Equal(t, winner, got)
	require.Equal(t, "b's key", string(got.Data))

	stored, err := a.Get(ctx, signingKey)
	require.NoError(t, err)
	require.Equal(t, winner, stored, "the winner's record was left alone")
}

// deletingStore deletes the record that beat its Create once, as if another
// replica had created and then removed it between Create and the re-read.
type deletingStore struct {
	store.Store
	deletes int
}

func (d *deletingStore) Create(ctx context.Context, rec store.Record) (store.Record, error) {
	got, err := d.Store.Create(ctx, rec)
	if errors.Is(err, store.ErrConflict) && d.deletes > 0 {
		d.deletes--
		if derr := d.Store.Delete(ctx, rec.Key); derr != nil {
			return store.Record{}, derr
		}
	}
	return got, err
}

func TestGetOrCreateWinnerDeleted(t *testing.T) {
	tests := []struct {
		name    string
		deletes int
		wantErr string
	}{
		{"once", 1, ""},
		{"twice", 2, ""},
		{"every time", 3, "created and deleted by others 3 times in a row"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), "meshsds.db")
			a, b := openAt(t, path), openAt(t, path)
			d := &deletingStore{Store: a, deletes: tt.deletes}
			turn := 0
			got, err := store.GetOrCreate(ctx, d, signingKey, func() ([]byte, error) {
				turn++
				if d.deletes > 0 {
					// Someone else wins this turn, then their record goes.
					_, err := b.Create(ctx, store.Record{Key: signingKey, Data: []byte("other")})
					require.NoError(t, err)
				}
				return []byte("mine-" + strconv.Itoa(turn)), nil
			})
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "mine-"+strconv.Itoa(tt.deletes+1), string(got.Data))
			stored, err := b.Get(ctx, signingKey)
			require.NoError(t, err)
			require.Equal(t, got, stored)
		})
	}
}

// TestGetOrCreateConcurrentStores races many goroutines over two separate
// Stores on one file, as two replicas starting at once (or a process and
// its restarted self) would: all agree on one record, the one stored.
func TestGetOrCreateConcurrentStores(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshsds.db")
	stores := []store.Store{openAt(t, path), openAt(t, path)}

	const n = 16
	results := make([]store.Record, n)
	errs := make([]error, n)
	var calls atomic.Int32
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-gate
			results[i], errs[i] = store.GetOrCreate(ctx, stores[i%2], signingKey, generator("candidate-"+strconv.Itoa(i), &calls))
		})
	}
	close(gate)
	wg.Wait()

	stored, err := stores[0].Get(ctx, signingKey)
	require.NoError(t, err)
	require.Equal(t, int64(1), stored.Version, "created once, never overwritten")
	for i := range n {
		require.NoError(t, errs[i], "goroutine %d", i)
		require.Equal(t, stored, results[i], "goroutine %d", i)
	}
	require.GreaterOrEqual(t, calls.Load(), int32(1))
	t.Logf("%d of %d callers generated a candidate", calls.Load(), n)
}
