package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/api"
	"github.com/meshsds/meshsds/secretsource/file"
	"github.com/meshsds/meshsds/secretsource/kube"
	"github.com/meshsds/meshsds/secretsource/reconcile"
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
	webhook             webhookFlags
	store               string
	postgresURL         string
	logLevel            string
	logFormat           string
	pprof               bool
	shutdownTimeout     time.Duration
	caRotationTimeout   time.Duration
	workloadKeyType     string
	sdsTransport        string
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
	f.StringVar(&cfg.dataDir, "data-dir", "./meshsds-data", "directory of the embedded store (meshsds.db: API resources, token signing key)")
	f.StringVar(&cfg.sdsAddress, "sds-address", "127.0.0.1:5677", "SDS gRPC address: host:port or unix:///path")
	f.StringVar(&cfg.adminAddress, "admin-address", "127.0.0.1:5681", "admin HTTP address (plain HTTP, loopback only)")
	f.StringVar(&cfg.metricsAddress, "metrics-address", ":5680", "address of /metrics, /healthz and /readyz")
	f.StringVar(&cfg.auth, "auth", "dataplane-token", "SDS authentication: dataplane-token, or none (local development only)")
	f.StringVar(&cfg.sdsTLSCert, "sds-tls-cert", "", "PEM certificate chain the SDS server presents (enables TLS)")
	f.StringVar(&cfg.sdsTLSKey, "sds-tls-key", "", "PEM private key of --sds-tls-cert")
	f.BoolVar(&cfg.sdsInsecure, "sds-insecure", false, "allow plain-text SDS on a non-loopback TCP address")
	f.StringVar(&cfg.sdsTransport, "sds-transport", "grpclite", "gRPC server of the SDS port: grpclite (one goroutine per connection, the lightest) or grpc-go (grpc-go's own server)")
	f.StringVar(&cfg.adminTLSAddress, "admin-tls-address", "", "admin HTTPS address for remote access; requires client certificates")
	f.StringVar(&cfg.adminTLSCert, "admin-tls-cert", "", "PEM certificate chain of the admin HTTPS server")
	f.StringVar(&cfg.adminTLSKey, "admin-tls-key", "", "PEM key of --admin-tls-cert")
	f.StringVar(&cfg.adminClientCertsDir, "admin-client-certs-dir", "", "directory of *.pem CAs (or self-signed client certificates) that admin clients must present a certificate from")
	f.BoolVar(&cfg.kubernetes, "kubernetes", false, "read Kuma Secrets of --namespace and Mesh custom resources from Kubernetes, and keep the token signing key there")
	f.StringVar(&cfg.namespace, "namespace", "kuma-system", "Kubernetes namespace of the control plane's Secrets")
	f.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration when empty")
	addWebhookFlags(f, &cfg.webhook)
	f.StringVar(&cfg.store, "store", "sqlite", "durable store of the admin API and of the token signing key: sqlite (embedded in --data-dir) or postgres (shared by several replicas)")
	f.StringVar(&cfg.postgresURL, "postgres-url", "", "PostgreSQL connection URL for --store postgres, e.g. postgres://meshsds@db:5432/meshsds?sslmode=verify-full (give a password in MESHSDS_POSTGRES_URL, the config file, PGPASSWORD or ~/.pgpass rather than on the command line)")
	f.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&cfg.logFormat, "log-format", "text", "log format: text or json")
	f.BoolVar(&cfg.pprof, "pprof", false, "serve /debug/pprof/ on the metrics address")
	f.StringVar(&cfg.workloadKeyType, "workload-key-type", "ecdsa", "key of workload certificates: ecdsa (P-256) or rsa (2048 bits)")
	f.DurationVar(&cfg.caRotationTimeout, "ca-rotation-timeout", time.Minute, "how long each phase of a CA change waits for every connected data plane to ACK before going on without the laggards")
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
	if err := c.webhook.validate(c.kubernetes); err != nil {
		return err
	}
	if c.workloadKeyType != string(pki.KeyECDSA) && c.workloadKeyType != string(pki.KeyRSA) {
		return fmt.Errorf("--workload-key-type must be ecdsa or rsa, not %q", c.workloadKeyType)
	}
	if c.sdsTransport != "grpclite" && c.sdsTransport != "grpc-go" {
		return fmt.Errorf("--sds-transport must be grpclite or grpc-go, not %q", c.sdsTransport)
	}
	if c.store != "sqlite" && c.store != "postgres" {
		return fmt.Errorf("--store must be sqlite or postgres, not %q", c.store)
	}
	if c.store == "postgres" && c.postgresURL == "" {
		return errors.New("--store postgres needs --postgres-url")
	}
	if c.store != "postgres" && c.postgresURL != "" {
		return errors.New("--postgres-url is only used with --store postgres: add --store postgres, or drop --postgres-url")
	}
	if (c.sdsTLSCert == "") != (c.sdsTLSKey == "") {
		return errors.New("--sds-tls-cert and --sds-tls-key go together")
	}
	if c.sdsTLSCert == "" && !c.sdsInsecure && !strings.HasPrefix(c.sdsAddress, "unix://") && !isLoopback(c.sdsAddress) {
		return fmt.Errorf("--sds-address %s is not a loopback address: give --sds-tls-cert and --sds-tls-key, or --sds-insecure to serve plain text anyway", c.sdsAddress)
	}
	if c.adminTLSAddress != "" && (c.adminTLSCert == "" || c.adminTLSKey == "" || c.adminClientCertsDir == "") {
		return errors.New("--admin-tls-address needs --admin-tls-cert, --admin-tls-key and --admin-client-certs-dir: remote admin access requires client certificates")
	}
	if c.adminTLSAddress == "" && (c.adminTLSCert != "" || c.adminTLSKey != "" || c.adminClientCertsDir != "") {
		return errors.New("--admin-tls-cert, --admin-tls-key and --admin-client-certs-dir need --admin-tls-address")
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
	cache  *cache.Cache
	health *health.Server
}

func (s readySink) Update(m map[string]*meshconfig.ResolvedMesh, at time.Time) { s.cache.Update(m, at) }

func (s readySink) SetReady() {
	s.cache.SetReady()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus("envoy.service.secret.v3.SecretDiscoveryService", healthpb.HealthCheckResponse_SERVING)
}

// listener is one network endpoint of the daemon.
type listener struct {
	name string
	lis  net.Listener
	http *http.Server // nil for the gRPC server
}

// runServe builds every component and runs them until ctx ends or one fails.
func runServe(ctx context.Context, cfg *serveConfig) (err error) {
	log := newLogger(cfg)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	st, err := openServeStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	var (
		kubeSrc *kube.Source
		globals globalSecrets = storeGlobalSecrets{st}
	)
	if cfg.kubernetes {
		if kubeSrc, err = newKubeSource(cfg, log, reg); err != nil {
			return err
		}
		globals = kubeGlobalSecrets{src: kubeSrc, log: log, timeout: 2 * time.Minute}
	}
	key, err := loadSigningKey(ctx, globals, cfg.dataDir)
	if err != nil {
		return err
	}
	auth := newAuthenticator(cfg, key, log)
	cacheMetrics, err := cache.NewMetrics(reg)
	if err != nil {
		return err
	}
	state := cache.New(cache.Config{
		Logger: log, Metrics: cacheMetrics, RotationTimeout: cfg.caRotationTimeout, KeyType: pki.KeyType(cfg.workloadKeyType),
	})
	metrics, err := sds.NewMetrics(reg)
	if err != nil {
		return err
	}
	server, err := sds.NewServer(sds.ServerConfig{Secrets: state, Auth: auth, Logger: log, Metrics: metrics})
	if err != nil {
		return err
	}

	// Sources in precedence order: a resource in two sources is served
	// from the first (files in flag order, then Kubernetes, then the admin
	// API's store).
	var sources []secretsource.Source
	for _, dir := range cfg.secretsDirs {
		src, err := file.New(file.Config{Dir: dir, Logger: log, Registerer: reg})
		if err != nil {
			return fmt.Errorf("--secrets-dir %s: %w", dir, err)
		}
		sources = append(sources, src)
	}
	var provisioner reconcile.CAProvisioner
	if kubeSrc != nil {
		sources = append(sources, kubeSrc)
		provisioner = kubeSrc // builtin CAs become Secrets that every replica sees
	}
	others := &lateOthers{}
	adminAPI, err := api.New(api.Config{
		Store: st, Logger: log, Registerer: reg,
		Dataplanes: dataplanesFunc(func() any { return server.Dataplanes() }),
		Tokens:     token.NewIssuer(key),
		Others:     others,
		Status:     meshStatusFunc(state.MeshStatus),
	})
	if err != nil {
		return err
	}
	sources = append(sources, adminAPI)
	if provisioner == nil {
		provisioner = adminAPI
	}

	healthSrv := health.NewServer()
	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthSrv.SetServingStatus("envoy.service.secret.v3.SecretDiscoveryService", healthpb.HealthCheckResponse_NOT_SERVING)
	rec, err := reconcile.New(reconcile.Config{
		Sources: sources, Sink: readySink{state, healthSrv}, Provisioner: provisioner, Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	others.set(rec.Others(adminAPI.Name()))

	// Open every listener before serving anything, so that a taken port
	// fails the start cleanly.
	var listeners []listener
	defer func() {
		if err != nil {
			for _, l := range listeners {
				l.lis.Close()
			}
		}
	}()
	grpcSrv, sdsLis, err := newSDSTransport(cfg, server, log, reg)
	if err != nil {
		return err
	}
	listeners = append(listeners, listener{name: "sds", lis: sdsLis})
	healthpb.RegisterHealthServer(grpcSrv, healthSrv)
	reflection.Register(grpcSrv)

	metricsLis, err := net.Listen("tcp", cfg.metricsAddress)
	if err != nil {
		return fmt.Errorf("--metrics-address: %w", err)
	}
	listeners = append(listeners, listener{
		name: "metrics", lis: metricsLis,
		http: &http.Server{Handler: metricsHandler(reg, rec.Ready, cfg.pprof), ReadHeaderTimeout: 10 * time.Second},
	})
	adminLis, err := net.Listen("tcp", cfg.adminAddress)
	if err != nil {
		return fmt.Errorf("--admin-address: %w", err)
	}
	listeners = append(listeners, listener{
		name: "admin", lis: adminLis,
		http: &http.Server{Handler: adminAPI.Handler(), ReadHeaderTimeout: 10 * time.Second},
	})
	if cfg.webhook.address != "" {
		l, err := webhookListener(cfg, kubeSrc, log, reg)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
	}
	if cfg.adminTLSAddress != "" {
		l, err := adminTLSListener(cfg, adminAPI.Handler(), log)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
	}

	attrs := []any{"secrets_dirs", cfg.secretsDirs, "auth", cfg.auth, "store", cfg.store, "data_dir", cfg.dataDir}
	for _, l := range listeners {
		attrs = append(attrs, l.name, l.lis.Addr().String())
	}
	log.Info("meshsds starting", attrs...)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rec.Run(gctx) })
	for _, l := range listeners {
		g.Go(func() error {
			if l.http == nil {
				if err := grpcSrv.Serve(l.lis); err != nil && !errors.Is(err, grpclite.ErrServerStopped) && !errors.Is(err, grpc.ErrServerStopped) {
					return fmt.Errorf("sds server: %w", err)
				}
				return nil
			}
			if err := l.http.Serve(l.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s server: %w", l.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("meshsds stopping")
		// Tell clients to go away, then end the SDS streams, which never
		// end by themselves: Envoy reconnects, to another replica if
		// there is one.
		grpcSrv.GoAway()
		server.CloseStreams(status.Error(codes.Unavailable, "meshsds is shutting down"))
		stopGRPC(grpcSrv, cfg.shutdownTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer cancel()
		for _, l := range listeners {
			if l.http != nil {
				_ = l.http.Shutdown(sctx)
			}
		}
		return nil
	})
	return g.Wait()
}

// meshStatusFunc adapts the serving state's mesh status to the admin API.
type meshStatusFunc func(mesh string) *sds.MeshStatus

func (f meshStatusFunc) MeshStatus(mesh string) any {
	if st := f(mesh); st != nil {
		return st
	}
	return nil
}

// dataplanesFunc adapts the SDS server's status to the admin API.
type dataplanesFunc func() any

func (f dataplanesFunc) Dataplanes() any { return f() }

// lateOthers lets the admin API, built before the reconciler, look at the
// other sources once the reconciler exists.
type lateOthers struct {
	mu sync.Mutex
	o  *reconcile.Others
}

func (l *lateOthers) set(o *reconcile.Others) {
	l.mu.Lock()
	l.o = o
	l.mu.Unlock()
}

func (l *lateOthers) get() *reconcile.Others {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.o
}

func (l *lateOthers) Secret(mesh, name string) ([]byte, bool) {
	if o := l.get(); o != nil {
		return o.Secret(mesh, name)
	}
	return nil, false
}

func (l *lateOthers) Meshes() []*meshconfig.Mesh {
	if o := l.get(); o != nil {
		return o.Meshes()
	}
	return nil
}

func newAuthenticator(cfg *serveConfig, key *ecdsa.PrivateKey, log *slog.Logger) sds.Authenticator {
	if cfg.auth == "none" {
		log.Warn("SDS AUTHENTICATION IS DISABLED (--auth none): any process that can reach the SDS address gets any data plane's certificate. Use this for local development only.")
		return sds.NoAuth{}
	}
	return &sds.TokenAuthenticator{Verifier: token.NewVerifier(&key.PublicKey), Now: time.Now}
}

// sdsTransport is the gRPC server of the SDS port: grpclite or grpc-go.
type sdsTransport interface {
	reflection.GRPCServer
	Serve(net.Listener) error
	// GoAway stops accepting and tells clients to go away; open streams go
	// on until CloseStreams ends them.
	GoAway()
	GracefulStop()
	Stop()
}

// newSDSTransport builds the SDS gRPC server of --sds-transport with the
// SDS services registered, and its listener. grpclite, the default, keeps
// one goroutine per connection and none per waiting stream (see
// internal/grpclite); grpc-go is grpc-go's own server.
func newSDSTransport(cfg *serveConfig, server *sds.Server, log *slog.Logger, reg prometheus.Registerer) (sdsTransport, net.Listener, error) {
	var tlsCfg *tls.Config
	if cfg.sdsTLSCert != "" {
		// Read again when the files change, so a renewed certificate is
		// served without a restart.
		certs := &certReloader{certFile: cfg.sdsTLSCert, keyFile: cfg.sdsTLSKey}
		if _, err := certs.get(); err != nil {
			return nil, nil, fmt.Errorf("--sds-tls-cert/--sds-tls-key: %w", err)
		}
		tlsCfg = &tls.Config{GetCertificate: certs.getCertificate(log, "SDS"), MinVersion: tls.VersionTLS12}
	}
	const (
		keepaliveTime    = 60 * time.Second
		keepaliveTimeout = 20 * time.Second
		maxStreams       = 64
		maxRecvMsgSize   = 1 << 20
	)
	var t sdsTransport
	switch cfg.sdsTransport {
	case "grpc-go":
		conns, err := sds.NewGRPCConnStats(reg)
		if err != nil {
			return nil, nil, err
		}
		opts := []grpc.ServerOption{
			sds.GRPCCodec(),
			grpc.StatsHandler(conns),
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
			grpc.MaxConcurrentStreams(maxStreams),
			grpc.MaxRecvMsgSize(maxRecvMsgSize),
		}
		if tlsCfg != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
		}
		gs := grpc.NewServer(opts...)
		server.RegisterGRPC(gs)
		t = &grpcGoTransport{Server: gs, conns: conns, stopped: make(chan struct{})}
	default:
		metrics, err := grpclite.NewMetrics(reg)
		if err != nil {
			return nil, nil, err
		}
		gs := grpclite.NewServer(grpclite.Config{
			Metrics:              metrics,
			Logger:               log,
			KeepaliveTime:        keepaliveTime,
			KeepaliveTimeout:     keepaliveTimeout,
			MaxConcurrentStreams: maxStreams,
			MaxRecvMsgSize:       maxRecvMsgSize,
			TLS:                  tlsCfg,
		})
		server.RegisterGRPCLite(gs)
		t = gs
	}
	lis, err := listen(cfg.sdsAddress)
	if err != nil {
		return nil, nil, fmt.Errorf("--sds-address: %w", err)
	}
	return t, lis, nil
}

// grpcGoTransport gives grpc-go's server the GoAway of grpclite: its
// GracefulStop sends GOAWAY at once and then waits for the streams, so
// GoAway starts it and GracefulStop waits for it.
type grpcGoTransport struct {
	*grpc.Server
	conns   *sds.GRPCConnStats
	once    sync.Once
	stopped chan struct{}
}

func (g *grpcGoTransport) GoAway() {
	g.once.Do(func() {
		g.conns.Stopping()
		go func() {
			g.Server.GracefulStop()
			close(g.stopped)
		}()
	})
}

func (g *grpcGoTransport) Stop() {
	g.conns.Stopping()
	g.Server.Stop()
}

func (g *grpcGoTransport) GracefulStop() {
	g.GoAway()
	<-g.stopped
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
func stopGRPC(s sdsTransport, timeout time.Duration) {
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
