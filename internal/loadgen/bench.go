package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshsds/meshsds/sds/token"
)

// BenchConfig configures Bench: for each fleet size, a fresh meshsds server
// and a load generator, each its own process.
type BenchConfig struct {
	// Meshsds is the meshsds binary; Load the meshsds-load binary.
	Meshsds, Load string
	DataPlanes    []int
	API           API
	// Auth is "dataplane-token" (tokens minted from the server's data dir)
	// or "none".
	Auth string
	// Settle is how long to wait after the storm before reading RSS;
	// IdleCPU how long to watch the idle server's CPU. Defaults 3s and 30s.
	Settle, IdleCPU time.Duration
	// ProfileDir, when set, receives the server's heap profile after the
	// storm and CPU profiles of the storm and of the rotation.
	ProfileDir string
	// TraceRotation takes an execution trace of the rotation instead of
	// its CPU profile (with ProfileDir).
	TraceRotation bool
	// Concurrency is how many data planes connect at once.
	Concurrency int
	// Client is the load generator's gRPC client (Config.Client).
	Client string
	// Log receives progress lines.
	Log io.Writer
	// Replicas, when above 1, runs that many servers sharing a PostgreSQL
	// database, the data planes spread over them, and makes the changes
	// through the first one's admin API (benchReplicas). NewDatabase
	// returns the URL of a new, empty database, one per fleet size.
	Replicas    int
	NewDatabase func() (string, error)
}

// BenchRow is one line of the bench table.
type BenchRow struct {
	DataPlanes int    `json:"dataplanes"`
	API        string `json:"api"`
	// Replicas is how many servers shared the fleet (their RSS summed).
	Replicas int `json:"replicas,omitempty"`
	// IdleRSS and LoadedRSS are the server's VmRSS in bytes before the
	// fleet connects and with the fleet connected, after a garbage
	// collection and the idle window; PerDPKiB is their difference per
	// data plane. StormRSS is the VmRSS a few seconds after the storm,
	// garbage included.
	IdleRSS       int64   `json:"idleRSS"`
	LoadedRSS     int64   `json:"loadedRSS"`
	PerDPKiB      float64 `json:"perDataplaneKiB"`
	StormRSS      int64   `json:"stormRSS"`
	StormPerDPKiB float64 `json:"stormPerDataplaneKiB"`
	// IdleCPUSeconds is the server's user+system CPU over IdleCPUWindow
	// with the whole fleet connected and nothing changing.
	IdleCPUSeconds float64 `json:"idleCPUSeconds"`
	IdleCPUWindow  float64 `json:"idleCPUWindowSeconds"`
	// Server are some of the server's own metrics once loaded (goroutines,
	// stack and heap in use), to explain RSS.
	Server map[string]float64 `json:"server,omitempty"`
	Report *Report            `json:"report"`
}

// Bench runs the bench for every size in cfg.DataPlanes, one after the
// other, and returns a row per size.
func Bench(ctx context.Context, cfg BenchConfig) ([]BenchRow, error) {
	if cfg.Settle <= 0 {
		cfg.Settle = 3 * time.Second
	}
	if cfg.IdleCPU <= 0 {
		cfg.IdleCPU = 30 * time.Second
	}
	if cfg.API == "" {
		cfg.API = APISotW
	}
	if cfg.Auth == "" {
		cfg.Auth = "dataplane-token"
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, err
		}
	}
	var rows []BenchRow
	for _, n := range cfg.DataPlanes {
		bench := benchOne
		if cfg.Replicas > 1 {
			bench = benchReplicas
		}
		row, err := bench(ctx, cfg, n)
		if err != nil {
			return rows, fmt.Errorf("%d data planes: %w", n, err)
		}
		rows = append(rows, *row)
	}
	return rows, nil
}

// benchServer is a running meshsds process.
type benchServer struct {
	cmd                      *exec.Cmd
	sds, metrics, admin      string
	dir, secretsDir, dataDir string
	exited                   chan error
}

func benchOne(ctx context.Context, cfg BenchConfig, n int) (*BenchRow, error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "bench %d: "+format+"\n", append([]any{n}, args...)...)
	}
	// A free port found here may be taken by another process before the
	// server binds it: try again then.
	var (
		srv *benchServer
		err error
	)
	for range 3 {
		if srv, err = startServer(ctx, cfg, nil, true); err == nil {
			break
		}
		logf("%v; trying again", err)
	}
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	pid := srv.cmd.Process.Pid

	time.Sleep(time.Second)
	srv.gc()
	time.Sleep(2 * time.Second)
	idle, err := readRSS(pid)
	if err != nil {
		return nil, err
	}
	logf("server ready, idle RSS %.1f MiB", float64(idle)/(1<<20))

	args := []string{
		"run", "--sds-address", srv.sds, "--dataplanes", strconv.Itoa(n), "--api", string(cfg.API),
		"--mesh-dir", filepath.Join(srv.secretsDir, "default"), "--rotations", "1", "--pause", "--json",
	}
	if cfg.Concurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(cfg.Concurrency))
	}
	if cfg.Client != "" {
		args = append(args, "--client", cfg.Client)
	}
	if cfg.Auth == "none" {
		args = append(args, "--auth", "none")
	} else {
		args = append(args, "--signing-key", filepath.Join(srv.dataDir, token.SigningKeyFile))
	}
	if cfg.ProfileDir != "" {
		args = append(args, "--cpu-profile", filepath.Join(cfg.ProfileDir, fmt.Sprintf("cpu-load-%d.pprof", n)))
	}
	var stormProfile chan error
	if cfg.ProfileDir != "" {
		stormProfile = srv.profile(filepath.Join(cfg.ProfileDir, fmt.Sprintf("cpu-storm-%d.pprof", n)), "profile?seconds=8")
	}
	load, err := startLoad(ctx, cfg, args)
	if err != nil {
		return nil, err
	}
	defer load.close()

	ev, err := load.next()
	if err != nil {
		return nil, err
	}
	if ev.Event != "pause" {
		return nil, fmt.Errorf("load generator: %s %s", ev.Event, ev.Error)
	}
	logf("served in %.2fs", ev.Report.StormSeconds)
	if stormProfile != nil {
		<-stormProfile
	}
	time.Sleep(cfg.Settle)
	stormRSS, err := readRSS(pid)
	if err != nil {
		return nil, err
	}
	// What the fleet costs, not the garbage of its arrival: two
	// collections now (a server does them by itself within minutes), then
	// the idle window, in which the runtime hands freed pages back, before
	// the RSS that counts is read.
	srv.gc()
	srv.gc() // the second one shrinks the stacks the first found oversized
	serverStats := srv.goStats()
	if cfg.ProfileDir != "" {
		<-srv.profile(filepath.Join(cfg.ProfileDir, fmt.Sprintf("heap-%d.pprof", n)), "heap")
	}
	logf("RSS %.1f MiB after the storm (%v); watching idle CPU for %s", float64(stormRSS)/(1<<20), serverStats, cfg.IdleCPU)
	cpu0, err := readCPU(pid)
	if err != nil {
		return nil, err
	}
	time.Sleep(cfg.IdleCPU)
	cpu1, err := readCPU(pid)
	if err != nil {
		return nil, err
	}
	loaded, err := readRSS(pid)
	if err != nil {
		return nil, err
	}
	logf("RSS %.1f MiB settled", float64(loaded)/(1<<20))
	// Each change: profile it (optionally), let the load generator make
	// it, and go on at its next pause, until it is done.
	for {
		var prof chan error
		if cfg.ProfileDir != "" {
			what, file := "profile?seconds=3", fmt.Sprintf("cpu-%s-%d.pprof", ev.Stage, n)
			if cfg.TraceRotation {
				what, file = "trace?seconds=3", fmt.Sprintf("trace-%s-%d.out", ev.Stage, n)
			}
			prof = srv.profile(filepath.Join(cfg.ProfileDir, file), what)
			time.Sleep(200 * time.Millisecond) // the profile has started
		}
		logf("change %s", ev.Stage)
		if err := load.resume(); err != nil {
			return nil, err
		}
		if ev, err = load.next(); err != nil {
			return nil, err
		}
		if prof != nil {
			<-prof
		}
		if ev.Event == "pause" {
			time.Sleep(time.Second) // the previous change is over
			continue
		}
		if ev.Event != "done" {
			return nil, fmt.Errorf("load generator: %s %s", ev.Event, ev.Error)
		}
		break
	}
	for k, v := range srv.pushLatency() {
		serverStats[k] = v
	}
	return &BenchRow{
		DataPlanes: n, API: string(cfg.API), IdleRSS: idle, LoadedRSS: loaded, StormRSS: stormRSS,
		PerDPKiB:       float64(loaded-idle) / 1024 / float64(n),
		StormPerDPKiB:  float64(stormRSS-idle) / 1024 / float64(n),
		IdleCPUSeconds: cpu1 - cpu0, IdleCPUWindow: cfg.IdleCPU.Seconds(),
		Server: serverStats, Report: ev.Report,
	}, nil
}

// loadProcess is the load generator run with --pause --json: its events
// are read one at a time, and resume ends a pause.
type loadProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events *bufio.Scanner
}

func startLoad(ctx context.Context, cfg BenchConfig, args []string) (*loadProcess, error) {
	cmd := exec.CommandContext(ctx, cfg.Load, args...)
	cmd.Stderr = cfg.Log
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the load generator: %w", err)
	}
	events := bufio.NewScanner(stdout)
	events.Buffer(make([]byte, 1<<20), 1<<20)
	return &loadProcess{cmd: cmd, stdin: stdin, events: events}, nil
}

// next returns the next event.
func (p *loadProcess) next() (*Event, error) {
	if !p.events.Scan() {
		if err := p.events.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("load generator ended early")
	}
	var ev Event
	if err := json.Unmarshal(p.events.Bytes(), &ev); err != nil {
		return nil, fmt.Errorf("load generator said %q: %w", p.events.Text(), err)
	}
	return &ev, nil
}

// resume ends the current pause.
func (p *loadProcess) resume() error {
	_, err := io.WriteString(p.stdin, "go\n")
	return err
}

// close lets the load generator close its streams and write its profile,
// then makes sure it is gone. (It waits only now: the process closes
// stdout, which is read until here.)
func (p *loadProcess) close() {
	_ = p.stdin.Close()
	exited := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
	}
}

// Event is a line the load generator prints with --json.
type Event struct {
	// Event is "pause" (waiting for a line on stdin), "done" or "error".
	Event  string  `json:"event"`
	Stage  string  `json:"stage,omitempty"`
	Report *Report `json:"report,omitempty"`
	Error  string  `json:"error,omitempty"`
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startServer runs "meshsds serve" in a fresh directory (with a mesh
// "default" in its files when withMesh) with extra flags and waits until it
// is ready.
func startServer(ctx context.Context, cfg BenchConfig, extra []string, withMesh bool) (*benchServer, error) {
	dir, err := os.MkdirTemp("", "meshsds-bench-")
	if err != nil {
		return nil, err
	}
	s := &benchServer{dir: dir, secretsDir: filepath.Join(dir, "secrets"), dataDir: filepath.Join(dir, "data"), exited: make(chan error, 1)}
	ca, err := NewMeshCA("meshsds-load 0", time.Now())
	if err != nil {
		return nil, err
	}
	if !withMesh {
		err = os.MkdirAll(s.secretsDir, 0o700)
	} else {
		err = WriteSecretsDir(s.secretsDir, "default", ca)
	}
	if err != nil {
		return nil, err
	}
	// The signing key is made before the server starts, as a file in its
	// data directory, which meshsds adopts: the load generator mints
	// tokens from the same file.
	if _, err := token.LoadOrCreateSigningKey(s.dataDir); err != nil {
		return nil, err
	}
	for _, p := range []*string{&s.sds, &s.metrics, &s.admin} {
		if *p, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{
		"serve", "--secrets-dir", s.secretsDir, "--data-dir", s.dataDir, "--sds-address", s.sds,
		"--metrics-address", s.metrics, "--admin-address", s.admin, "--pprof", "--log-level", "warn",
		"--auth", cfg.Auth,
	}
	s.cmd = exec.CommandContext(ctx, cfg.Meshsds, append(args, extra...)...)
	logFile, err := os.Create(filepath.Join(dir, "meshsds.log"))
	if err != nil {
		return nil, err
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting meshsds: %w", err)
	}
	go func() { s.exited <- s.cmd.Wait(); logFile.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-s.exited:
			s.exited <- err
			log, _ := os.ReadFile(logFile.Name())
			s.stop()
			return nil, fmt.Errorf("meshsds exited: %v: %s", err, bytes.TrimSpace(log[max(0, len(log)-500):]))
		default:
		}
		if resp, err := http.Get("http://" + s.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("meshsds not ready within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// profile fetches /debug/pprof/<what> into path in the background.
func (s *benchServer) profile(path, what string) chan error {
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + s.metrics + "/debug/pprof/" + what)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		done <- errors.Join(err, f.Close())
	}()
	return done
}

// pushLatency estimates quantiles of the server's own push latency
// histogram (source change to response written, over the whole run) and
// the mean time to issue a certificate.
func (s *benchServer) pushLatency() map[string]float64 {
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	type bucket struct{ le, n float64 }
	var buckets []bucket
	vals := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		if rest, ok := strings.CutPrefix(f[0], `meshsds_sds_push_latency_seconds_bucket{le="`); ok {
			le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
			if err == nil {
				buckets = append(buckets, bucket{le, v})
			}
			continue
		}
		vals[f[0]] = v
	}
	out := map[string]float64{}
	if n := vals["meshsds_certificate_issue_duration_seconds_count"]; n > 0 {
		out["issue_mean_seconds"] = vals["meshsds_certificate_issue_duration_seconds_sum"] / n
	}
	if len(buckets) > 0 {
		total := buckets[len(buckets)-1].n
		for _, q := range []float64{0.5, 0.99} {
			for _, b := range buckets {
				if b.n >= q*total {
					out[fmt.Sprintf("push_latency_p%02.0f_le", q*100)] = b.le
					break
				}
			}
		}
	}
	return out
}

// gc makes the server collect garbage, through pprof's heap endpoint.
func (s *benchServer) gc() {
	if resp, err := http.Get("http://" + s.metrics + "/debug/pprof/heap?gc=1"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// goStats scrapes a few Go runtime metrics of the server.
func (s *benchServer) goStats() map[string]float64 {
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	want := map[string]bool{
		"go_goroutines": true, "go_memstats_stack_inuse_bytes": true,
		"go_memstats_heap_inuse_bytes": true, "go_memstats_sys_bytes": true,
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && want[f[0]] {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out
}

// stop ends the server with SIGTERM (SIGKILL after 15s) and removes its
// directory.
func (s *benchServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		s.exited <- err
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
	}
	_ = os.RemoveAll(s.dir)
}

// readRSS returns a process's resident set size in bytes.
func readRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

// readCPU returns a process's user+system CPU time in seconds.
func readCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from after its ")".
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// PrintTable writes rows as the README's Markdown table.
func PrintTable(w io.Writer, rows []BenchRow) {
	fmt.Fprintln(w, "| data planes | streams | server RSS above idle per DP | all served (storm) | CA rotation p50 / p99 / max | bundle-only p50 / p99 / max | idle CPU | errors | NACKs |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		rep := r.Report
		ca, _ := rep.Change(ChangeCA)
		b, _ := rep.Change(ChangeBundle)
		id, bundle := ca.Identity, b.Bundle
		size, idle := strconv.Itoa(r.DataPlanes), fmt.Sprintf("%.2f s / %.0f s", r.IdleCPUSeconds, r.IdleCPUWindow)
		if r.Replicas > 1 {
			// RSS summed over the replicas; changes through one of them.
			size, idle = fmt.Sprintf("%d on %d replicas", r.DataPlanes, r.Replicas), "-"
		}
		fmt.Fprintf(w, "| %s | %d | %.1f KiB | %.2f s | %.2f / %.2f / %.2f s | %.2f / %.2f / %.2f s | %s | %d | %d |\n",
			size, rep.Streams, r.PerDPKiB, rep.StormSeconds,
			id.P50, id.P99, id.Max, bundle.P50, bundle.P99, bundle.Max,
			idle, rep.Errors+rep.CheckFailures, rep.NACKs)
	}
	for _, r := range rows {
		if b, ok := r.Report.Change(ChangeBundle); ok && b.Elsewhere != nil && r.Replicas > 1 {
			e := b.Elsewhere
			fmt.Fprintf(w, "\n%d on %d replicas, propagation: the bundle written through the first replica held by the %d data planes of the others in p50 / p99 / max %.2f / %.2f / %.2f s\n",
				r.DataPlanes, r.Replicas, e.Count, e.P50, e.P99, e.Max)
		}
		if fo := r.Report.Failover; fo != nil {
			fmt.Fprintf(w, "\n%d on %d replicas, one killed: %d data planes served again by the others in p50 / p99 / max %.2f / %.2f / %.2f s, %d still down\n",
				r.DataPlanes, r.Replicas, fo.Served.Count, fo.Served.P50, fo.Served.P99, fo.Served.Max, fo.Down)
		}
	}
}
