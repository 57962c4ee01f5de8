package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/tap"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/sds"
)

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
func newSDSTransport(cfg *Config, server *sds.Server, log *slog.Logger, reg prometheus.Registerer) (sdsTransport, net.Listener, error) {
	var tlsCfg *tls.Config
	if cfg.SDSTLSCert != "" {
		// Read again when the files change, so a renewed certificate is
		// served without a restart.
		certs := &certReloader{certFile: cfg.SDSTLSCert, keyFile: cfg.SDSTLSKey}
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
	switch cfg.SDSTransport {
	case "grpc-go":
		conns, err := sds.NewGRPCConnStats(reg)
		if err != nil {
			return nil, nil, err
		}
		opts := []grpc.ServerOption{
			sds.GRPCCodec(),
			grpc.InTapHandle(grpcAuthorize(server)),
			grpc.ConnectionTimeout(10 * time.Second),
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
			Metrics:                metrics,
			Logger:                 log,
			KeepaliveTime:          keepaliveTime,
			KeepaliveTimeout:       keepaliveTimeout,
			MaxConcurrentStreams:   maxStreams,
			MaxRecvMsgSize:         maxRecvMsgSize,
			TLS:                    tlsCfg,
			PublicMethods:          sds.PublicMethods,
			Authorize:              server.Authorize,
			MaxConnections:         cfg.SDSMaxConnections,
			UnauthenticatedTimeout: cfg.SDSUnauthenticatedTimeout,
			MaxConnBuffered:        cfg.SDSMaxConnectionBufferSize,
		})
		server.RegisterGRPCLite(gs)
		t = gs
	}
	lis, err := listen(cfg.SDSAddress)
	if err != nil {
		return nil, nil, fmt.Errorf("--sds-address: %w", err)
	}
	if g, ok := t.(*grpcGoTransport); ok {
		// grpclite closes connections beyond the cap itself; grpc-go's
		// are held back at accept. grpclite's deadline for
		// unauthenticated connections comes from GRPCConnStats.
		lis = g.conns.Listener(netutil.LimitListener(lis, cfg.SDSMaxConnections), cfg.SDSUnauthenticatedTimeout)
	}
	return t, lis, nil
}

// grpcAuthorize is sds' header check as a grpc-go tap handle: a stream of
// an SDS method without a valid credential is refused before grpc-go reads
// its body.
func grpcAuthorize(server *sds.Server) tap.ServerInHandle {
	public := map[string]bool{}
	for _, m := range sds.PublicMethods {
		public[m] = true
	}
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if public[info.FullMethodName] {
			return ctx, nil
		}
		if err := server.Authorize(metadata.NewIncomingContext(ctx, info.Header), info.FullMethodName); err != nil {
			return ctx, err
		}
		sds.GRPCAuthenticated(ctx)
		return ctx, nil
	}
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
