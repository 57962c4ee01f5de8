package postgres_test

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/pgtest"
	"github.com/meshsds/meshsds/internal/testing/syncbuf"
	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/postgres"
	"github.com/meshsds/meshsds/secretsource/store/storetest"
)

// openTimeout bounds every Open of the tests.
const openTimeout = time.Minute

// open opens a store on url and closes it when t ends.
func open(t testing.TB, url string) *postgres.Store {
	t.Helper()
	return openWith(t, postgres.Config{URL: url})
}

func openWith(t testing.TB, cfg postgres.Config) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	s, err := postgres.Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// newDatabase returns the URL of a new, empty database for t.
func newDatabase(t testing.TB) string {
	t.Helper()
	return pgtest.Shared(t).NewDatabase(t)
}

// query runs a query as the superuser in the database at dbURL, bypassing
// the store, and scans its single row into dest.
func query(t testing.TB, dbURL, sql string, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(dest...), sql)
}

// exec runs statements as the superuser in the database at dbURL.
func exec(t testing.TB, dbURL string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, stmt := range stmts {
		_, err := conn.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, newDatabase(t))
	})
}

// TestConformanceTwoInstances runs the suite with every call going to one of
// two Stores on the same database in turn (one over TCP, one over the Unix
// socket): a write through one is seen at once through the other, and the
// revision is shared.
func TestConformanceTwoInstances(t *testing.T) {
	srv := pgtest.Shared(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		tcp := srv.NewDatabase(t)
		u, err := url.Parse(tcp)
		require.NoError(t, err)
		sock := srv.SocketURL(strings.TrimPrefix(u.Path, "/"))
		return storetest.Alternate(open(t, tcp), open(t, sock))
	})
}

// TestGetOrCreateAgreesAcrossInstances races store.GetOrCreate on two Stores
// sharing a database, as replicas starting together do for the token
// signing key and a builtin CA: every caller gets the same record, and it
// is one of the generated candidates.
func TestGetOrCreateAgreesAcrossInstances(t *testing.T) {
	dbURL := newDatabase(t)
	stores := []*postgres.Store{open(t, dbURL), open(t, dbURL)}
	const perStore = 8
	for round := range 5 {
		key := store.Key{Kind: store.KindSecret, Mesh: "default", Name: "ca-builtin-key-" + strconv.Itoa(round)}
		var (
			wg        sync.WaitGroup
			gate      = make(chan struct{})
			generated atomic.Int32
			results   = make([]store.Record, 2*perStore)
			errs      = make([]error, 2*perStore)
		)
		for i := range 2 * perStore {
			wg.Go(func() {
				<-gate
				results[i], errs[i] = store.GetOrCreate(t.Context(), stores[i%2], key, func() ([]byte, error) {
					generated.Add(1)
					return []byte("candidate-" + strconv.Itoa(i)), nil
				})
			})
		}
		close(gate)
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "caller %d", i)
		}
		for i, rec := range results {
			require.Equal(t, results[0].Data, rec.Data, "caller %d disagrees", i)
			require.Equal(t, int64(1), rec.Version)
			require.True(t, results[0].CreatedAt.Equal(rec.CreatedAt))
		}
		require.True(t, strings.HasPrefix(string(results[0].Data), "candidate-"))
		require.GreaterOrEqual(t, generated.Load(), int32(1))
		for _, s := range stores {
			got, err := s.Get(t.Context(), key)
			require.NoError(t, err)
			require.Equal(t, results[0].Data, got.Data)
		}
	}
	rev, err := stores[0].Revision(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(5), rev, "one write per key: the losing Creates wrote nothing")
}

func TestTimesComeFromTheClock(t *testing.T) {
	storetest.RunClock(t, func(t *testing.T, now func() time.Time) store.Store {
		return openWith(t, postgres.Config{URL: newDatabase(t), Now: now})
	}, time.Microsecond)
}

// TestListIsByteOrderWhateverTheCollation lists names that a language
// collation sorts differently from byte order, in a database whose default
// collation is such a language collation.
func TestListIsByteOrderWhateverTheCollation(t *testing.T) {
	dbURL := newDatabase(t)
	var byteOrder bool
	query(t, dbURL, "SELECT 'B' < 'a' AND 'a-c' < 'ab'", &byteOrder)
	require.False(t, byteOrder, "precondition: the test database's default collation is not byte order")

	s := open(t, dbURL)
	ctx := t.Context()
	names := []string{"b", "a-c", "ab", "B", "a", "Z", "a.b", "_x", "10", "9"}
	for _, mesh := range []string{"mesh-b", "Mesh-a", "mesh-a"} {
		for _, name := range names {
			_, _, err := s.Put(ctx, store.Record{Key: store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name}, Data: []byte("x")}, 0)
			require.NoError(t, err)
		}
	}
	wantNames := []string{"10", "9", "B", "Z", "_x", "a", "a-c", "a.b", "ab", "b"}
	got, err := s.List(ctx, store.KindSecret, "mesh-a")
	require.NoError(t, err)
	var gotNames []string
	for _, r := range got {
		gotNames = append(gotNames, r.Name)
	}
	require.Equal(t, wantNames, gotNames)

	all, err := s.List(ctx, store.KindSecret, "")
	require.NoError(t, err)
	require.Len(t, all, 30)
	for i, mesh := range []string{"Mesh-a", "mesh-a", "mesh-b"} {
		for j, name := range wantNames {
			require.Equal(t, store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name}, all[i*len(wantNames)+j].Key)
		}
	}
}

// schemaVersion reads the schema version of the database at dbURL.
func schemaVersion(t *testing.T, dbURL string) int {
	t.Helper()
	var v int
	query(t, dbURL, "SELECT version FROM schema_version", &v)
	return v
}

func TestReopenKeepsEverythingAndMigratesOnce(t *testing.T) {
	ctx := t.Context()
	dbURL := newDatabase(t)
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	s := openWith(t, postgres.Config{URL: dbURL, Logger: logger})
	require.Equal(t, 1, strings.Count(logs.String(), "migrated store schema"))
	require.Contains(t, logs.String(), "from=0 to=2")
	require.Equal(t, 2, schemaVersion(t, dbURL))
	secret := []byte("-----BEGIN PRIVATE KEY----- do not log")
	_, _, err := s.Put(ctx, store.Record{Key: store.Key{Kind: store.KindSecret, Mesh: "default", Name: "a"}, Data: secret}, 0)
	require.NoError(t, err)
	_, err = s.Create(ctx, store.Record{Key: store.Key{Kind: store.KindGlobalSecret, Name: "signing-key"}, Data: []byte{0, 1, 2}})
	require.NoError(t, err)
	before, err := s.List(ctx, store.KindSecret, "")
	require.NoError(t, err)
	require.NoError(t, s.Close())

	for range 2 {
		again := openWith(t, postgres.Config{URL: dbURL, Logger: logger})
		after, err := again.List(ctx, store.KindSecret, "")
		require.NoError(t, err)
		require.Equal(t, before, after)
		g, err := again.Get(ctx, store.Key{Kind: store.KindGlobalSecret, Name: "signing-key"})
		require.NoError(t, err)
		require.Equal(t, []byte{0, 1, 2}, g.Data)
		rev, err := again.Revision(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(2), rev)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "migrated store schema"), "a current schema is not migrated again")
	require.Equal(t, 2, schemaVersion(t, dbURL))
	require.NotContains(t, logs.String(), "PRIVATE KEY", "record data never reaches the log")
	require.Contains(t, logs.String(), "database=127.0.0.1:")
}

// TestConcurrentOpensMigrateOnce opens many Stores on a new database at
// once, as replicas starting together do: all succeed, and the schema is
// created once.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	for round := range 3 {
		t.Run(strconv.Itoa(round), func(t *testing.T) {
			dbURL := newDatabase(t)
			var logs syncbuf.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			const n = 8
			var wg sync.WaitGroup
			gate := make(chan struct{})
			stores := make([]*postgres.Store, n)
			errs := make([]error, n)
			ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
			defer cancel()
			for i := range n {
				wg.Go(func() {
					<-gate
					stores[i], errs[i] = postgres.Open(ctx, postgres.Config{URL: dbURL, Logger: logger})
				})
			}
			close(gate)
			wg.Wait()
			for i, err := range errs {
				require.NoError(t, err, "Open %d", i)
				t.Cleanup(func() { require.NoError(t, stores[i].Close()) })
			}
			require.Equal(t, 1, strings.Count(logs.String(), "migrated store schema"), logs.String())
			require.Equal(t, 2, schemaVersion(t, dbURL))
			_, _, err := stores[n-1].Put(t.Context(), store.Record{Key: store.Key{Kind: store.KindMesh, Name: "m"}, Data: []byte("{}")}, 0)
			require.NoError(t, err)
			rev, err := stores[0].Revision(t.Context())
			require.NoError(t, err)
			require.Equal(t, int64(1), rev)
		})
	}
}

// requireRefused requires Open of dbURL to fail with an error containing
// every part of want, without creating or changing anything.
func requireRefused(t *testing.T, dbURL string, want ...string) {
	t.Helper()
	var before string
	query(t, dbURL, tablesQuery, &before)
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	s, err := postgres.Open(ctx, postgres.Config{URL: dbURL})
	if err == nil {
		_ = s.Close()
	}
	require.Error(t, err)
	t.Logf("Open: %v", err)
	for _, w := range want {
		require.Contains(t, err.Error(), w)
	}
	var after string
	query(t, dbURL, tablesQuery, &after)
	require.Equal(t, before, after, "the database was modified")
}

// tablesQuery describes the tables of the public schema and their row
// counts' source: enough to see that Open created or migrated nothing.
const tablesQuery = `
SELECT coalesce(string_agg(c.relname || ':' || c.relnatts, ',' ORDER BY c.relname), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public'`

func TestOpenRefusesNewerSchema(t *testing.T) {
	dbURL := newDatabase(t)
	require.NoError(t, open(t, dbURL).Close())
	exec(t, dbURL, "UPDATE schema_version SET version = 99")
	requireRefused(t, dbURL, "schema version 99 is newer than this meshsds supports (2)")
	require.Equal(t, 99, schemaVersion(t, dbURL))
}

func TestOpenRefusesOtherApplicationsTables(t *testing.T) {
	dbURL := newDatabase(t)
	exec(t, dbURL, "CREATE TABLE resources (id int PRIMARY KEY, body text)")
	requireRefused(t, dbURL, "not a meshsds database")
}

// TestSearchPathSeparatesStores keeps two stores in two schemas of one
// database, chosen with search_path in the URL.
func TestSearchPathSeparatesStores(t *testing.T) {
	dbURL := newDatabase(t)
	exec(t, dbURL, "CREATE SCHEMA one", "CREATE SCHEMA two")
	withPath := func(schema string) string { return dbURL + "&search_path=" + schema }
	one, two := open(t, withPath("one")), open(t, withPath("two"))
	key := store.Key{Kind: store.KindMesh, Name: "default"}
	_, _, err := one.Put(t.Context(), store.Record{Key: key, Data: []byte("{}")}, 0)
	require.NoError(t, err)
	_, err = two.Get(t.Context(), key)
	require.ErrorIs(t, err, store.ErrNotFound)
	var n int
	query(t, dbURL, "SELECT count(*) FROM one.resources", &n)
	require.Equal(t, 1, n)
	query(t, dbURL, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &n)
	require.Zero(t, n, "nothing is created outside the search path")

	_, err = postgres.Open(t.Context(), postgres.Config{URL: withPath("missing")})
	require.ErrorContains(t, err, "search_path names no existing schema")
}

// TestOpenWithoutPrivilegesExplains opens a new database as a role that may
// not create tables: the error says what the role needs.
func TestOpenWithoutPrivilegesExplains(t *testing.T) {
	dbURL := newDatabase(t)
	srv := pgtest.Shared(t)
	role := "meshsds_reader_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	srv.Exec(t, "postgres", "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() { srv.Exec(t, "postgres", "DROP ROLE IF EXISTS "+role) })
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.User(role)
	_, err = postgres.Open(t.Context(), postgres.Config{URL: u.String()})
	require.ErrorContains(t, err, "permission denied")
	require.ErrorContains(t, err, "the role needs to create tables")
}

// TestOpenFailsClearlyAndQuickly covers the start-up mistakes an operator
// makes. Every case must fail on its own, long before the context's
// deadline, with an error that names the problem and never the password.
func TestOpenFailsClearlyAndQuickly(t *testing.T) {
	srv := pgtest.Shared(t)
	closedPort := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
		return port
	}()
	const password = "s3cr3t-Pa55"
	tests := []struct {
		name string
		url  string
		want []string
	}{
		{"empty", "", []string{"URL is required"}},
		{"not a URL", "postgres://user:" + password + "@127.0.0.1:notaport/db", []string{"cannot parse"}},
		{"unknown sslmode", "postgres://user:" + password + "@127.0.0.1:5432/db?sslmode=sometimes", []string{"sslmode"}},
		{
			"nobody listening", "postgres://user:" + password + "@127.0.0.1:" + strconv.Itoa(closedPort) + "/db?sslmode=disable",
			[]string{"127.0.0.1:" + strconv.Itoa(closedPort) + "/db", "connection refused"},
		},
		{
			"no such database", "postgres://postgres:" + password + "@127.0.0.1:" + strconv.Itoa(srv.Port()) + "/nosuchdb?sslmode=disable",
			[]string{"nosuchdb", "does not exist", "create the database first"},
		},
		{
			"no such role", "postgres://nobody:" + password + "@127.0.0.1:" + strconv.Itoa(srv.Port()) + "/postgres?sslmode=disable",
			[]string{`role "nobody" does not exist`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
			defer cancel()
			s, err := postgres.Open(ctx, postgres.Config{URL: tt.url})
			if err == nil {
				_ = s.Close()
			}
			require.Error(t, err)
			t.Logf("Open: %v", err)
			require.NoError(t, ctx.Err(), "Open failed because of the deadline, not on its own")
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), password)
		})
	}
}

// silentServer accepts TCP connections and never answers, like a server
// behind a black-holing firewall. It returns its address.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

// TestOpenGivesUpOnASilentServer: connect_timeout bounds each attempt, and
// the context bounds Open as a whole.
func TestOpenGivesUpOnASilentServer(t *testing.T) {
	addr := silentServer(t)

	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	_, err := postgres.Open(ctx, postgres.Config{URL: "postgres://meshsds@" + addr + "/meshsds?sslmode=disable&connect_timeout=1"})
	require.Error(t, err)
	t.Logf("Open: %v", err)
	require.NoError(t, ctx.Err(), "connect_timeout, not the context, ended the attempt")
	require.Contains(t, err.Error(), "timeout")

	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	_, err = postgres.Open(ctx, postgres.Config{URL: "postgres://meshsds@" + addr + "/meshsds?sslmode=disable"})
	require.ErrorIs(t, err, context.Canceled)
}

// TestCancelWhileWaitingForALock cancels writes that wait for a lock held
// by another session: they return the context's error, and once the lock
// is released nothing of them is in the store.
func TestCancelWhileWaitingForALock(t *testing.T) {
	dbURL := newDatabase(t)
	s := open(t, dbURL)
	key := store.Key{Kind: store.KindSecret, Mesh: "default", Name: "locked"}
	_, _, err := s.Put(t.Context(), store.Record{Key: key, Data: []byte("before")}, 0)
	require.NoError(t, err)

	// Another session holds the record's row lock.
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SELECT 1 FROM resources WHERE name = 'locked' FOR UPDATE")
	require.NoError(t, err)

	writes := map[string]func(context.Context) error{
		"Put": func(ctx context.Context) error {
			_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("put")}, 0)
			return err
		},
		"Put (expected version)": func(ctx context.Context) error {
			_, _, err := s.Put(ctx, store.Record{Key: key, Data: []byte("cas")}, 1)
			return err
		},
		"Delete": func(ctx context.Context) error { return s.Delete(ctx, key) },
	}
	for name, write := range writes {
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := write(wctx)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, name)
	}
	require.NoError(t, tx.Rollback(ctx))

	got, err := s.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, "before", string(got.Data))
	require.Equal(t, int64(1), got.Version)
	rev, err := s.Revision(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), rev)
}
