package sqlite_test

import (
	"bytes"
	"database/sql"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/sqlite"
	"github.com/meshsds/meshsds/secretsource/store/storetest"
)

// open opens a store at path and closes it when t ends.
func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(sqlite.Config{Path: path})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "meshsds.db"))
	})
}

// TestConformanceTwoInstances runs the suite with every call going to one of
// two Stores on the same file in turn: a write through one is seen at once
// through the other, and the revision is shared.
func TestConformanceTwoInstances(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		path := filepath.Join(t.TempDir(), "meshsds.db")
		return storetest.Alternate(open(t, path), open(t, path))
	})
}

func TestTimesComeFromTheClock(t *testing.T) {
	storetest.RunClock(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := sqlite.Open(sqlite.Config{Path: filepath.Join(t.TempDir(), "meshsds.db"), Now: now})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}, time.Nanosecond)
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "a", "b", "meshsds.db")
	s := open(t, path)
	_, _, err := s.Put(t.Context(), store.Record{Key: store.Key{Kind: store.KindGlobalSecret, Name: "k"}, Data: []byte("x")}, 0)
	require.NoError(t, err)

	for _, dir := range []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b")} {
		fi, err := os.Stat(dir)
		require.NoError(t, err)
		require.True(t, fi.IsDir())
		require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), dir)
	}
	// The WAL and its index exist while the store is open.
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(f)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
	}
}

func TestOpenKeepsExistingDirectoryMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.Mkdir(dir, 0o750))
	require.NoError(t, os.Chmod(dir, 0o750))
	open(t, filepath.Join(dir, "meshsds.db"))
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o750), fi.Mode().Perm())
}

func TestOpenWarnsAboutReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshsds.db")
	open(t, path) // a valid database, closed at cleanup
	require.NoError(t, os.Chmod(path, 0o644))

	var logs bytes.Buffer
	s, err := sqlite.Open(sqlite.Config{Path: path, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "should be mode 0600")
}

func TestOpenPathWithSpecialCharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we ird?dir#1%20")
	path := filepath.Join(dir, "meshsds db?.sqlite")
	s := open(t, path)
	_, _, err := s.Put(t.Context(), store.Record{Key: store.Key{Kind: store.KindMesh, Name: "m"}, Data: []byte("{}")}, 0)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err, "the database is at exactly the path given")
	require.Positive(t, fi.Size())
	entries, err := os.ReadDir(filepath.Dir(dir))
	require.NoError(t, err)
	require.Len(t, entries, 1, "nothing is created elsewhere")
}

func TestOpenRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	s := open(t, filepath.Join("data", "meshsds.db"))
	_, _, err := s.Put(t.Context(), store.Record{Key: store.Key{Kind: store.KindMesh, Name: "m"}, Data: []byte("{}")}, 0)
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join("data", "meshsds.db"))
	require.NoError(t, err)
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshsds.db")

	s, err := sqlite.Open(sqlite.Config{Path: path})
	require.NoError(t, err)
	for i, name := range []string{"a", "b", "c", "d"} {
		for range i + 1 {
			_, _, err := s.Put(ctx, store.Record{Key: store.Key{Kind: store.KindSecret, Mesh: "default", Name: name}, Data: []byte(name)}, 0)
			require.NoError(t, err)
		}
	}
	require.NoError(t, s.Delete(ctx, store.Key{Kind: store.KindSecret, Mesh: "default", Name: "c"}))
	_, err = s.Create(ctx, store.Record{Key: store.Key{Kind: store.KindGlobalSecret, Name: "signing-key"}, Data: []byte{0, 1, 2}})
	require.NoError(t, err)
	before, err := s.List(ctx, store.KindSecret, "")
	require.NoError(t, err)
	rev, err := s.Revision(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1+2+3+4+1+1), rev)
	require.NoError(t, s.Close())

	for range 2 { // reopening twice runs no migration twice
		s = open(t, path)
		after, err := s.List(ctx, store.KindSecret, "")
		require.NoError(t, err)
		require.Equal(t, before, after)
		require.Len(t, after, 3)
		require.Equal(t, int64(4), after[2].Version)
		g, err := s.Get(ctx, store.Key{Kind: store.KindGlobalSecret, Name: "signing-key"})
		require.NoError(t, err)
		require.Equal(t, []byte{0, 1, 2}, g.Data)
		got, err := s.Revision(ctx)
		require.NoError(t, err)
		require.Equal(t, rev, got)
		require.NoError(t, s.Close())
	}
}

// requireRefused requires Open of path to fail with an error containing
// every part of want, and the file to be left byte for byte as it was.
func requireRefused(t *testing.T, path string, want ...string) {
	t.Helper()
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	s, err := sqlite.Open(sqlite.Config{Path: path})
	if err == nil {
		_ = s.Close()
	}
	require.Error(t, err)
	t.Logf("Open: %v", err)
	require.Contains(t, err.Error(), path, "the error names the file")
	for _, w := range want {
		require.Contains(t, err.Error(), w)
	}
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(before, after), "the file was modified")
}

func TestOpenRefusesRandomBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshsds.db")
	junk := make([]byte, 64<<10)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(junk)
	require.NoError(t, os.WriteFile(path, junk, 0o600))
	requireRefused(t, path, "not a SQLite database, or corrupt")
}

func TestOpenRefusesTextFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshsds.db")
	require.NoError(t, os.WriteFile(path, []byte("type: Mesh\nname: default\n"), 0o600))
	requireRefused(t, path, "not a SQLite database, or corrupt")
}

func TestOpenRefusesDamagedDatabase(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshsds.db")
	s, err := sqlite.Open(sqlite.Config{Path: path})
	require.NoError(t, err)
	data := bytes.Repeat([]byte("secret"), 1000)
	for i := range 100 {
		_, _, err := s.Put(ctx, store.Record{Key: store.Key{Kind: store.KindSecret, Mesh: "default", Name: string(rune('a'+i%26)) + string(rune('a'+i/26))}, Data: data}, 0)
		require.NoError(t, err)
	}
	require.NoError(t, s.Close()) // checkpoints the WAL into the file

	// Overwrite the header of every page but the first (which holds the
	// file header and the schema): b-tree and overflow pages alike.
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	const pageSize = 4096
	require.Greater(t, len(raw), 10*pageSize)
	for off := pageSize; off < len(raw); off += pageSize {
		copy(raw[off:off+16], bytes.Repeat([]byte{0xff}, 16))
	}
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	requireRefused(t, path, "corrupt")
}

func TestOpenRefusesOtherDatabases(t *testing.T) {
	tests := []struct {
		name  string
		setup []string
		want  string
	}{
		{"another application's tables", []string{"CREATE TABLE users (id INTEGER PRIMARY KEY)"}, "not a meshsds database"},
		{"another application id", []string{"PRAGMA application_id = 1234"}, "not a meshsds database (SQLite application_id 0x4d2)"},
		{"a user version without our id", []string{"PRAGMA user_version = 1"}, "not a meshsds database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "other.db")
			execRaw(t, path, tt.setup...)
			requireRefused(t, path, tt.want)
		})
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshsds.db")
	s, err := sqlite.Open(sqlite.Config{Path: path})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	execRaw(t, path, "PRAGMA user_version = 99")
	requireRefused(t, path, "schema version 99 is newer than this meshsds supports (1)")
}

func TestOpenErrors(t *testing.T) {
	_, err := sqlite.Open(sqlite.Config{})
	require.ErrorContains(t, err, "path is required")

	dir := t.TempDir()
	_, err = sqlite.Open(sqlite.Config{Path: dir})
	require.ErrorContains(t, err, "not a regular file")

	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = sqlite.Open(sqlite.Config{Path: filepath.Join(file, "meshsds.db")})
	require.ErrorContains(t, err, "creating directory")
}

// execRaw runs statements on the SQLite file at path, bypassing the store,
// in rollback-journal mode so that nothing is left in a WAL.
func execRaw(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer db.Close()
	for _, stmt := range stmts {
		_, err := db.ExecContext(t.Context(), stmt)
		require.NoError(t, err, stmt)
	}
}

// TestEmptyFileIsRefused: a meshsds.db truncated to nothing (a clumsy
// restore, a full disk) must not start as an empty store with a new signing
// key: every secret and token would be gone without a word.
func TestEmptyFileIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshsds.db")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	_, err := sqlite.Open(sqlite.Config{Path: path})
	require.ErrorContains(t, err, "the file is empty (0 bytes)")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Zero(t, fi.Size(), "the file is left as it was")

	// A new store is never an empty file, not even before its first write.
	fresh := filepath.Join(t.TempDir(), "meshsds.db")
	st, err := sqlite.Open(sqlite.Config{Path: fresh})
	require.NoError(t, err)
	require.NoError(t, st.Close())
	fi, err = os.Stat(fresh)
	require.NoError(t, err)
	require.NotZero(t, fi.Size())
	st, err = sqlite.Open(sqlite.Config{Path: fresh})
	require.NoError(t, err, "and it opens again")
	require.NoError(t, st.Close())
}
