// Package sqlite is the embedded durable store: store.Store in one SQLite
// file (by default <data-dir>/meshsds.db), through the pure-Go driver
// modernc.org/sqlite, so the binary needs no cgo and there is nothing to
// install.
//
// Durability: the database runs in WAL mode with synchronous=FULL, so a
// write that returned nil has been fsynced and survives kill -9 of the
// process and a power loss. The file is created with mode 0600 and its
// directory, if missing, with 0700.
//
// Concurrency: writes go through one connection and run in BEGIN IMMEDIATE
// transactions, so writers are serialized in the process and take SQLite's
// write lock up front (waiting up to busy_timeout for another process's
// transaction, never failing on a lock upgrade). Reads use a small pool of
// read-only connections and, with WAL, run concurrently with each other and
// with the writer. Several processes may open the same file; they see each
// other's writes and share one Revision counter.
//
// Schema: PRAGMA user_version is the schema version; Open applies the
// missing migrations (see sql.go) in one transaction and refuses a database
// from a newer meshsds, a file that is not a SQLite database, and a SQLite
// database of another application, without modifying any of them.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/store"
)

// driverName is the database/sql driver that modernc.org/sqlite registers.
const driverName = "sqlite"

// busyTimeout is how long a write waits for another process's write
// transaction on the same file before failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// readConns is the size of the read-only connection pool. Each SQLite
// connection has its own page cache; a few are plenty for the admin API.
const readConns = 4

// Config configures a Store.
type Config struct {
	// Path is the database file, e.g. <data-dir>/meshsds.db. It is required.
	// The file and its directory are created if missing.
	Path string
	// Logger receives the store's logs, which never contain record data.
	// Nil discards them.
	Logger *slog.Logger
	// Now is the clock that stamps CreatedAt and ModifiedAt. Nil means
	// time.Now.
	Now func() time.Time
}

// Store is the SQLite implementation of store.Store. Create it with Open and
// release it with Close. It is safe for concurrent use.
type Store struct {
	store.Notifier
	path  string
	write *sql.DB // one connection: every write transaction
	read  *sql.DB // read-only connections: Get, List, Revision
	log   *slog.Logger
	now   func() time.Time
}

var _ store.Store = (*Store)(nil)

// Open opens the database at cfg.Path, creating it (and its directory) if
// missing, and brings its schema to the current version. It fails, leaving
// the file as it was, when the file is not a SQLite database or is corrupt,
// belongs to another application, or was written by a newer meshsds.
func Open(cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("sqlite store: path is required")
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}
	s := &Store{path: path, log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With(secretsource.LogPath, path)
	if s.now == nil {
		s.now = time.Now
	}

	if err := s.prepareFile(); err != nil {
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}

	// Open is called once at start-up and has no context to honour.
	ctx := context.Background()

	s.write, err = sql.Open(driverName, dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxLifetime(0)
	s.write.SetConnMaxIdleTime(0)
	if err := s.migrate(ctx); err != nil {
		_ = s.write.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, describe(err))
	}

	s.read, err = sql.Open(driverName, dsn(path, true))
	if err != nil {
		_ = s.write.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	s.read.SetMaxOpenConns(readConns)
	s.read.SetMaxIdleConns(readConns)
	s.read.SetConnMaxLifetime(0)
	s.read.SetConnMaxIdleTime(0)
	if err := s.read.PingContext(ctx); err != nil {
		_ = s.read.Close()
		_ = s.write.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, describe(err))
	}
	return s, nil
}

// create makes a new database: its schema is written in a temporary file
// renamed into place, so that a database file that exists is never empty,
// not even after a crash during the first start.
func (s *Store) create() error {
	tmp := s.path + ".new"
	for _, p := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
		_ = os.Remove(p) // left by a first start that crashed
	}
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	db, err := sql.Open(driverName, dsn(tmp, false))
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	tmpStore := &Store{path: tmp, write: db, log: s.log, now: s.now}
	err = tmpStore.migrate(context.Background())
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("creating the schema: %w", describe(err))
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("creating database file: %w", err)
	}
	syncDir(filepath.Dir(s.path))
	return nil
}

// syncDir makes a rename in dir durable; errors are ignored (not every file
// system supports it).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// dsn returns the driver's data source name for path. The connection
// settings are applied by the driver to every new connection of the pool;
// synchronous and foreign_keys are per connection in SQLite. journal_mode
// is kept in the file and set once by migrate.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// Write transactions take the write lock at BEGIN, so a
		// transaction never fails upgrading a read lock while another
		// process writes.
		q.Set("_txlock", "immediate")
	}
	// A file: URI, with the path escaped, so that a '?' or '#' in the
	// path is not read as the start of the parameters.
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	return "file:" + u.EscapedPath() + "?" + u.RawQuery
}

// prepareFile creates the directory (0700) and an empty database file
// (0600) when they are missing, so that SQLite never creates the file with
// its default, umask-dependent mode. SQLite gives the -wal and -shm files
// the mode of the database file.
func (s *Store) prepareFile() error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	fi, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s.create()
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if fi.Size() == 0 {
		// A new database is never empty (see create): this one was
		// truncated or replaced. Starting on it would lose every secret
		// and the token signing key, silently.
		return errors.New("the file is empty (0 bytes), which no meshsds database is: it was truncated or replaced. Restore it from a backup, or remove it to start with an empty store and a new token signing key (every dataplane token then has to be issued again)")
	}
	if fi.Mode().Perm()&0o077 != 0 {
		s.log.Warn("database file is accessible to other users; it holds secrets and should be mode 0600",
			"mode", fi.Mode().Perm().String())
	}
	return nil
}

// migrate checks that the file is a healthy meshsds database (or an empty
// file), switches it to WAL and applies the missing migrations in one write
// transaction, so that two processes opening a new file at once migrate it
// once. Nothing is written before the checks pass.
func (s *Store) migrate(ctx context.Context) error {
	// quick_check reads every page, so a damaged file is refused at start
	// rather than failing some request later. The store holds at most a few
	// thousand records; this takes milliseconds.
	if err := s.quickCheck(ctx); err != nil {
		return err
	}
	if _, err := s.checkSchema(ctx, s.write); err != nil {
		return err
	}
	// journal_mode is kept in the file, and cannot change inside a
	// transaction; it is set here rather than in the DSN so that a file
	// refused above is not converted.
	var mode string
	if err := s.write.QueryRowContext(ctx, sqlJournalModeWAL).Scan(&mode); err != nil {
		return fmt.Errorf("setting WAL mode: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("setting WAL mode: journal mode is still %q", mode)
	}

	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	// Again under the write lock: another process may have migrated.
	version, err := s.checkSchema(ctx, tx)
	if err != nil {
		return err
	}
	if version == len(migrations) {
		return nil
	}
	for v := version; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrating schema from version %d to %d: %w", v, v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(sqlSetApplicationID, applicationID)); err != nil {
		return fmt.Errorf("setting application id: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(sqlSetUserVersion, len(migrations))); err != nil {
		return fmt.Errorf("setting schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing schema migration: %w", err)
	}
	s.log.Info("migrated store schema", "from", version, "to", len(migrations))
	return nil
}

// querier is what checkSchema needs of a *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// checkSchema returns the schema version of a meshsds database (0 for an
// empty file), or an error for another application's database or one from
// a newer meshsds.
func (s *Store) checkSchema(ctx context.Context, q querier) (int, error) {
	var version, appID, objects int64
	if err := q.QueryRowContext(ctx, sqlUserVersion).Scan(&version); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	if err := q.QueryRowContext(ctx, sqlApplicationID).Scan(&appID); err != nil {
		return 0, fmt.Errorf("reading application id: %w", err)
	}
	if err := q.QueryRowContext(ctx, sqlCountObjects).Scan(&objects); err != nil {
		return 0, fmt.Errorf("reading schema: %w", err)
	}
	switch {
	case appID != 0 && appID != applicationID:
		return 0, fmt.Errorf("not a meshsds database (SQLite application_id %#x)", appID)
	case appID == 0 && (version != 0 || objects != 0):
		return 0, errors.New("not a meshsds database (a SQLite database of another application)")
	case version > int64(len(migrations)):
		return 0, fmt.Errorf("database schema version %d is newer than this meshsds supports (%d); run a newer meshsds", version, len(migrations))
	}
	return int(version), nil
}

func (s *Store) quickCheck(ctx context.Context) error {
	rows, err := s.write.QueryContext(ctx, sqlQuickCheck)
	if err != nil {
		return err
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			return err
		}
		for line := range strings.Lines(text) {
			line = strings.TrimSpace(line)
			if line != "ok" && line != "" && !strings.HasPrefix(line, "***") {
				problems = append(problems, line)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(problems) > 0 {
		const shown = 3
		if len(problems) > shown {
			problems = append(problems[:shown], fmt.Sprintf("and %d more", len(problems)-shown))
		}
		return fmt.Errorf("database is corrupt (quick_check: %s)", strings.Join(problems, "; "))
	}
	return nil
}

// describe adds a plain explanation to the SQLite errors an operator meets
// when the file is not what it should be.
func describe(err error) error {
	var serr *sqlite.Error
	if !errors.As(err, &serr) {
		return err
	}
	switch serr.Code() & 0xff {
	case sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("not a SQLite database, or corrupt: %w", err)
	case sqlite3.SQLITE_CORRUPT:
		return fmt.Errorf("database is corrupt: %w", err)
	}
	return err
}

// Get returns the record at key, or an error wrapping store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key store.Key) (store.Record, error) {
	if err := key.Validate(); err != nil {
		return store.Record{}, err
	}
	rec := store.Record{Key: key}
	var created, modified int64
	err := s.read.QueryRowContext(ctx, sqlGet, key.Kind, key.Mesh, key.Name).
		Scan(&rec.Data, &rec.Version, &created, &modified)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Record{}, fmt.Errorf("getting %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("getting %s: %w", key, err)
	}
	rec.Data = nonNil(rec.Data)
	rec.CreatedAt, rec.ModifiedAt = fromNanos(created), fromNanos(modified)
	return rec, nil
}

// List returns the records of kind in mesh, or in every mesh when mesh is
// empty, sorted by mesh then name (byte order).
func (s *Store) List(ctx context.Context, kind store.Kind, mesh string) ([]store.Record, error) {
	if err := store.ValidateListArgs(kind, mesh); err != nil {
		return nil, err
	}
	var (
		rows *sql.Rows
		err  error
	)
	if mesh == "" {
		rows, err = s.read.QueryContext(ctx, sqlListAllMeshes, kind)
	} else {
		rows, err = s.read.QueryContext(ctx, sqlListMesh, kind, mesh)
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, err)
	}
	defer rows.Close()
	recs := []store.Record{}
	for rows.Next() {
		rec := store.Record{Key: store.Key{Kind: kind}}
		var created, modified int64
		if err := rows.Scan(&rec.Mesh, &rec.Name, &rec.Data, &rec.Version, &created, &modified); err != nil {
			return nil, fmt.Errorf("listing %s: %w", kind, err)
		}
		rec.Data = nonNil(rec.Data)
		rec.CreatedAt, rec.ModifiedAt = fromNanos(created), fromNanos(modified)
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing %s: %w", kind, err)
	}
	return recs, nil
}

// Put creates or replaces rec (its Version and times are ignored). With a
// non-zero expectVersion the record must exist at that version, else the
// error wraps store.ErrConflict and nothing changes. The check and the write
// are one transaction.
func (s *Store) Put(ctx context.Context, rec store.Record, expectVersion int64) (store.Record, bool, error) {
	if err := store.ValidatePutArgs(rec, expectVersion); err != nil {
		return store.Record{}, false, err
	}
	stored := store.Record{Key: rec.Key, Data: cloneData(rec.Data)}
	now := s.now().UnixNano()
	var created, modified int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if expectVersion == 0 {
			return tx.QueryRowContext(ctx, sqlUpsert, rec.Kind, rec.Mesh, rec.Name, stored.Data, now, now).
				Scan(&stored.Version, &created, &modified)
		}
		err := tx.QueryRowContext(ctx, sqlUpdateIfVersion, stored.Data, now, rec.Kind, rec.Mesh, rec.Name, expectVersion).
			Scan(&stored.Version, &created, &modified)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var current int64
		err = tx.QueryRowContext(ctx, sqlVersion, rec.Kind, rec.Mesh, rec.Name).Scan(&current)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("expected version %d, but there is no record: %w", expectVersion, store.ErrConflict)
		case err != nil:
			return err
		}
		return fmt.Errorf("expected version %d, stored version is %d: %w", expectVersion, current, store.ErrConflict)
	})
	if err != nil {
		return store.Record{}, false, fmt.Errorf("putting %s: %w", rec.Key, err)
	}
	stored.CreatedAt, stored.ModifiedAt = fromNanos(created), fromNanos(modified)
	return stored, stored.Version == 1, nil
}

// Create stores rec at version 1 if no record has its key; otherwise the
// error wraps store.ErrConflict and the stored record is left alone.
func (s *Store) Create(ctx context.Context, rec store.Record) (store.Record, error) {
	if err := rec.Validate(); err != nil {
		return store.Record{}, err
	}
	stored := store.Record{Key: rec.Key, Data: cloneData(rec.Data)}
	now := s.now().UnixNano()
	var created, modified int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, sqlCreate, rec.Kind, rec.Mesh, rec.Name, stored.Data, now, now).
			Scan(&stored.Version, &created, &modified)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("already exists: %w", store.ErrConflict)
		}
		return err
	})
	if err != nil {
		return store.Record{}, fmt.Errorf("creating %s: %w", rec.Key, err)
	}
	stored.CreatedAt, stored.ModifiedAt = fromNanos(created), fromNanos(modified)
	return stored, nil
}

// Delete removes the record at key, or returns an error wrapping
// store.ErrNotFound.
func (s *Store) Delete(ctx context.Context, key store.Key) error {
	if err := key.Validate(); err != nil {
		return err
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, sqlDelete, key.Kind, key.Mesh, key.Name)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	return nil
}

// Revision returns the store-wide write counter: it grows by one with every
// successful Put, Create and Delete, by any process sharing the file, and
// does not change on reads or failed writes. A fresh store is at 0.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	if err := s.read.QueryRowContext(ctx, sqlRevision).Scan(&rev); err != nil {
		return 0, fmt.Errorf("reading revision: %w", err)
	}
	return rev, nil
}

// Close closes the database. A Store must not be used after Close.
func (s *Store) Close() error {
	return errors.Join(s.read.Close(), s.write.Close())
}

// writeTx runs fn in a write transaction and, if fn succeeds, bumps the
// revision in the same transaction, commits and notifies Changes. fn's error is returned as
// is, after the rollback.
func (s *Store) writeTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, sqlBumpRevision); err != nil {
		return fmt.Errorf("bumping revision: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.Notify()
	return nil
}

// fromNanos converts a stored Unix-nanosecond time.
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// cloneData copies data, so that neither the caller's slice nor the
// returned one aliases the other, and turns nil into an empty slice (the
// column is NOT NULL; nil would be bound as NULL).
func cloneData(data []byte) []byte {
	return append(make([]byte, 0, len(data)), data...)
}

func nonNil(data []byte) []byte {
	if data == nil {
		return []byte{}
	}
	return data
}
