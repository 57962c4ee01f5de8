package daemon

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/cluster"
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
	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/postgres"
)

// Daemon is a built "meshsds serve": every component, every listener open.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store
	server  *sds.Server
	state   *cache.Cache
	rec     *reconcile.Reconciler
	orphans reconcile.OrphanRemover
	// The replicas' shared state (replicas.go); nil for a lone replica.
	replicaID string
	coord     *cluster.Coordinator
	elector   cluster.Elector
	leader    *cluster.Leader
	backend   replicaBackend
	cmetrics  *cluster.Metrics
	// sharedStore: the replicas share the store (PostgreSQL); with
	// Kubernetes on the embedded store each replica has its own.
	sharedStore bool
	sds         sdsTransport
	listeners   []listener
	closers     []io.Closer // closed when the daemon ends
}

// listener is one network endpoint of the daemon.
type listener struct {
	name string
	lis  net.Listener
	http *http.Server // nil for the gRPC server
}

// The HTTP listeners' limits: nothing a client sends slowly, or never,
// holds a connection for long, and the number of connections is capped.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second // header and body
	httpWriteTimeout      = 60 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 64 << 10
	httpMaxConnections    = 256
)

// newHTTPServer is an http.Server with the listeners' limits.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler: h, ReadHeaderTimeout: httpReadHeaderTimeout, ReadTimeout: httpReadTimeout,
		WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes,
	}
}

// listenTCP opens a TCP listener of at most httpMaxConnections
// connections at once.
func listenTCP(addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return netutil.LimitListener(lis, httpMaxConnections), nil
}

// New builds every component of cfg (validated) and opens every listener,
// so that a taken port fails the start cleanly. ctx bounds the start (the
// store, the signing key); reg receives every metric and serves /metrics.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg *prometheus.Registry) (_ *Daemon, err error) {
	d := &Daemon{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	var pg *postgres.Store
	if d.store, pg, err = openServeStore(ctx, &cfg, log); err != nil {
		return nil, err
	}
	var (
		kubeSrc *kube.Source
		globals globalSecrets = storeGlobalSecrets{d.store}
	)
	if cfg.Kubernetes {
		if kubeSrc, err = newKubeSource(&cfg, log, reg, d.leading); err != nil {
			return nil, err
		}
		globals = kubeGlobalSecrets{src: kubeSrc, log: log, timeout: 2 * time.Minute}
	}
	key, err := loadSigningKey(ctx, globals, cfg.DataDir)
	if err != nil {
		return nil, err
	}

	// Replicas sharing PostgreSQL or the Kubernetes API share CA changes
	// and elect a leader through it.
	if err := d.openCluster(pg, kubeSrc, reg); err != nil {
		return nil, err
	}

	// The SDS side: the serving state and the server around it.
	cacheMetrics, err := cache.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	cc := cache.Config{
		Logger: log, Metrics: cacheMetrics, RotationTimeout: cfg.CARotationTimeout, KeyType: pki.KeyType(cfg.WorkloadKeyType),
	}
	if d.coord != nil {
		cc.Coordinator = d.coord
	}
	state := cache.New(cc)
	d.state = state
	sdsMetrics, err := sds.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	d.server, err = sds.NewServer(sds.ServerConfig{Secrets: state, Auth: newAuthenticator(&cfg, key, log), Logger: log, Metrics: sdsMetrics})
	if err != nil {
		return nil, err
	}

	// The sources, in precedence order: a resource in two sources is served
	// from the first (files in flag order, then Kubernetes, then the admin
	// API's store).
	var sources []secretsource.Source
	for _, dir := range cfg.SecretsDirs {
		src, err := file.New(file.Config{Dir: dir, Logger: log, Registerer: reg})
		if err != nil {
			return nil, fmt.Errorf("--secrets-dir %s: %w", dir, err)
		}
		sources = append(sources, src)
	}
	var provisioner interface {
		reconcile.CAProvisioner
		reconcile.OrphanRemover
		api.Provisioner
	} = &store.Provisioner{Store: d.store, Logger: log}
	if kubeSrc != nil {
		sources = append(sources, kubeSrc)
		provisioner = kubeSrc // builtin CAs become Secrets that every replica sees
	}
	d.orphans = provisioner
	storeSrc, err := store.NewSource(store.SourceConfig{Store: d.store, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	sources = append(sources, storeSrc)
	healthSrv := health.NewServer()
	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthSrv.SetServingStatus("envoy.service.secret.v3.SecretDiscoveryService", healthpb.HealthCheckResponse_NOT_SERVING)
	d.rec, err = reconcile.New(reconcile.Config{
		Sources: sources, Sink: readySink{state, healthSrv}, Provisioner: provisioner, Leading: d.leading, Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	if d.leader, err = d.newLeader(); err != nil {
		return nil, err
	}
	audit, err := openAuditLog(cfg.AuditLog)
	if err != nil {
		return nil, err
	}
	if audit != nil {
		d.closers = append(d.closers, audit)
	}
	adminAPI, err := api.New(api.Config{
		Audit: audit,
		Store: d.store, Logger: log, Registerer: reg,
		Dataplanes:  d.server,
		Tokens:      token.NewIssuer(key),
		Others:      d.rec.Others(storeSrc.Name()),
		Status:      state,
		Provisioner: provisioner,
		Index:       indexInfo(&key.PublicKey),
		ManagedGlobalSecrets: map[string]string{
			signingKeySecret: "the dataplane token signing key",
		},
		Problems: d.rec,
		Ready:    d.rec.Ready,
	})
	if err != nil {
		return nil, err
	}

	// The listeners.
	if d.sds, err = d.openSDS(reg, healthSrv); err != nil {
		return nil, err
	}
	if cfg.MetricsAddress != "" {
		lis, err := listenTCP(cfg.MetricsAddress)
		if err != nil {
			return nil, fmt.Errorf("--metrics-address: %w", err)
		}
		d.listeners = append(d.listeners, listener{name: "metrics", lis: lis, http: newHTTPServer(metricsHandler(reg, d.rec.Ready, cfg.Pprof))})
	}
	if cfg.AdminAddress != "" {
		lis, err := listenTCP(cfg.AdminAddress)
		if err != nil {
			return nil, fmt.Errorf("--admin-address: %w", err)
		}
		d.listeners = append(d.listeners, listener{name: "admin", lis: lis, http: newHTTPServer(adminAPI.Handler())})
	}
	if cfg.Webhook.Address != "" {
		l, err := webhookListener(&cfg, d.rec, log, reg)
		if err != nil {
			return nil, err
		}
		d.listeners = append(d.listeners, l)
	}
	if cfg.AdminTLSAddress != "" {
		l, err := adminTLSListener(&cfg, adminAPI.Handler(), log)
		if err != nil {
			return nil, err
		}
		d.listeners = append(d.listeners, l)
	}
	return d, nil
}

// openSDS opens the SDS port with health and reflection beside SDS.
func (d *Daemon) openSDS(reg prometheus.Registerer, healthSrv *health.Server) (sdsTransport, error) {
	t, lis, err := newSDSTransport(&d.cfg, d.server, d.log, reg)
	if err != nil {
		return nil, err
	}
	d.listeners = append(d.listeners, listener{name: "sds", lis: lis})
	healthpb.RegisterHealthServer(t, healthSrv)
	reflection.Register(t)
	return t, nil
}

// close releases what New opened, when it failed.
func (d *Daemon) close() {
	for _, l := range d.listeners {
		l.lis.Close()
	}
	if d.store != nil {
		d.store.Close()
	}
	for _, c := range d.closers {
		c.Close()
	}
}

// openAuditLog opens the audit log of --audit-log: a file (appended to,
// mode 0600), "-" for standard output, or nothing when empty.
func openAuditLog(path string) (io.WriteCloser, error) {
	switch path {
	case "":
		return nil, nil
	case "-":
		return nopCloser{os.Stdout}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--audit-log: %w", err)
	}
	return f, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Run serves until ctx ends or a component fails, then shuts down: SDS
// clients are told to go away and their streams end with Unavailable (Envoy
// reconnects, to another replica if there is one), then the rest stops
// within the shutdown timeout.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.store.Close()
	for _, c := range d.closers {
		defer c.Close()
	}
	attrs := []any{"secrets_dirs", d.cfg.SecretsDirs, "auth", d.cfg.Auth, "store", d.cfg.Store, "data_dir", d.cfg.DataDir, "sds_transport", d.cfg.SDSTransport}
	for _, l := range d.listeners {
		attrs = append(attrs, l.name, l.lis.Addr().String())
	}
	d.log.Info("meshsds starting", attrs...)

	g, gctx := errgroup.WithContext(ctx)
	d.runCluster(gctx, g)
	g.Go(func() error {
		d.awaitCluster(gctx)
		return d.rec.Run(gctx)
	})
	for _, l := range d.listeners {
		g.Go(func() error {
			if l.http == nil {
				if err := d.sds.Serve(l.lis); err != nil && !errors.Is(err, grpclite.ErrServerStopped) && !errors.Is(err, grpc.ErrServerStopped) {
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
		d.log.Info("meshsds stopping")
		d.sds.GoAway()
		d.server.CloseStreams(status.Error(codes.Unavailable, "meshsds is shutting down"))
		stopGRPC(d.sds, d.cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
		defer cancel()
		for _, l := range d.listeners {
			if l.http != nil {
				_ = l.http.Shutdown(sctx)
			}
		}
		return nil
	})
	return g.Wait()
}

// readySink hands resolved meshes to the SDS serving state and flips the
// gRPC health status once the first complete view is in.
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

func newAuthenticator(cfg *Config, key *ecdsa.PrivateKey, log *slog.Logger) sds.Authenticator {
	if cfg.Auth == "none" {
		log.Warn("SDS AUTHENTICATION IS DISABLED (--auth none): any process that can reach the SDS address gets any data plane's certificate. Use this for local development only.")
		return sds.NoAuth{}
	}
	return &sds.TokenAuthenticator{Verifier: token.NewVerifier(&key.PublicKey), Now: time.Now}
}

// metricsHandler serves /metrics, /healthz, /readyz and optionally pprof.
func metricsHandler(reg prometheus.Gatherer, ready func() bool, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
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
