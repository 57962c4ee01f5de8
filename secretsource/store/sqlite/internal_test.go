package sqlite

import (
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConnectionSettings checks the settings the durability and
// concurrency promises rest on, on the connections the store really uses.
func TestConnectionSettings(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "meshsds.db")})
	require.NoError(t, err)
	defer s.Close()

	pragma := func(db *sql.DB, name string) string {
		t.Helper()
		var v string
		require.NoError(t, db.QueryRowContext(t.Context(), "PRAGMA "+name).Scan(&v), name)
		return v
	}
	for name, db := range map[string]*sql.DB{"write": s.write, "read": s.read} {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, "wal", pragma(db, "journal_mode"))
			require.Equal(t, "2", pragma(db, "synchronous"), "FULL")
			require.Equal(t, "1", pragma(db, "foreign_keys"))
			require.Equal(t, "10000", pragma(db, "busy_timeout"))
			require.Equal(t, "1", pragma(db, "user_version"))
			require.Equal(t, strconv.Itoa(applicationID), pragma(db, "application_id"), "\"msds\"")
		})
	}
	require.Equal(t, "0", pragma(s.write, "query_only"))
	require.Equal(t, "1", pragma(s.read, "query_only"))
	_, err = s.read.ExecContext(t.Context(), sqlBumpRevision)
	require.Error(t, err, "read connections cannot write")
	require.Equal(t, 1, s.write.Stats().MaxOpenConnections, "one writer")
}
