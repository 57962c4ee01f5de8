package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/meshsds/meshsds/internal/reconcile"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource/file"
)

// serveConfig is everything "meshsds serve" is told, after flags,
// environment and config file are combined.
type serveConfig struct {
	configFile          string
	secretsDirs         []string
	dataDir             string
	sdsAddress          string
	adminAddress        string
	metricsAddress      string
	auth                string
	sdsTLSCert          string
	sdsTLSKey           string
	sdsInsecure         bool
	adminTLSAddress     string
	adminTLSCert        string
	adminTLSKey         string
	adminClientCertsDir string
	kubernetes          bool
	namespace           string
	kubeconfig          string
	store               string
	postgresURL         string
	logLevel            string
	logFormat           string
	pprof               bool
	shutdownTimeout     time.Duration
}

func newServeCommand() *cobra.Command {
	cmd, _ := serveCommand()
	return cmd
}

// serveCommand builds "meshsds serve" and the config its flags fill.
func serveCommand() (*cobra.Command, *serveConfig) {
	cfg := &serveConfig{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the meshsds daemon (SDS server, sources, metrics)",
		Long: `Run the meshsds daemon.

Every flag can also be set with the environment variable MESHSDS_<FLAG> (upper
case, dashes as underscores, e.g. MESHSDS_SECRETS_DIR) or as a key of the YAML
file given by --config (keys are the flag names). Flags win over the
environment, which wins over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyLayers(cmd.Flags(), cfg.configFile, os.Getenv); err != nil {
				return err
			}
			if err := cfg.validate(); err != nil {
				return err
			}
			return runServe(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.configFile, "config", "", "YAML file with settings; keys are these flag names")
	f.StringArrayVar(&cfg.secretsDirs, "secrets-dir", nil, "directory of Secret and Mesh manifests and raw secret files <dir>/<mesh>/<name>, watched for changes (repeatable; the first wins a conflict)")
	f.StringVar(&cfg.dataDir, "data-dir", "./meshsds-data", "directory for meshsds' own state (the dataplane token signing key)")
	f.StringVar(&cfg.sdsAddress, "sds-address", "127.0.0.1:5677", "SDS gRPC address: host:port or unix:///path")
	f.StringVar(&cfg.adminAddress, "admin-address", "127.0.0.1:5681", "admin HTTP address (plain HTTP, loopback only)")
	f.StringVar(&cfg.metricsAddress, "metrics-address", ":5680", "address of /metrics, /healthz and /readyz")
	f.StringVar(&cfg.auth, "auth", "dataplane-token", "SDS authentication: dataplane-token, or none (local development only)")
	f.StringVar(&cfg.sdsTLSCert, "sds-tls-cert", "", "PEM certificate chain the SDS server presents (enables TLS)")
	f.StringVar(&cfg.sdsTLSKey, "sds-tls-key", "", "PEM private key of --sds-tls-cert")
	f.BoolVar(&cfg.sdsInsecure, "sds-insecure", false, "allow plain-text SDS on a non-loopback TCP address")
	f.StringVar(&cfg.adminTLSAddress, "admin-tls-address", "", "admin HTTPS address for remote access with client certificates (not yet supported)")
	f.StringVar(&cfg.adminTLSCert, "admin-tls-cert", "", "PEM certificate of the admin HTTPS server (not yet supported)")
	f.StringVar(&cfg.adminTLSKey, "admin-tls-key", "", "PEM key of the admin HTTPS server (not yet supported)")
	f.StringVar(&cfg.adminClientCertsDir, "admin-client-certs-dir", "", "directory of *.pem CAs that admin clients' certificates must chain to (not yet supported)")
	f.BoolVar(&cfg.kubernetes, "kubernetes", false, "read Secrets and Meshes from Kubernetes (not yet supported)")
	f.StringVar(&cfg.namespace, "namespace", "kuma-system", "Kubernetes namespace of the control plane's Secrets")
	f.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration when empty")
	f.StringVar(&cfg.store, "store", "sqlite", "durable store of the admin API: sqlite or postgres (not yet used)")
	f.StringVar(&cfg.postgresURL, "postgres-url", "", "PostgreSQL connection URL for --store postgres (not yet supported)")
	f.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&cfg.logFormat, "log-format", "text", "log format: text or json")
	f.BoolVar(&cfg.pprof, "pprof", false, "serve /debug/pprof/ on the metrics address")
	f.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long to let streams and requests finish on shutdown")
	return cmd, cfg
}

// validate checks the combination of settings before anything starts.
func (c *serveConfig) validate() error {
	switch c.auth {
	case "dataplane-token", "none":
	default:
		return fmt.Errorf("--auth must be dataplane-token or none, not %q", c.auth)
	}
	if len(c.secretsDirs) == 0 {
		return errors.New("no secret source: give --secrets-dir DIR (the admin API store and Kubernetes sources are not available yet)")
	}
	for _, unsupported := range []struct {
		set  bool
		flag string
	}{
		{c.kubernetes, "--kubernetes"},
		{c.adminTLSAddress != "" || c.adminTLSCert != "" || c.adminTLSKey != "" || c.adminClientCertsDir != "", "--admin-tls-*"},
		{c.store == "postgres" || c.postgresURL != "", "--store postgres"},
	} {
		if unsupported.set {
			return fmt.Errorf("%s is not supported by this version of meshsds yet", unsupported.flag)
		}
	}
	if c.store != "sqlite" && c.store != "postgres" {
		return fmt.Errorf("--store must be sqlite or postgres, not %q", c.store)
	}
	if (c.sdsTLSCert == "") != (c.sdsTLSKey == "") {
		return errors.New("--sds-tls-cert and --sds-tls-key go together")
	}
	if c.sdsTLSCert == "" && !c.sdsInsecure && !strings.HasPrefix(c.sdsAddress, "unix://") && !isLoopback(c.sdsAddress) {
		return fmt.Errorf("--sds-address %s is not a loopback address: give --sds-tls-cert and --sds-tls-key, or --sds-insecure to serve plain text anyway", c.sdsAddress)
	}
	if c.adminAddress != "" && !isLoopback(c.adminAddress) {
		return fmt.Errorf("--admin-address %s is not a loopback address: plain-HTTP admin access is only allowed from this machine", c.adminAddress)
	}
	if _, err := parseLevel(c.logLevel); err != nil {
		return err
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, not %q", c.logFormat)
	}
	return nil
}

// isLoopback reports whether a host:port address only listens on loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level: %w", err)
	}
	return l, nil
}

func newLogger(cfg *serveConfig) *slog.Logger {
	level, _ := parseLevel(cfg.logLevel) // validated before
	opts := &slog.HandlerOptions{Level: level}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// readySink hands resolved meshes to the SDS cache and flips the gRPC health
// status once the first complete view is in.
type readySink struct {
	cache  *sds.Cache
	health *health.Server
}

func (s readySink) Update(m map[string]*meshconfig.ResolvedMesh, at time.Time) { s.cache.Update(m, at) }

func (s readySink) SetReady() {
	s.cache.SetReady()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus("envoy.service.secret.v3.SecretDiscoveryService", healthpb.HealthCheckResponse_SERVING)
}

// runServe builds every component and runs them until ctx ends or one fails.
func runServe(ctx context.Context, cfg *serveConfig) error {
	log := newLogger(cfg)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	auth, err := newAuthenticator(cfg, log)
	if err != nil {
		return err
	}
	metrics, err := sds.NewMetrics(reg)
	if err != nil {
		return err
	}
	cache := sds.NewCache(sds.CacheConfig{Logger: log, Metrics: metrics})
	server, err := sds.NewServer(sds.ServerConfig{Cache: cache, Auth: auth, Logger: log, Metrics: metrics})
	if err != nil {
		return err
	}

	var sources []reconcile.Source
	for _, dir := range cfg.secretsDirs {
		src, err := file.New(file.Config{Dir: dir, Logger: log, Registerer: reg})
		if err != nil {
			return fmt.Errorf("--secrets-dir %s: %w", dir, err)
		}
		sources = append(sources, src)
	}
	healthSrv := health.NewServer()
	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthSrv.SetServingStatus("envoy.service.secret.v3.SecretDiscoveryService", healthpb.HealthCheckResponse_NOT_SERVING)
	rec, err := reconcile.New(reconcile.Config{Sources: sources, Sink: readySink{cache, healthSrv}, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}

	grpcSrv, sdsLis, err := newGRPCServer(cfg)
	if err != nil {
		return err
	}
	server.Register(grpcSrv)
	healthpb.RegisterHealthServer(grpcSrv, healthSrv)
	reflection.Register(grpcSrv)

	metricsLis, err := net.Listen("tcp", cfg.metricsAddress)
	if err != nil {
		sdsLis.Close()
		return fmt.Errorf("--metrics-address: %w", err)
	}
	metricsSrv := &http.Server{Handler: metricsHandler(reg, rec.Ready, cfg.pprof), ReadHeaderTimeout: 10 * time.Second}
	adminLis, err := net.Listen("tcp", cfg.adminAddress)
	if err != nil {
		sdsLis.Close()
		metricsLis.Close()
		return fmt.Errorf("--admin-address: %w", err)
	}
	adminSrv := &http.Server{Handler: adminHandler(server), ReadHeaderTimeout: 10 * time.Second}

	log.Info("meshsds starting", "sds", sdsLis.Addr().String(), "metrics", metricsLis.Addr().String(),
		"admin", adminLis.Addr().String(), "secrets_dirs", cfg.secretsDirs, "auth", cfg.auth)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rec.Run(gctx) })
	g.Go(func() error {
		if err := grpcSrv.Serve(sdsLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("sds server: %w", err)
		}
		return nil
	})
	for _, hs := range []struct {
		srv *http.Server
		lis net.Listener
	}{{metricsSrv, metricsLis}, {adminSrv, adminLis}} {
		g.Go(func() error {
			if err := hs.srv.Serve(hs.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("meshsds stopping")
		stopGRPC(grpcSrv, cfg.shutdownTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer cancel()
		_ = metricsSrv.Shutdown(sctx)
		_ = adminSrv.Shutdown(sctx)
		return nil
	})
	return g.Wait()
}

func newAuthenticator(cfg *serveConfig, log *slog.Logger) (sds.Authenticator, error) {
	if cfg.auth == "none" {
		log.Warn("SDS AUTHENTICATION IS DISABLED (--auth none): any process that can reach the SDS address gets any data plane's certificate. Use this for local development only.")
		return sds.NoAuth{}, nil
	}
	key, err := token.LoadOrCreateSigningKey(cfg.dataDir)
	if err != nil {
		return nil, fmt.Errorf("dataplane token signing key: %w", err)
	}
	return &sds.TokenAuthenticator{Verifier: token.NewVerifier(&key.PublicKey), Now: time.Now}, nil
}

// newGRPCServer builds the SDS gRPC server and its listener.
func newGRPCServer(cfg *serveConfig) (*grpc.Server, net.Listener, error) {
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 60 * time.Second, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(64),
		grpc.MaxRecvMsgSize(1 << 20),
	}
	if cfg.sdsTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.sdsTLSCert, cfg.sdsTLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--sds-tls-cert/--sds-tls-key: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	}
	lis, err := listen(cfg.sdsAddress)
	if err != nil {
		return nil, nil, fmt.Errorf("--sds-address: %w", err)
	}
	return grpc.NewServer(opts...), lis, nil
}

// listen opens a TCP address or a unix:///path socket (replacing a stale one).
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(path)
		}
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

// stopGRPC closes streams gracefully, then forcibly after timeout.
func stopGRPC(s *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		s.Stop()
	}
}

// metricsHandler serves /metrics, /healthz, /readyz and optionally pprof.
func metricsHandler(reg *prometheus.Registry, ready func() bool, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: sources not synced yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
