// Package pgtest runs a real PostgreSQL server for tests: initdb into a
// temporary directory, then postgres listening on a free 127.0.0.1 port and
// on a Unix socket in that directory, with trust authentication for the
// superuser "postgres". The server is stopped and its directory removed when
// the test ends (Start) or when the test binary calls StopShared (Shared).
//
// The binaries are those of Debian's postgresql package, found in the newest
// /usr/lib/postgresql/<version>/bin, in $MESHSDS_PG_BIN, or on PATH. When
// they are missing a test is skipped with the command that installs them,
// except in CI (CI is set in the environment), where it fails. PostgreSQL
// refuses to run as root; as root, initdb and postgres run as the system
// user "postgres" that the package creates.
//
// The cluster's default collation is ICU "en", not byte order, so that a
// query that forgets COLLATE "C" sorts visibly wrong in tests. Durability
// is switched off (fsync, full_page_writes): the data is thrown away.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshsds/meshsds/internal/testing/testenv"
)

// BinDirEnv names the environment variable that overrides the directory of
// initdb and postgres.
const BinDirEnv = "MESHSDS_PG_BIN"

// Superuser is the role that every URL of a Server connects as.
const Superuser = "postgres"

// installHint is how to get the binaries on Debian and Ubuntu.
const installHint = "apt-get install -y postgresql"

// Bounds of the waits, generous for a loaded two-core CI machine.
const (
	initdbTimeout = 2 * time.Minute
	readyTimeout  = time.Minute
	stopTimeout   = 15 * time.Second
	adminTimeout  = 30 * time.Second
	// portAttempts bounds the retries when another process takes the free
	// port between our probe and postgres' bind.
	portAttempts = 5
)

// Server is a running PostgreSQL server. Its methods are safe for
// concurrent use.
type Server struct {
	dir  string // temporary directory: data/, sockets, logs
	port int
	proc *process
	seq  atomic.Int64 // database name suffixes

	stopOnce sync.Once
}

// Start starts a server for tb and stops it when tb ends. It fails tb if
// the server does not accept connections within a minute, and skips it
// (fails it in CI) if PostgreSQL is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := binDir(tb)
	s, err := start(bin)
	if err != nil {
		tb.Fatalf("starting PostgreSQL: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("last lines of the PostgreSQL log:\n%s", s.logTail(40))
		}
		s.Stop()
	})
	return s
}

// shared is the server of Shared, started on first use.
var shared struct {
	mu  sync.Mutex
	srv *Server
	err error
}

// Shared returns one server for the whole test binary, starting it on the
// first call; the binary's TestMain must call StopShared after m.Run. Tests
// isolate themselves with NewDatabase.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	bin := binDir(tb)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = start(bin)
	}
	if shared.err != nil {
		tb.Fatalf("starting PostgreSQL: %v", shared.err)
	}
	return shared.srv
}

// StopShared stops the server of Shared, if it was started.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		shared.srv.Stop()
	}
}

// binDir returns the directory of initdb and postgres, skipping (or, in CI,
// failing) tb when there is none.
func binDir(tb testing.TB) string {
	tb.Helper()
	dir, err := findBinDir()
	if err == nil {
		return dir
	}
	testenv.Missing(tb, fmt.Sprintf("PostgreSQL is not installed (%v): run `%s`, or set %s to the directory of initdb and postgres", err, installHint, BinDirEnv))
	return ""
}

func findBinDir() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("%s=%s has no initdb and postgres", BinDirEnv, dir)
		}
		return dir, nil
	}
	// Debian's layout, newest major version first.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(dir string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		return n
	}
	slices.SortFunc(dirs, func(a, b string) int { return major(b) - major(a) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	return "", errors.New("no initdb and postgres in /usr/lib/postgresql/*/bin or on PATH")
}

// osUser is the account postgres runs as when we are root.
type osUser struct{ uid, gid uint32 }

func runAs() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and postgres refuses to: the system user \"postgres\" (created by the postgresql package) is needed to run it: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &osUser{uid: uint32(uid), gid: uint32(gid)}, nil
}

func start(bin string) (_ *Server, err error) {
	as, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	if as != nil {
		if err := os.Chown(dir, int(as.uid), int(as.gid)); err != nil {
			return nil, err
		}
	}
	s := &Server{dir: dir}

	ctx, cancel := context.WithTimeout(context.Background(), initdbTimeout)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"--pgdata", s.path("data"),
		"--username", Superuser,
		"--auth", "trust",
		"--encoding", "UTF8",
		"--locale", "C.UTF-8",
		"--locale-provider", "icu",
		"--icu-locale", "en",
		"--no-sync",
	)
	var out bytes.Buffer
	initdb.Stdout, initdb.Stderr = &out, &out
	if err := setProcAttr(initdb, as); err != nil {
		return nil, err
	}
	if err := initdb.Run(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out.String())
	}

	for attempt := 1; ; attempt++ {
		port, err := testenv.FreePort()
		if err != nil {
			return nil, err
		}
		s.port = port
		s.proc, err = startProcess(s.path("postgres.log"), as, filepath.Join(bin, "postgres"),
			"-D", s.path("data"),
			"-p", strconv.Itoa(port),
			"-c", "listen_addresses=127.0.0.1",
			"-c", "unix_socket_directories="+dir,
			"-c", "max_connections=200",
			"-c", "shared_buffers=32MB",
			"-c", "fsync=off",
			"-c", "full_page_writes=off",
			"-c", "synchronous_commit=off",
		)
		if err != nil {
			return nil, err
		}
		err = s.waitReady()
		if err == nil {
			return s, nil
		}
		s.proc.stop(stopTimeout)
		if attempt < portAttempts && strings.Contains(s.logTail(20), "Address already in use") {
			continue
		}
		return nil, fmt.Errorf("%w\n%s", err, s.logTail(40))
	}
}

func (s *Server) path(name string) string { return filepath.Join(s.dir, name) }

// waitReady polls until the server accepts a connection, it exits, or
// readyTimeout passes.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			err = conn.Ping(ctx)
			_ = conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.proc.exited:
			return fmt.Errorf("postgres exited before accepting connections: %v", s.proc.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within %s: %w", readyTimeout, err)
		}
	}
}

// URL returns the URL of database db over TCP on 127.0.0.1.
func (s *Server) URL(db string) string {
	return (&url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}).String()
}

// SocketURL returns the URL of database db over the server's Unix socket.
func (s *Server) SocketURL(db string) string {
	q := url.Values{}
	q.Set("host", s.dir)
	q.Set("port", strconv.Itoa(s.port))
	q.Set("sslmode", "disable")
	return (&url.URL{Scheme: "postgres", User: url.User(Superuser), Path: "/" + db, RawQuery: q.Encode()}).String()
}

// Port returns the server's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// notIdentifier matches what a test name may hold that a database name
// should not.
var notIdentifier = regexp.MustCompile(`[^a-z0-9]+`)

// NewDatabase creates an empty database for tb, named after it, and returns
// its URL (TCP). The database is dropped when tb ends, after the cleanups
// registered later (which close the connections to it).
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := strings.Trim(notIdentifier.ReplaceAllString(strings.ToLower(tb.Name()), "_"), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	name = fmt.Sprintf("t%d_%s", s.seq.Add(1), name)
	s.Exec(tb, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	tb.Cleanup(func() {
		s.Exec(tb, "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return s.URL(name)
}

// Exec runs a statement as the superuser in database db, failing tb on
// error.
func (s *Server) Exec(tb testing.TB, db, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		tb.Fatalf("connecting to database %s: %v", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// Stop stops the server (fast shutdown, then SIGKILL) and removes its
// directory. Later calls do nothing.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.proc.stop(stopTimeout)
		_ = os.RemoveAll(s.dir)
	})
}

// logTail returns the last n lines of the server's log.
func (s *Server) logTail(n int) string {
	data, err := os.ReadFile(s.path("postgres.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// process is a started postgres whose output goes to a log file.
type process struct {
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{}
	err    error
}

func startProcess(logPath string, as *osUser, bin string, args ...string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := setProcAttr(cmd, as); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &process{cmd: cmd, log: f, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop asks for a fast shutdown (SIGINT: roll back, disconnect, exit), then
// kills after grace, and waits for the exit.
func (p *process) stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	_ = p.log.Close()
}
