package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/pgtest"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// TestServer checks the harness itself: the server answers over TCP and
// over its Unix socket, databases are separate, the default collation is
// not byte order (so that tests can catch a missing COLLATE "C"), and Stop
// removes everything.
func TestServer(t *testing.T) {
	s := pgtest.Start(t)
	ctx := t.Context()

	a := connect(t, s.NewDatabase(t))
	_, err := a.Exec(ctx, "CREATE TABLE only_in_a (x int)")
	require.NoError(t, err)
	bURL := s.NewDatabase(t)
	b := connect(t, bURL)
	var found bool
	require.NoError(t, b.QueryRow(ctx, "SELECT to_regclass('only_in_a') IS NOT NULL").Scan(&found))
	require.False(t, found, "databases must be separate")

	var byteOrder bool
	require.NoError(t, b.QueryRow(ctx, "SELECT 'B' < 'a'").Scan(&byteOrder))
	require.False(t, byteOrder, "the default collation must not be byte order")
	require.NoError(t, b.QueryRow(ctx, `SELECT 'B' < 'a' COLLATE "C"`).Scan(&byteOrder))
	require.True(t, byteOrder)

	sock := connect(t, s.SocketURL("postgres"))
	var addr *string
	require.NoError(t, sock.QueryRow(ctx, "SELECT inet_client_addr()::text").Scan(&addr))
	require.Nil(t, addr, "a Unix socket connection has no client address")
	tcp := connect(t, s.URL("postgres"))
	require.NoError(t, tcp.QueryRow(ctx, "SELECT inet_client_addr()::text").Scan(&addr))
	require.NotNil(t, addr)
	require.Equal(t, "127.0.0.1/32", *addr)
}

func TestStopRemovesEverything(t *testing.T) {
	s := pgtest.Start(t)
	dir := socketDir(t, s)
	_, err := os.Stat(dir)
	require.NoError(t, err)
	s.Stop()
	_, err = os.Stat(dir)
	require.True(t, os.IsNotExist(err), "the server's directory is removed: %v", err)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pgx.Connect(ctx, s.URL("postgres"))
	require.Error(t, err, "the server is gone")
	s.Stop() // a second Stop (the cleanup's) does nothing
}

// socketDir returns the host parameter of the server's socket URL.
func socketDir(t *testing.T, s *pgtest.Server) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(s.SocketURL("postgres"))
	require.NoError(t, err)
	return cfg.Host
}
