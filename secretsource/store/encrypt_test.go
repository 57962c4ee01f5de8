package store_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/sqlite"
	"github.com/meshsds/meshsds/secretsource/store/storetest"
)

// keyFile writes a key file of the given ids (new keys) and returns its
// path.
func keyFile(t *testing.T, dir string, ids ...string) string {
	t.Helper()
	var b bytes.Buffer
	for _, id := range ids {
		line, err := store.GenerateKeyLine(id)
		require.NoError(t, err)
		b.WriteString(line + "\n")
	}
	path := filepath.Join(dir, fmt.Sprintf("keys-%d", len(ids)))
	require.NoError(t, os.WriteFile(path, b.Bytes(), 0o600))
	return path
}

func ring(t *testing.T, path string) *store.KeyRing {
	t.Helper()
	r, err := store.LoadKeyRing(path)
	require.NoError(t, err)
	return r
}

func TestEncryptedConformance(t *testing.T) {
	keys := ring(t, keyFile(t, t.TempDir(), "k1"))
	storetest.Run(t, func(t *testing.T) store.Store {
		inner, err := sqlite.Open(sqlite.Config{Path: filepath.Join(t.TempDir(), "meshsds.db")})
		require.NoError(t, err)
		t.Cleanup(func() { inner.Close() })
		return store.NewEncrypted(inner, keys)
	})
}

// TestCiphertextOnDisk: what reaches the database file is ciphertext; what
// the store returns is the secret.
func TestCiphertextOnDisk(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "meshsds.db")
	inner := openSQLite(t, path)
	st := store.NewEncrypted(inner, ring(t, keyFile(t, dir, "k1")))
	secret := []byte("-----BEGIN PRIVATE KEY----- TOP-SECRET-MATERIAL")
	key := store.Key{Kind: store.KindSecret, Mesh: "default", Name: "ca-key"}
	_, _, err := st.Put(context.Background(), store.Record{Key: key, Data: secret}, 0)
	require.NoError(t, err)
	rec, err := st.Get(context.Background(), key)
	require.NoError(t, err)
	require.Equal(t, secret, rec.Data)
	raw, err := inner.Get(context.Background(), key)
	require.NoError(t, err)
	require.NotContains(t, string(raw.Data), "TOP-SECRET")
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		require.False(t, bytes.Contains(data, []byte("TOP-SECRET")), "%s holds the secret in plain text", f)
	}
}

// TestWrongOrMissingKeyIsRefused: a store written with one key is not
// readable with another, nor without any, and says which key it needs.
func TestWrongOrMissingKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	inner := openSQLite(t, filepath.Join(dir, "meshsds.db"))
	key := store.Key{Kind: store.KindGlobalSecret, Name: "dataplane-token-signing-key"}
	_, _, err := store.NewEncrypted(inner, ring(t, keyFile(t, dir, "k1"))).Put(context.Background(), store.Record{Key: key, Data: []byte("x")}, 0)
	require.NoError(t, err)

	other := filepath.Join(t.TempDir(), "other")
	line, err := store.GenerateKeyLine("k1") // the same id, another key
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(other, []byte(line+"\n"), 0o600))
	wrong := store.NewEncrypted(inner, ring(t, other))
	_, err = wrong.Get(context.Background(), key)
	require.ErrorIs(t, err, store.ErrEncrypted)
	require.ErrorContains(t, err, `key "k1" does not decrypt it`)
	_, err = wrong.CheckReadable(context.Background())
	require.Error(t, err)

	none := store.NewEncrypted(inner, nil)
	_, err = none.CheckReadable(context.Background())
	require.ErrorContains(t, err, "no --encryption-key-file is given")
	_, err = store.NewEncrypted(inner, ring(t, keyFile(t, t.TempDir(), "k2"))).Get(context.Background(), key)
	require.ErrorContains(t, err, `key "k1", which --encryption-key-file does not hold`)
}

// TestRotationWithAConcurrentWriter: records written in plain text and
// with the old key are re-encrypted with the new one while a writer keeps
// writing; afterwards the old key can go.
func TestRotationWithAConcurrentWriter(t *testing.T) {
	dir := t.TempDir()
	inner := openSQLite(t, filepath.Join(dir, "meshsds.db"))
	ctx := context.Background()
	secretKey := func(i int) store.Key {
		return store.Key{Kind: store.KindSecret, Mesh: "default", Name: fmt.Sprintf("s-%d", i)}
	}
	plain := store.NewEncrypted(inner, nil)
	for i := range 20 {
		_, _, err := plain.Put(ctx, store.Record{Key: secretKey(i), Data: []byte("plain")}, 0)
		require.NoError(t, err)
	}
	oldFile := keyFile(t, dir, "old")
	old := store.NewEncrypted(inner, ring(t, oldFile))
	for i := 20; i < 200; i++ {
		_, _, err := old.Put(ctx, store.Record{Key: secretKey(i), Data: []byte("old")}, 0)
		require.NoError(t, err)
	}

	// The new key first, the old one still there: what the server and the
	// rotation both load.
	oldLine, err := os.ReadFile(oldFile)
	require.NoError(t, err)
	newLine, err := store.GenerateKeyLine("new")
	require.NoError(t, err)
	bothFile := filepath.Join(dir, "both")
	require.NoError(t, os.WriteFile(bothFile, append([]byte(newLine+"\n"), oldLine...), 0o600))
	server := store.NewEncrypted(inner, ring(t, bothFile))
	rotation := store.NewEncrypted(inner, ring(t, bothFile))

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	writes := 0
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			_, _, err := server.Put(ctx, store.Record{Key: secretKey(i % 200), Data: []byte(fmt.Sprintf("write-%d", i))}, 0)
			require.NoError(t, err)
			writes++
		}
	}()
	got, err := rotation.RotateKeys(ctx)
	stop.Store(true)
	wg.Wait()
	require.NoError(t, err)
	require.Positive(t, writes)
	t.Logf("re-encrypted %d, kept %d, %d concurrent writes", got.Reencrypted, got.Kept, writes)

	onlyNewFile := filepath.Join(dir, "only-new")
	require.NoError(t, os.WriteFile(onlyNewFile, []byte(newLine+"\n"), 0o600))
	after := store.NewEncrypted(inner, ring(t, onlyNewFile))
	n, err := after.CheckReadable(ctx)
	require.NoError(t, err, "every record reads with the new key alone")
	require.Equal(t, 200, n, "and every one is encrypted")
}

func TestParseKeyFile(t *testing.T) {
	good, err := store.GenerateKeyLine("k1")
	require.NoError(t, err)
	for _, tc := range []struct {
		name, file, wantErr string
	}{
		{"one key", good + "\n", ""},
		{"comments and blank lines", "# keys\n\n" + good + " # the current one\n", ""},
		{"empty", "\n# nothing\n", "no key"},
		{"no id", "QUFB\n", "want ID:BASE64KEY"},
		{"short key", "k1:QUFB\n", "must be 32 bytes"},
		{"not base64", "k1:!!!\n", "must be 32 bytes"},
		{"twice the same id", good + "\n" + good + "\n", "appears twice"},
		{"a space in the id", "k 1:QUFB\n", "without ':'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := store.ParseKeyFile([]byte(tc.file))
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func FuzzParseKeyFile(f *testing.F) {
	good, _ := store.GenerateKeyLine("k1")
	f.Add([]byte(good + "\n"))
	f.Add([]byte("# x\nk:QUFB\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, keys, err := store.ParseKeyFile(data)
		if err != nil {
			return
		}
		require.NotEmpty(t, ids)
		require.Len(t, keys, len(ids))
		for _, k := range keys {
			require.Len(t, k, 32)
		}
	})
}
