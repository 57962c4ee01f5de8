// Command envoybench measures meshsds serving real Envoys (make bench-envoy):
// N Envoy 1.40 processes (--concurrency 1 each, one SotW stream per secret
// through envoy_grpc, as examples/envoy does) against a fresh meshsds, and
// the same N with the load generator (meshsds-load bench) in the same run,
// so that the two columns can be compared.
//
// For the Envoys it reports the time from the first launch until every
// Envoy's admin /certs shows both secrets; the server's RSS above its idle
// size per Envoy, measured as the load generator measures it (two garbage
// collections, then an idle window, then VmRSS); and, for a CA change
// written as operators write it (ca-cert, then ca-key, renamed into place),
// the time until every Envoy trusts the new root and until every Envoy
// holds a certificate of the new CA trusting only the new root.
//
// Everything runs on loopback, bounded in time; the Envoys and the server
// are stopped at the end.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshsds/meshsds/internal/loadgen"
	"github.com/meshsds/meshsds/internal/testing/envoytest"
	"github.com/meshsds/meshsds/sds/token"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.meshsds, "meshsds", "bin/meshsds", "the meshsds binary")
	flag.StringVar(&cfg.load, "load", "bin/meshsds-load", "the meshsds-load binary; empty skips the load generator's run")
	flag.StringVar(&cfg.envoy, "envoy", "", "the Envoy binary (default: $MESHSDS_ENVOY, .tools/envoy/bin/envoy, PATH)")
	flag.IntVar(&cfg.n, "envoys", 100, "how many Envoys")
	flag.DurationVar(&cfg.settle, "settle", 3*time.Second, "wait after the storm before the garbage collections")
	flag.DurationVar(&cfg.idle, "idle", 30*time.Second, "idle window before the RSS that counts (the load generator's --idle-cpu)")
	flag.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "bound of each wait")
	flag.StringVar(&cfg.jsonOut, "json-out", "", "also write the results as JSON to this file")
	flag.BoolVar(&cfg.nodeFirstOnly, "node-first-only", false, "Envoys send their node on the first request of a stream only (set_node_on_first_message_only)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg)
	if res != nil {
		printResults(os.Stdout, cfg, res)
		if cfg.jsonOut != "" {
			if data, err := json.MarshalIndent(res, "", "  "); err == nil {
				_ = os.WriteFile(cfg.jsonOut, data, 0o644)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "envoybench:", err)
		os.Exit(1)
	}
}

type config struct {
	meshsds, load, envoy string
	n                    int
	settle, idle         time.Duration
	timeout              time.Duration
	jsonOut              string
	nodeFirstOnly        bool
}

// results are both runs' numbers.
type results struct {
	Envoys int `json:"envoys"`
	// WarmSeconds: first launch → every Envoy's /certs shows both secrets.
	WarmSeconds float64 `json:"warmSeconds"`
	// LaunchSeconds: first launch → the last Envoy process started.
	LaunchSeconds float64 `json:"launchSeconds"`
	// ServedP50 and ServedMax: an Envoy's own launch → its second secret
	// applied (its sds.*.update_time), over the Envoys.
	ServedP50 float64 `json:"servedP50Seconds"`
	ServedMax float64 `json:"servedMaxSeconds"`
	// ServerStormCPUSeconds is meshsds' CPU time from before the first
	// launch until all were warm.
	ServerStormCPUSeconds float64 `json:"serverStormCpuSeconds"`
	IdleRSS               int64   `json:"idleRSS"`
	StormRSS              int64   `json:"stormRSS"`
	LoadedRSS             int64   `json:"loadedRSS"`
	PerEnvoyKiB           float64 `json:"perEnvoyKiB"`
	// EnvoyRSSMiB is the mean VmRSS of an Envoy process, for scale.
	EnvoyRSSMiB float64            `json:"envoyRssMiB"`
	Server      map[string]float64 `json:"server"`
	// BundleSeconds: the last rename of the CA change → every Envoy trusts
	// the new root; CASeconds → every Envoy holds a certificate of the new
	// CA and trusts only the new root.
	BundleSeconds float64 `json:"bundleSeconds"`
	CASeconds     float64 `json:"caSeconds"`
	NACKs         uint64  `json:"updateRejected"`
	// TxBytes and RxBytes are what an Envoy sent to and received from
	// meshsds on average, from the start to the end of the CA change.
	TxBytes float64 `json:"envoyTxBytes"`
	RxBytes float64 `json:"envoyRxBytes"`
	// Requests is how many DiscoveryRequests an Envoy sent on average.
	Requests float64 `json:"envoyRequests"`
	// Load is the load generator's row for the same N (nil when skipped).
	Load *loadgen.BenchRow `json:"load,omitempty"`
}

func run(ctx context.Context, cfg config) (*results, error) {
	if cfg.envoy == "" {
		p, err := envoytest.FindBinary()
		if err != nil {
			return nil, fmt.Errorf("%w: run make envoy-tools", err)
		}
		cfg.envoy = p
	}
	res := &results{Envoys: cfg.n}
	if err := benchEnvoys(ctx, cfg, res); err != nil {
		return res, err
	}
	if cfg.load != "" {
		row, err := benchLoad(ctx, cfg)
		if err != nil {
			return res, fmt.Errorf("load generator: %w", err)
		}
		res.Load = row
	}
	return res, nil
}

// server is the meshsds under test.
type server struct {
	cmd                          *exec.Cmd
	sds, metrics, admin, dataDir string
	exited                       chan error
}

func benchEnvoys(ctx context.Context, cfg config, res *results) error {
	dir, err := os.MkdirTemp("", "envoybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	secrets := filepath.Join(dir, "secrets")
	ca, err := loadgen.NewMeshCA("envoybench", time.Now())
	if err != nil {
		return err
	}
	if err := loadgen.WriteSecretsDir(secrets, "default", ca); err != nil {
		return err
	}
	srv, err := startServer(ctx, cfg.meshsds, secrets, filepath.Join(dir, "data"))
	if err != nil {
		return err
	}
	defer srv.stop()
	key, err := token.LoadOrCreateSigningKey(srv.dataDir)
	if err != nil {
		return err
	}
	issuer := token.NewIssuer(key)
	_, sdsPort, _ := net.SplitHostPort(srv.sds)

	srv.gc()
	srv.gc()
	time.Sleep(cfg.settle)
	if res.IdleRSS, err = readRSS(srv.pid()); err != nil {
		return err
	}
	cpu0, err := readCPU(srv.pid())
	if err != nil {
		return err
	}

	// Launch every Envoy, then wait for all to hold their secrets.
	envoys := make([]*envoytest.Envoy, cfg.n)
	defer func() {
		var wg sync.WaitGroup
		for _, e := range envoys {
			if e != nil {
				wg.Go(e.Stop)
			}
		}
		wg.Wait()
	}()
	fmt.Fprintf(os.Stderr, "envoybench: launching %d Envoys\n", cfg.n)
	began := time.Now()
	launched := make([]time.Time, cfg.n)
	for i := range envoys {
		name := fmt.Sprintf("dp-%d", i)
		tok, err := issuer.Issue(token.Claims{Mesh: "default", Name: name, Tags: map[string][]string{"kuma.io/service": {"web"}}}, 24*time.Hour, time.Now())
		if err != nil {
			return err
		}
		launched[i] = time.Now()
		envoys[i], err = envoytest.Launch(envoytest.Config{
			Binary: cfg.envoy, Name: name, LogLevel: "warn",
			Bootstrap: fmt.Sprintf(bootstrap, name, tok, sdsPort, cfg.nodeFirstOnly),
		})
		if err != nil {
			return err
		}
	}
	res.LaunchSeconds = time.Since(began).Seconds()
	root := envoytest.SerialHex(ca.Root.Cert.SerialNumber)
	if err := waitAll(ctx, envoys, cfg.timeout, func(c *envoytest.Certs) bool {
		return c.Holds(1, "spiffe://default/web", root)
	}); err != nil {
		return fmt.Errorf("warming: %w", err)
	}
	res.WarmSeconds = time.Since(began).Seconds()
	cpu1, _ := readCPU(srv.pid())
	res.ServerStormCPUSeconds = cpu1 - cpu0
	served := make([]float64, 0, cfg.n)
	for i, e := range envoys {
		st, err := e.Stats(`^sds\..*\.update_time$`)
		if err != nil {
			return err
		}
		last := max(st["sds.identity_cert.update_time"], st["sds.mesh_ca.update_time"])
		served = append(served, time.UnixMilli(int64(last)).Sub(launched[i]).Seconds())
	}
	slices.Sort(served)
	res.ServedP50, res.ServedMax = served[len(served)/2], served[len(served)-1]
	fmt.Fprintf(os.Stderr, "envoybench: %d Envoys warm in %.2f s; settling, collecting garbage, %s idle\n", cfg.n, res.WarmSeconds, cfg.idle)

	time.Sleep(cfg.settle)
	if res.StormRSS, err = readRSS(srv.pid()); err != nil {
		return err
	}
	srv.gc()
	srv.gc()
	res.Server = srv.goStats()
	time.Sleep(cfg.idle)
	if res.LoadedRSS, err = readRSS(srv.pid()); err != nil {
		return err
	}
	res.PerEnvoyKiB = float64(res.LoadedRSS-res.IdleRSS) / float64(cfg.n) / 1024
	var envoyRSS int64
	for _, e := range envoys {
		r, _ := readRSS(e.PID())
		envoyRSS += r
	}
	res.EnvoyRSSMiB = float64(envoyRSS) / float64(cfg.n) / (1 << 20)

	// The CA change.
	leaves := make([]string, cfg.n)
	for i, e := range envoys {
		c, err := e.Certs()
		if err != nil {
			return err
		}
		leaves[i] = c.LeafSerials()[0]
	}
	next, err := loadgen.NewMeshCA("envoybench 2", time.Now())
	if err != nil {
		return err
	}
	newRoot := envoytest.SerialHex(next.Root.Cert.SerialNumber)
	changed, err := loadgen.ReplaceFiles(filepath.Join(secrets, "default"), ca, next)
	if err != nil {
		return err
	}
	var bundleDone sync.Once
	bundleAt := make(chan time.Time, 1)
	trustsNew := make([]bool, cfg.n)
	var mu sync.Mutex
	err = waitAllIndexed(ctx, envoys, cfg.timeout, func(i int, c *envoytest.Certs) bool {
		mu.Lock()
		defer mu.Unlock()
		if !trustsNew[i] && slices.Contains(c.CASerials(), newRoot) {
			trustsNew[i] = true
			if !slices.Contains(trustsNew, false) {
				bundleDone.Do(func() { bundleAt <- time.Now() })
			}
		}
		return c.Holds(1, "spiffe://default/web", newRoot) && c.LeafSerials()[0] != leaves[i]
	})
	if err != nil {
		return fmt.Errorf("CA change: %w", err)
	}
	res.CASeconds = time.Since(changed).Seconds()
	select {
	case at := <-bundleAt:
		res.BundleSeconds = at.Sub(changed).Seconds()
	default:
		res.BundleSeconds = res.CASeconds
	}
	var tx, rx, reqs uint64
	for _, e := range envoys {
		if s, err := e.SDS(); err == nil {
			res.NACKs += s.UpdateRejected
		}
		st, err := e.Stats(`^(cluster\.meshsds\.upstream_cx_(tx|rx)_bytes_total|sds\..*\.update_attempt)$`)
		if err != nil {
			return err
		}
		tx += st["cluster.meshsds.upstream_cx_tx_bytes_total"]
		rx += st["cluster.meshsds.upstream_cx_rx_bytes_total"]
		reqs += st["sds.identity_cert.update_attempt"] + st["sds.mesh_ca.update_attempt"]
	}
	res.TxBytes, res.RxBytes = float64(tx)/float64(cfg.n), float64(rx)/float64(cfg.n)
	res.Requests = float64(reqs) / float64(cfg.n)
	return nil
}

// bootstrap is one bench Envoy: node default.<name>, a TLS listener on a
// port the kernel picks whose certificate and trust come from meshsds
// over SotW SDS through envoy_grpc (one stream per secret), as
// examples/envoy/bootstrap.yaml asks for them.
const bootstrap = `
node: { id: default.%[1]s, cluster: web }
static_resources:
  listeners:
  - name: mtls
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: identity_cert
              sds_config: &sds
                resource_api_version: V3
                api_config_source:
                  api_type: GRPC
                  transport_api_version: V3
                  set_node_on_first_message_only: %[4]t
                  grpc_services:
                  - envoy_grpc: { cluster_name: meshsds }
                    initial_metadata: [ { key: authorization, value: "Bearer %[2]s" } ]
            validation_context_sds_secret_config: { name: mesh_ca, sds_config: *sds }
      filters:
      - name: envoy.filters.network.echo
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo }
  clusters:
  - name: meshsds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options:
            connection_keepalive: { interval: 30s, timeout: 5s }
    load_assignment:
      cluster_name: meshsds
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %[3]s } } }
`

// waitAll polls every Envoy's /certs (8 at a time) until ok holds for all.
func waitAll(ctx context.Context, envoys []*envoytest.Envoy, timeout time.Duration, ok func(*envoytest.Certs) bool) error {
	return waitAllIndexed(ctx, envoys, timeout, func(_ int, c *envoytest.Certs) bool { return ok(c) })
}

func waitAllIndexed(ctx context.Context, envoys []*envoytest.Envoy, timeout time.Duration, ok func(int, *envoytest.Certs) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := make([]int, len(envoys))
	for i := range pending {
		pending[i] = i
	}
	for len(pending) > 0 {
		var (
			mu   sync.Mutex
			left []int
			wg   sync.WaitGroup
			sem  = make(chan struct{}, 8)
		)
		for _, i := range pending {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				select {
				case <-envoys[i].Exited():
					mu.Lock()
					left = append(left, -1-i)
					mu.Unlock()
					return
				default:
				}
				c, err := envoys[i].Certs()
				if err == nil && ok(i, c) {
					return
				}
				mu.Lock()
				left = append(left, i)
				mu.Unlock()
			})
		}
		wg.Wait()
		for _, i := range left {
			if i < 0 {
				e := envoys[-1-i]
				return fmt.Errorf("%s exited: %v\n%s", e.Name(), e.ExitErr(), e.LogTail(20))
			}
		}
		pending = left
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			e := envoys[pending[0]]
			return fmt.Errorf("%d Envoys still waiting after %s, e.g. %s:\n%s", len(pending), timeout, e.Name(), e.LogTail(20))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// benchLoad runs the load generator's bench for the same fleet size.
func benchLoad(ctx context.Context, cfg config) (*loadgen.BenchRow, error) {
	out, err := os.CreateTemp("", "envoybench-load-*.json")
	if err != nil {
		return nil, err
	}
	out.Close()
	defer os.Remove(out.Name())
	fmt.Fprintf(os.Stderr, "envoybench: the load generator with %d data planes\n", cfg.n)
	cmd := exec.CommandContext(ctx, cfg.load, "bench", "--meshsds", cfg.meshsds, "--dataplanes", strconv.Itoa(cfg.n),
		"--settle", cfg.settle.String(), "--idle-cpu", cfg.idle.String(), "--json-out", out.Name())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(out.Name())
	if err != nil {
		return nil, err
	}
	var rows []loadgen.BenchRow
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, err
	}
	if len(rows) != 1 {
		return nil, fmt.Errorf("%d rows from the load generator", len(rows))
	}
	return &rows[0], nil
}

func printResults(w io.Writer, cfg config, r *results) {
	fmt.Fprintf(w, "\n%d data planes, one HTTP/2 connection each with a SotW stream per secret (identity_cert, mesh_ca), against a fresh meshsds:\n\n", r.Envoys)
	fmt.Fprintln(w, "| client | all served | server RSS above idle per DP | CA change: all on the new CA | NACKs |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	fmt.Fprintf(w, "| Envoy %s (--concurrency 1) | %.2f s | %.1f KiB | %.2f s | %d |\n",
		envoytest.Version, r.WarmSeconds, r.PerEnvoyKiB, r.CASeconds, r.NACKs)
	if l := r.Load; l != nil {
		ca, _ := l.Report.Change(loadgen.ChangeCA)
		fmt.Fprintf(w, "| meshsds-load (h2) | %.2f s | %.1f KiB | %.2f s | %d |\n",
			l.Report.StormSeconds, l.PerDPKiB, ca.Identity.Max, l.Report.NACKs)
	}
	fmt.Fprintf(w, "\nEnvoys: each sent meshsds %.1f KiB in %.1f requests (set_node_on_first_message_only %t) and received %.1f KiB.\n",
		r.TxBytes/1024, r.Requests, cfg.nodeFirstOnly, r.RxBytes/1024)
	fmt.Fprintf(w, "Envoys: each served %.2f s (p50), %.2f s (max) after its own launch; all launched %.2f s after the first; meshsds used %.2f s of CPU until all were served; "+
		"the new root was trusted everywhere %.2f s after the change.\n", r.ServedP50, r.ServedMax, r.LaunchSeconds, r.ServerStormCPUSeconds, r.BundleSeconds)
	if l := r.Load; l != nil {
		b, _ := l.Report.Change(loadgen.ChangeBundle)
		fmt.Fprintf(w, "Load generator: bundle-only change %.2f s (max).\n", b.Bundle.Max)
		if l.PerDPKiB > 0 {
			fmt.Fprintf(w, "Memory per data plane, Envoy / load generator: %.2f×\n", r.PerEnvoyKiB/l.PerDPKiB)
		}
	}
	fmt.Fprintf(w, "\nserver with the Envoys (after GC): %s\n", formatStats(r.Server))
	if r.Load != nil {
		fmt.Fprintf(w, "server with the load generator (after GC): %s\n", formatStats(r.Load.Server))
	}
	fmt.Fprintf(w, "server VmRSS idle %.1f MiB, after the storm %.1f MiB, loaded %.1f MiB; an Envoy's own VmRSS %.1f MiB on average\n",
		mib(r.IdleRSS), mib(r.StormRSS), mib(r.LoadedRSS), r.EnvoyRSSMiB)
}

func formatStats(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		v := m[k]
		if strings.HasSuffix(k, "_bytes") {
			fmt.Fprintf(&b, "%s %.1f MiB  ", strings.TrimPrefix(k, "go_memstats_"), v/(1<<20))
		} else {
			fmt.Fprintf(&b, "%s %.0f  ", strings.TrimPrefix(k, "go_"), v)
		}
	}
	return strings.TrimSpace(b.String())
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startServer(ctx context.Context, bin, secrets, dataDir string) (*server, error) {
	s := &server{dataDir: dataDir, exited: make(chan error, 1)}
	// The signing key file first: meshsds adopts it, and tokens are minted
	// from it here.
	if _, err := token.LoadOrCreateSigningKey(dataDir); err != nil {
		return nil, err
	}
	for _, p := range []*string{&s.sds, &s.metrics, &s.admin} {
		var err error
		if *p, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	s.cmd = exec.CommandContext(ctx, bin, "serve", "--secrets-dir", secrets, "--data-dir", dataDir,
		"--sds-address", s.sds, "--metrics-address", s.metrics, "--admin-address", s.admin, "--pprof", "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-s.exited:
			return nil, fmt.Errorf("meshsds exited: %v", err)
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

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// gc makes the server collect garbage, through pprof's heap endpoint.
func (s *server) gc() {
	if resp, err := http.Get("http://" + s.metrics + "/debug/pprof/heap?gc=1"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// goStats scrapes a few of the server's runtime and SDS metrics.
func (s *server) goStats() map[string]float64 {
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	want := map[string]bool{
		"go_goroutines": true, "go_memstats_stack_inuse_bytes": true,
		"go_memstats_heap_inuse_bytes": true, "meshsds_sds_connections": true,
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

// readRSS returns a process's VmRSS in bytes.
func readRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// readCPU returns a process's user+system CPU time in seconds.
func readCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100, nil
}
