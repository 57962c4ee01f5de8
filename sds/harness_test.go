package sds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds/token"
)

// harness is a real SDS server on 127.0.0.1:0 over a Cache the test feeds.
type harness struct {
	t       *testing.T
	cache   *Cache
	server  *Server
	metrics *Metrics
	reg     *prometheus.Registry
	addr    string
	issuer  *token.Issuer
}

type harnessOpt func(*CacheConfig, *ServerConfig)

func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	require.NoError(t, err)
	cc := CacheConfig{Metrics: m}
	sc := ServerConfig{Auth: &TokenAuthenticator{Verifier: token.NewVerifier(&key.PublicKey), Now: time.Now}, Metrics: m}
	for _, o := range opts {
		o(&cc, &sc)
	}
	cache := NewCache(cc)
	sc.Cache = cache
	srv, err := NewServer(sc)
	require.NoError(t, err)
	gs := grpclite.NewServer(grpclite.Config{})
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { _ = gs.Serve(lis); close(done) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return &harness{t: t, cache: cache, server: srv, metrics: m, reg: reg, addr: lis.Addr().String(), issuer: token.NewIssuer(key)}
}

// token mints a dataplane token for mesh/name with service tag svc.
func (h *harness) token(mesh, name, svc string) string {
	h.t.Helper()
	raw, err := h.issuer.Issue(token.Claims{Mesh: mesh, Name: name, Tags: map[string][]string{ServiceTag: {svc}}}, time.Hour, time.Now())
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
