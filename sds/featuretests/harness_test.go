// Package featuretests holds the SDS server's whole-pipeline tests: the
// server, the serving state and a transport, fed resolved meshes the way the
// reconciler feeds them, and talked to by real gRPC clients over loopback
// (Contour's featuretests). Every test runs on both transports of the SDS
// port, so the two cannot drift.
package featuretests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/tap"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
	"github.com/meshsds/meshsds/sds/token"
)

// transports are the SDS port's transports, by the name of
// --sds-transport.
var transports = []string{"grpclite", "grpc-go"}

// eachTransport runs f as a subtest per transport.
func eachTransport(t *testing.T, f func(t *testing.T, transport string)) {
	t.Helper()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// harness is a real SDS server on 127.0.0.1:0 over a Cache the test feeds.
type harness struct {
	t      *testing.T
	cache  *cache.Cache
	server *sds.Server
	reg    *prometheus.Registry
	addr   string
	issuer *token.Issuer
	key    *ecdsa.PrivateKey // signs the tokens
}

type harnessOpt func(*cache.Config, *sds.ServerConfig)

func newHarness(t *testing.T, transport string, opts ...harnessOpt) *harness {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	sm, err := sds.NewMetrics(reg)
	require.NoError(t, err)
	cm, err := cache.NewMetrics(reg)
	require.NoError(t, err)
	cc := cache.Config{Metrics: cm}
	sc := sds.ServerConfig{Auth: &sds.TokenAuthenticator{Verifier: token.NewVerifier(&key.PublicKey), Now: time.Now}, Metrics: sm}
	for _, o := range opts {
		o(&cc, &sc)
	}
	c := cache.New(cc)
	sc.Secrets = c
	srv, err := sds.NewServer(sc)
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serve(t, transport, srv, lis)
	return &harness{t: t, cache: c, server: srv, reg: reg, addr: lis.Addr().String(), issuer: token.NewIssuer(key), key: key}
}

// serve serves srv on lis with transport until the test ends.
func serve(t testing.TB, transport string, srv *sds.Server, lis net.Listener) {
	done := make(chan struct{})
	switch transport {
	case "grpclite":
		gs := grpclite.NewServer(grpclite.Config{Authorize: srv.Authorize, PublicMethods: sds.PublicMethods})
		srv.RegisterGRPCLite(gs)
		go func() { _ = gs.Serve(lis); close(done) }()
		t.Cleanup(func() { gs.Stop(); <-done })
	case "grpc-go":
		gs := grpc.NewServer(sds.GRPCCodec(), grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
			return ctx, srv.Authorize(metadata.NewIncomingContext(ctx, info.Header), info.FullMethodName)
		}))
		srv.RegisterGRPC(gs)
		go func() { _ = gs.Serve(lis); close(done) }()
		t.Cleanup(func() { gs.Stop(); <-done })
	default:
		t.Fatalf("unknown transport %q", transport)
	}
}

// metric is the value of the counter or gauge name with the given label
// pairs ("api", "sotw", ...), 0 when it was never set.
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	m := h.find(name, labels...)
	switch {
	case m == nil:
		return 0
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	h.t.Fatalf("%s is neither a counter nor a gauge", name)
	return 0
}

// histogramCount is how many observations the histogram name holds.
func (h *harness) histogramCount(name string) uint64 {
	h.t.Helper()
	if m := h.find(name); m != nil && m.Histogram != nil {
		return m.Histogram.GetSampleCount()
	}
	return 0
}

func (h *harness) find(name string, labels ...string) *dto.Metric {
	h.t.Helper()
	families, err := h.reg.Gather()
	require.NoError(h.t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

// token mints a dataplane token for mesh/name with service tag svc.
func (h *harness) token(mesh, name, svc string) string {
	h.t.Helper()
	raw, err := h.issuer.Issue(token.Claims{Mesh: mesh, Name: name, Tags: map[string][]string{sds.ServiceTag: {svc}}}, 24*time.Hour, time.Now())
	require.NoError(h.t, err)
	return raw
}

// dial connects as mesh/name with a fresh token.
func (h *harness) dial(mesh, name, svc string) *grpc.ClientConn {
	return sdstest.Dial(h.t, h.addr, h.token(mesh, name, svc))
}

// serve makes the cache serve mesh "default" with ca, and ready.
func (h *harness) serve(ca *pki.KeyPair) {
	h.t.Helper()
	h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(h.t, "default", ca)}, time.Now())
	h.cache.SetReady()
}

// resolved builds a resolved mesh served by ca.
func resolved(t *testing.T, mesh string, ca *pki.KeyPair) *meshconfig.ResolvedMesh {
	t.Helper()
	c, err := pki.ParseCA(ca.CertPEM, ca.KeyPEM, time.Now())
	require.NoError(t, err)
	return &meshconfig.ResolvedMesh{Name: mesh, Backend: "ca-1", CA: c, DPCertValidity: time.Hour}
}
