package featuretests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/sds/xds"
)

func TestAuthentication(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{
			"a": resolved(t, "a", pkitest.NewRootCA(t, "a")),
			"b": resolved(t, "b", pkitest.NewRootCA(t, "b")),
		}, time.Now())
		h.cache.SetReady()

		otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		claims := token.Claims{Mesh: "a", Name: "web-1", Tags: map[string][]string{sds.ServiceTag: {"web"}}}
		mint := func(iss *token.Issuer, c token.Claims, validFor time.Duration, at time.Time) string {
			raw, err := iss.Issue(c, validFor, at)
			require.NoError(t, err)
			return raw
		}
		valid := mint(h.issuer, claims, time.Hour, time.Now())
		otherMesh := claims
		otherMesh.Mesh = "b"
		otherName := claims
		otherName.Name = "web-2"
		// A token whose service would leave its SPIFFE path, signed by hand
		// as an older meshsds (which did not check tags) could have.
		kid, err := token.KeyID(&h.key.PublicKey)
		require.NoError(t, err)
		badTags := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"mesh": "a", "name": "web-1", "tags": map[string][]string{sds.ServiceTag: {"web/../admin"}},
			"jti": "x", "iat": time.Now().Unix(), "nbf": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
		})
		badTags.Header["kid"] = kid
		badTagsToken, err := badTags.SignedString(h.key)
		require.NoError(t, err)

		conn := sdstest.Dial(t, h.addr, "")
		client := secretv3.NewSecretDiscoveryServiceClient(conn)
		tests := []struct {
			name   string
			auth   string // the whole authorization value; empty sends none
			node   string
			code   codes.Code
			reason string
		}{
			{"valid", "Bearer " + valid, "a.web-1", codes.OK, ""},
			{"missing", "", "a.web-1", codes.Unauthenticated, "missing_token"},
			{"raw token, as Kuma's file-based metadata sends it", valid, "a.web-1", codes.OK, ""},
			{"lower-case scheme", "bearer " + valid, "a.web-1", codes.OK, ""},
			{"another scheme", "Basic " + valid, "a.web-1", codes.Unauthenticated, "malformed"},
			{"garbage", "Bearer not.a.jwt", "a.web-1", codes.Unauthenticated, "malformed"},
			{"expired", "Bearer " + mint(h.issuer, claims, time.Minute, time.Now().Add(-2*time.Hour)), "a.web-1", codes.Unauthenticated, "expired"},
			{"forged", "Bearer " + mint(token.NewIssuer(otherKey), claims, time.Hour, time.Now()), "a.web-1", codes.Unauthenticated, "bad_signature"},
			{"token of another mesh", "Bearer " + mint(h.issuer, otherMesh, time.Hour, time.Now()), "a.web-1", codes.PermissionDenied, "other_mesh"},
			{"token of another data plane", "Bearer " + mint(h.issuer, otherName, time.Hour, time.Now()), "a.web-1", codes.PermissionDenied, "other_name"},
			{"no node", "Bearer " + valid, "", codes.InvalidArgument, "missing_node"},
			{"tags that cannot be a SPIFFE id", "Bearer " + badTagsToken, "a.web-1", codes.PermissionDenied, "bad_identity"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				before := 0.0
				if tc.reason != "" {
					// Exported from the start (at 0 before its first
					// refusal), so that rates and alerts have a series.
					require.NotNil(t, h.find("meshsds_sds_auth_failures_total", "reason", tc.reason), "reason %s not exported", tc.reason)
					before = h.metric("meshsds_sds_auth_failures_total", "reason", tc.reason)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if tc.auth != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.auth)
				}
				req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: tc.node}, TypeUrl: xds.TypeSecret, ResourceNames: []string{sds.NameIdentityCert}}

				// Every API refuses alike.
				_, err := client.FetchSecrets(ctx, req)
				require.Equal(t, tc.code, status.Code(err), "fetch: %v", err)
				for _, open := range []func() error{
					func() error {
						s, err := client.StreamSecrets(ctx)
						require.NoError(t, err)
						sent(t, s.Send(req))
						_, err = s.Recv()
						return err
					},
					func() error {
						s, err := client.DeltaSecrets(ctx)
						require.NoError(t, err)
						sent(t, s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: req.Node, TypeUrl: xds.TypeSecret, ResourceNamesSubscribe: req.ResourceNames}))
						_, err = s.Recv()
						return err
					},
				} {
					require.Equal(t, tc.code, status.Code(open()))
				}
				if tc.reason != "" {
					require.InDelta(t, before+3, h.metric("meshsds_sds_auth_failures_total", "reason", tc.reason), 0)
				}
			})
		}
	})
}

func TestRevocationClosesLiveStreams(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		rm := resolved(t, "default", pkitest.NewRootCA(t, "ca"))
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": rm}, time.Now())
		h.cache.SetReady()

		mint := func(id, name string) string {
			raw, err := h.issuer.Issue(token.Claims{ID: id, Mesh: "default", Name: name, Tags: map[string][]string{sds.ServiceTag: {name}}}, time.Hour, time.Now())
			require.NoError(t, err)
			return raw
		}
		revokedConn := sdstest.Dial(t, h.addr, mint("tok-1", "web-1"))
		keptConn := sdstest.Dial(t, h.addr, mint("tok-2", "web-2"))
		revoked := sdstest.OpenStream(t, revokedConn, "default.web-1", false, sds.NameIdentityCert)
		kept := sdstest.OpenStream(t, keptConn, "default.web-2", false, sds.NameIdentityCert)
		revoked.Expect()
		kept.Expect()

		withRevocation := *rm
		withRevocation.RevokedTokenIDs = map[string]struct{}{"tok-1": {}}
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": &withRevocation}, time.Now())

		_, err := revoked.Recv(10 * time.Second)
		require.Equal(t, codes.PermissionDenied, status.Code(err), "got %v", err)
		kept.ExpectNothing(quiet)
		require.InDelta(t, 1, h.metric("meshsds_sds_revoked_streams_closed_total"), 0)

		// The revoked token cannot open a new stream either.
		again := sdstest.OpenStream(t, revokedConn, "default.web-1", false, sds.NameIdentityCert)
		_, err = again.Recv(10 * time.Second)
		require.Equal(t, codes.PermissionDenied, status.Code(err))
	})
}

// fakeTimers records renewal timers so a test can fire them.
type fakeTimers struct {
	mu    sync.Mutex
	fires []func()
	waits []time.Duration
}

func (f *fakeTimers) afterFunc(d time.Duration, fn func()) func() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fires = append(f.fires, fn)
	f.waits = append(f.waits, d)
	return func() bool { return true }
}

func (f *fakeTimers) last() (time.Duration, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waits[len(f.waits)-1], f.fires[len(f.fires)-1]
}

func TestRenewalIsScheduledAndPushed(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		timers := &fakeTimers{}
		h := newHarness(t, transport, func(c *cache.Config, _ *sds.ServerConfig) {
			c.AfterFunc = timers.afterFunc
			c.Jitter = func() float64 { return 0 }
		})
		rm := resolved(t, "default", pkitest.NewRootCA(t, "ca"))
		rm.DPCertValidity = 10 * time.Hour
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": rm}, time.Now())
		h.cache.SetReady()
		w := h.connect("default", "web-1", "web")
		first := w.held.Leaf.SerialNumber

		wait, fire := timers.last()
		life := 10*time.Hour + pki.Backdate
		require.InDelta(t, float64(life*4/5-pki.Backdate), float64(wait), float64(time.Second))

		fire()
		w.refresh(t, true, false)
		require.NotEqual(t, first, w.held.Leaf.SerialNumber)
		w.bundle.ExpectNothing(quiet) // a renewal does not touch the bundle
		require.InDelta(t, 2, h.metric("meshsds_certificates_issued_total"), 0)
	})
}

func TestStreamClosedWhenItsTokenExpires(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", pkitest.NewRootCA(t, "ca"))}, time.Now())
		h.cache.SetReady()
		raw, err := h.issuer.Issue(token.Claims{Mesh: "default", Name: "web-1", Tags: map[string][]string{sds.ServiceTag: {"web"}}}, 2*time.Second, time.Now())
		require.NoError(t, err)
		s := sdstest.OpenStream(t, sdstest.Dial(t, h.addr, raw), "default.web-1", false, sds.NameIdentityCert)
		got, _ := s.Expect()
		require.Len(t, got, 1)
		_, err = s.Recv(10 * time.Second)
		require.Equal(t, codes.Unauthenticated, status.Code(err), "got %v", err)
		require.Contains(t, status.Convert(err).Message(), "expired")
	})
}

// sent checks the error of a stream's Send: io.EOF means the server ended
// the stream first (refused it at its headers), and Recv tells why.
func sent(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, io.EOF) {
		require.NoError(t, err)
	}
}
