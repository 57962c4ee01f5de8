// Package postgres is the store.Store for several meshsds replicas: the
// records in one PostgreSQL database that every replica connects to,
// through pgx's connection pool.
//
// Durability and atomicity are PostgreSQL's: a write that returned nil is
// committed. Every write is a single statement that changes the record and
// the store-wide revision together (see sql.go), so the revision that other
// replicas poll moves exactly when a record does. Writes run at READ
// COMMITTED whatever the server's default, which is what the compare-and-
// swap and create-if-absent statements are written for.
//
// Schema: the table schema_version holds the schema version. Open applies
// the missing migrations in one transaction under an advisory lock, so that
// replicas starting together migrate once, and refuses a database from a
// newer meshsds and one whose tables belong to something else, without
// modifying either. The connecting role needs to be able to create tables
// in its schema the first time (and after an upgrade that migrates), and to
// read and write them always.
//
// Times are stored as timestamptz, at microsecond precision. Connections
// set default_transaction_isolation at start-up; a pooler in front of the
// server must let that parameter through.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshsds/meshsds/secretsource/store"
)

// defaultConnectTimeout bounds each connection attempt when the URL sets
// no connect_timeout, so that an unreachable server fails Open and requests
// in seconds rather than after the operating system's TCP timeout.
const defaultConnectTimeout = 10 * time.Second

// cancelGrace is how long a statement whose context ended may take to be
// canceled by the server before its connection is closed.
const cancelGrace = 2 * time.Second

// logKeyDatabase is the log key of the server and database, without the
// user or password.
const logKeyDatabase = "database"

// PostgreSQL error codes (SQLSTATE) that get an explanation.
const (
	codeInsufficientPrivilege = "42501"
	codeInvalidSchemaName     = "3F000"
	codeInvalidCatalogName    = "3D000"
)

// Config configures a Store.
type Config struct {
	// URL is the connection string, a postgres:// URL or "key=value"
	// pairs, as libpq and pgx read them (sslmode, connect_timeout,
	// search_path, pool_max_conns, ...). It is required. It may hold a
	// password: the store never logs the URL, and an error quotes it only
	// when it cannot be parsed, with the password masked by pgx.
	URL string
	// Logger receives the store's logs, which never contain record data or
	// the password. Nil discards them.
	Logger *slog.Logger
	// Now is the clock that stamps CreatedAt and ModifiedAt. Nil means
	// time.Now.
	Now func() time.Time
}

// Store is the PostgreSQL implementation of store.Store. Create it with Open
// and release it with Close. It is safe for concurrent use, and several
// Stores, in one process or many, may share a database.
type Store struct {
	store.Notifier
	pool *pgxpool.Pool
	name string // host:port/database, for errors and logs
	log  *slog.Logger
	now  func() time.Time

	// The listener (listen.go) and the leader election (cluster.go) use
	// connections of their own, configured from listenConfig.
	listenConfig *pgx.ConnConfig
	listening    atomic.Bool
	clusterWake  chan struct{}
	stopListen   context.CancelFunc
	listenDone   chan struct{}
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at cfg.URL and brings its schema to the
// current version. It fails when the URL is invalid, the server cannot be
// reached or refuses the login, the database was migrated by a newer
// meshsds, or its tables are not meshsds'. ctx bounds the connection and
// the migration (which may wait for another replica's).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URL == "" {
		return nil, errors.New("postgres store: URL is required")
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// pgx's parse errors redact the password.
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	cc := pcfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = defaultConnectTimeout
	}
	// The write statements are written for READ COMMITTED; under a
	// server-wide SERIALIZABLE default, racing writers would fail with
	// serialization errors instead of waiting for each other.
	cc.RuntimeParams["default_transaction_isolation"] = "read committed"
	// When a request's context ends, ask the server to cancel the
	// statement, rather than only dropping the connection: a write waiting
	// for a lock would otherwise still be applied once it gets the lock,
	// long after its caller was told it failed. If the server does not
	// answer within cancelGrace, the connection is closed.
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}
	s := &Store{name: describeTarget(cc), log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With(logKeyDatabase, s.name)
	if s.now == nil {
		s.now = time.Now
	}

	s.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", s.name, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres store %s: %w", s.name, describe(ctxErr(ctx, err)))
	}

	// The listener's connection waits idle for notifications: a timeout
	// interrupts the wait (deadline), it does not cancel a statement.
	s.listenConfig = cc.Copy()
	s.listenConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	s.clusterWake = make(chan struct{}, 1)
	lctx, cancel := context.WithCancel(context.Background())
	s.stopListen, s.listenDone = cancel, make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(s.listenDone)
		s.listen(lctx, s.listenConfig, ready)
	}()
	select {
	case <-ready:
	case <-time.After(listenStartWait):
	case <-ctx.Done():
	}
	return s, nil
}

// describeTarget names the server and database of cc for errors and logs:
// "127.0.0.1:5432/meshsds", or "/run/postgresql:5432/meshsds" for a socket.
func describeTarget(cc *pgx.ConnConfig) string {
	return net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))) + "/" + cc.Database
}

// migrate creates or upgrades the schema in one transaction under the
// migration lock. A replica that finds the schema current commits nothing
// but the lock's release.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, sqlMigrationLock, migrationLockID); err != nil {
		return fmt.Errorf("taking the schema migration lock: %w", err)
	}
	var haveVersion, haveTables bool
	if err := tx.QueryRow(ctx, sqlTablesExist).Scan(&haveVersion, &haveTables); err != nil {
		return fmt.Errorf("reading schema: %w", err)
	}
	version := 0
	switch {
	case haveVersion:
		if err := tx.QueryRow(ctx, sqlSchemaVersion).Scan(&version); err != nil {
			return fmt.Errorf("reading schema version: %w", err)
		}
	case haveTables:
		return errors.New("not a meshsds database: it has a resources or store_revision table but no schema_version; use another database, or another schema with ?search_path=")
	default:
		if _, err := tx.Exec(ctx, sqlCreateSchemaVersion); err != nil {
			return fmt.Errorf("creating schema_version: %w", err)
		}
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this meshsds supports (%d); run a newer meshsds", version, len(migrations))
	}
	if version == len(migrations) {
		return tx.Commit(ctx)
	}
	for v := version; v < len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrating schema from version %d to %d: %w", v, v+1, err)
		}
	}
	if _, err := tx.Exec(ctx, sqlSetSchemaVersion, len(migrations)); err != nil {
		return fmt.Errorf("setting schema version: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing schema migration: %w", err)
	}
	s.log.Info("migrated store schema", "from", version, "to", len(migrations))
	return nil
}

// describe adds a plain explanation to the PostgreSQL errors an operator
// meets when the database or role is not set up as meshsds needs.
func describe(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case codeInsufficientPrivilege:
		return fmt.Errorf("%w (the role needs to create tables in its schema on first start, and to read and write them)", err)
	case codeInvalidSchemaName:
		return fmt.Errorf("%w (the search_path names no existing schema to create the tables in)", err)
	case codeInvalidCatalogName:
		return fmt.Errorf("%w (create the database first)", err)
	}
	return err
}

// ctxErr makes sure that an error caused by ctx ending wraps ctx's error,
// whatever the driver reported (a closed connection, a server-side
// cancellation).
func ctxErr(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w: %w", ctx.Err(), err)
}

// Get returns the record at key, or an error wrapping store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key store.Key) (store.Record, error) {
	if err := key.Validate(); err != nil {
		return store.Record{}, err
	}
	rec := store.Record{Key: key}
	err := s.pool.QueryRow(ctx, sqlGet, key.Kind, key.Mesh, key.Name).
		Scan(&rec.Data, &rec.Version, &rec.CreatedAt, &rec.ModifiedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Record{}, fmt.Errorf("getting %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("getting %s: %w", key, ctxErr(ctx, err))
	}
	return normalize(rec), nil
}

// List returns the records of kind in mesh, or in every mesh when mesh is
// empty, sorted by mesh then name (byte order).
func (s *Store) List(ctx context.Context, kind store.Kind, mesh string) ([]store.Record, error) {
	if err := store.ValidateListArgs(kind, mesh); err != nil {
		return nil, err
	}
	var (
		rows pgx.Rows
		err  error
	)
	if mesh == "" {
		rows, err = s.pool.Query(ctx, sqlListAllMeshes, kind)
	} else {
		rows, err = s.pool.Query(ctx, sqlListMesh, kind, mesh)
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, ctxErr(ctx, err))
	}
	defer rows.Close()
	recs := []store.Record{}
	for rows.Next() {
		rec := store.Record{Key: store.Key{Kind: kind}}
		if err := rows.Scan(&rec.Mesh, &rec.Name, &rec.Data, &rec.Version, &rec.CreatedAt, &rec.ModifiedAt); err != nil {
			return nil, fmt.Errorf("listing %s: %w", kind, ctxErr(ctx, err))
		}
		recs = append(recs, normalize(rec))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, ctxErr(ctx, err))
	}
	return recs, nil
}

// Put creates or replaces rec (its Version and times are ignored). With a
// non-zero expectVersion the record must exist at that version, else the
// error wraps store.ErrConflict and nothing changes. The check and the write
// are one statement.
func (s *Store) Put(ctx context.Context, rec store.Record, expectVersion int64) (store.Record, bool, error) {
	if err := store.ValidatePutArgs(rec, expectVersion); err != nil {
		return store.Record{}, false, err
	}
	stored := store.Record{Key: rec.Key, Data: cloneData(rec.Data)}
	now := s.now()
	var row pgx.Row
	if expectVersion == 0 {
		row = s.pool.QueryRow(ctx, sqlUpsert, rec.Kind, rec.Mesh, rec.Name, stored.Data, now)
	} else {
		row = s.pool.QueryRow(ctx, sqlUpdateIfVersion, stored.Data, now, rec.Kind, rec.Mesh, rec.Name, expectVersion)
	}
	err := row.Scan(&stored.Version, &stored.CreatedAt, &stored.ModifiedAt)
	if errors.Is(err, pgx.ErrNoRows) && expectVersion != 0 {
		err = s.conflict(ctx, rec.Key, expectVersion)
	}
	if err != nil {
		return store.Record{}, false, fmt.Errorf("putting %s: %w", rec.Key, ctxErr(ctx, err))
	}
	stored = normalize(stored)
	s.notifyOwnWrite()
	return stored, stored.Version == 1, nil
}

// conflict explains why an update at expectVersion matched no row. The
// stored version is read after the fact, only for the message.
func (s *Store) conflict(ctx context.Context, key store.Key, expectVersion int64) error {
	var current int64
	err := s.pool.QueryRow(ctx, sqlVersion, key.Kind, key.Mesh, key.Name).Scan(&current)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("expected version %d, but there is no record: %w", expectVersion, store.ErrConflict)
	case err != nil:
		return fmt.Errorf("expected version %d, which is not the stored one: %w (reading the stored version: %w)", expectVersion, store.ErrConflict, err)
	}
	return fmt.Errorf("expected version %d, stored version is %d: %w", expectVersion, current, store.ErrConflict)
}

// Create stores rec at version 1 if no record has its key; otherwise the
// error wraps store.ErrConflict and the stored record is left alone.
func (s *Store) Create(ctx context.Context, rec store.Record) (store.Record, error) {
	if err := rec.Validate(); err != nil {
		return store.Record{}, err
	}
	stored := store.Record{Key: rec.Key, Data: cloneData(rec.Data)}
	err := s.pool.QueryRow(ctx, sqlCreate, rec.Kind, rec.Mesh, rec.Name, stored.Data, s.now()).
		Scan(&stored.Version, &stored.CreatedAt, &stored.ModifiedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		err = fmt.Errorf("already exists: %w", store.ErrConflict)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("creating %s: %w", rec.Key, ctxErr(ctx, err))
	}
	s.notifyOwnWrite()
	return normalize(stored), nil
}

// Delete removes the record at key, or returns an error wrapping
// store.ErrNotFound.
func (s *Store) Delete(ctx context.Context, key store.Key) error {
	if err := key.Validate(); err != nil {
		return err
	}
	var n int64
	err := s.pool.QueryRow(ctx, sqlDelete, key.Kind, key.Mesh, key.Name).Scan(&n)
	if err == nil && n == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, ctxErr(ctx, err))
	}
	s.notifyOwnWrite()
	return nil
}

// Revision returns the store-wide write counter: it grows by one with every
// successful Put, Create and Delete, by any replica sharing the database,
// and does not change on reads or failed writes. A fresh store is at 0.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	if err := s.pool.QueryRow(ctx, sqlRevision).Scan(&rev); err != nil {
		return 0, fmt.Errorf("reading revision: %w", ctxErr(ctx, err))
	}
	return rev, nil
}

// Close closes every connection, waiting for the ones in use to be
// released. A Store must not be used after Close.
func (s *Store) Close() error {
	s.stopListen()
	<-s.listenDone
	s.pool.Close()
	return nil
}

// normalize makes a scanned record's Data non-nil and its times UTC (pgx
// returns timestamptz in the local time zone).
func normalize(rec store.Record) store.Record {
	if rec.Data == nil {
		rec.Data = []byte{}
	}
	rec.CreatedAt = rec.CreatedAt.UTC()
	rec.ModifiedAt = rec.ModifiedAt.UTC()
	return rec
}

// cloneData copies data, so that neither the caller's slice nor the
// returned one aliases the other, and turns nil into an empty slice (the
// column is NOT NULL; nil would be sent as NULL).
func cloneData(data []byte) []byte {
	return append(make([]byte, 0, len(data)), data...)
}
