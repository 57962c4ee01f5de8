package store_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/sqlite"
)

func openSQLite(t *testing.T, path string) store.Store {
	t.Helper()
	st, err := sqlite.Open(sqlite.Config{Path: path})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func TestSourcePublishesWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshsds.db")
	st := openSQLite(t, path)
	// A long poll: a write of this process must be published through
	// Store.Changes, not because the poll happened to run.
	src, err := store.NewSource(store.SourceConfig{Store: st, Resync: time.Hour})
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		views []meshconfig.Resources
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(r meshconfig.Resources) {
			mu.Lock()
			views = append(views, r)
			mu.Unlock()
		})
	}()
	defer func() { cancel(); require.NoError(t, <-done) }()
	secretIs := func(want string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			if len(views) == 0 {
				return false
			}
			s := views[len(views)-1].Secrets[meshconfig.SecretKey{Mesh: "default", Name: "s"}]
			return s != nil && string(s.Data) == want
		}
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(views) == 1 }, 10*time.Second, 5*time.Millisecond,
		"an empty store is published once at start")

	key := store.Key{Kind: store.KindSecret, Mesh: "default", Name: "s"}
	_, _, err = st.Put(ctx, store.Record{Key: key, Data: []byte("v1")}, 0)
	require.NoError(t, err)
	require.Eventually(t, secretIs("v1"), 10*time.Second, 5*time.Millisecond)
}

func TestSourceSeesOtherProcessesThroughTheRevision(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshsds.db")
	st := openSQLite(t, path)
	other := openSQLite(t, path) // another process sharing the file
	src, err := store.NewSource(store.SourceConfig{Store: st, Resync: 20 * time.Millisecond})
	require.NoError(t, err)
	got := make(chan meshconfig.Resources, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(r meshconfig.Resources) { got <- r }) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	<-got
	_, _, err = other.Put(ctx, store.Record{Key: store.Key{Kind: store.KindMesh, Name: "m"}, Data: []byte(`{"name":"m"}`)}, 0)
	require.NoError(t, err)
	select {
	case v := <-got:
		require.Contains(t, v.Meshes, "m")
	case <-time.After(10 * time.Second):
		t.Fatal("a write of another process was never published")
	}
}

func TestBuiltinCAAgreedAcrossTwoServersSharingAStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	stores := []store.Store{openSQLite(t, path), openSQLite(t, path)}
	var wg sync.WaitGroup
	for _, st := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &store.Provisioner{Store: st}
			require.NoError(t, p.ProvisionBuiltinCA(context.Background(), "default", meshconfig.Backend{Name: "ca-1", Type: meshconfig.BackendBuiltin}))
		}()
	}
	wg.Wait()
	certName, keyName := meshconfig.BuiltinSecretNames("default", "ca-1")
	var certs [][]byte
	for _, st := range stores {
		c, err := st.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: certName})
		require.NoError(t, err)
		k, err := st.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: keyName})
		require.NoError(t, err)
		_, err = pki.ParseCA(c.Data, k.Data, time.Now())
		require.NoError(t, err, "certificate and key must match")
		certs = append(certs, c.Data)
	}
	require.Equal(t, certs[0], certs[1], "one CA for one backend")
}
