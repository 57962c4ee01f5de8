package featuretests

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
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

const quiet = 300 * time.Millisecond // how long "nothing arrives" is watched

// workload is one simulated data plane with identity_cert and mesh_ca
// streams, the way Envoy subscribes without ADS.
type workload struct {
	identity, bundle       *sdstest.Stream
	idSecret, bundleSecret *tlsv3.Secret
	held                   *sdstest.Workload
}

func (h *harness) connect(mesh, name, svc string) *workload {
	h.t.Helper()
	return h.connectWith(mesh, name, h.token(mesh, name, svc))
}

// connectWith connects as mesh/name with the token tok.
func (h *harness) connectWith(mesh, name, tok string) *workload {
	h.t.Helper()
	conn := sdstest.Dial(h.t, h.addr, tok)
	w := &workload{
		identity: sdstest.OpenStream(h.t, conn, mesh+"."+name, false, sds.NameIdentityCert),
		bundle:   sdstest.OpenStream(h.t, conn, mesh+"."+name, false, sds.NameMeshCA),
	}
	w.refresh(h.t, true, true)
	return w
}

// refresh receives the next identity and/or bundle push.
func (w *workload) refresh(t *testing.T, identity, bundle bool) {
	t.Helper()
	if identity {
		s, _ := w.identity.Expect()
		require.Len(t, s, 1)
		w.idSecret = s[sds.NameIdentityCert]
		require.NotNil(t, w.idSecret)
	}
	if bundle {
		s, _ := w.bundle.Expect()
		require.Len(t, s, 1)
		w.bundleSecret = s[sds.NameMeshCA]
		require.NotNil(t, w.bundleSecret)
	}
	w.held = sdstest.WorkloadFrom(t, w.idSecret, w.bundleSecret)
}

// rotate receives, on every workload and ACKing like Envoy, the pushes of a
// CA change: the bundle with both CAs, then the certificate of the new CA,
// then the bundle of the new CA alone.
func rotate(t *testing.T, wls ...*workload) {
	t.Helper()
	for _, w := range wls {
		w.refresh(t, false, true)
	}
	for _, w := range wls {
		w.refresh(t, true, false)
	}
	for _, w := range wls {
		w.refresh(t, false, true)
	}
}

func TestTwoDataplanesHandshakeAndOtherMeshFails(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		caA, caB := pkitest.NewRootCA(t, "mesh a"), pkitest.NewRootCA(t, "mesh b")
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"a": resolved(t, "a", caA), "b": resolved(t, "b", caB)}, time.Now())
		h.cache.SetReady()

		web := h.connect("a", "web-1", "web")
		backend := h.connect("a", "backend-1", "backend")
		other := h.connect("b", "web-1", "web")

		require.Equal(t, []string{"spiffe://a/web"}, urisOf(web.held.Leaf))
		require.Equal(t, []string{"spiffe://a/backend"}, urisOf(backend.held.Leaf))
		require.NoError(t, sdstest.Handshake(backend.held, web.held, sdstest.SPIFFE("a", "backend"), sdstest.SPIFFE("a", "web")))
		require.NoError(t, sdstest.Handshake(web.held, backend.held, sdstest.SPIFFE("a", "web"), sdstest.SPIFFE("a", "backend")))
		// A data plane of mesh b trusts only b's CA and holds a b certificate.
		require.Error(t, sdstest.Handshake(backend.held, other.held, sdstest.SPIFFE("a", "backend"), sdstest.SPIFFE("b", "web")))
		// The SAN check matters: web cannot pose as backend.
		require.Error(t, sdstest.Handshake(web.held, backend.held, sdstest.SPIFFE("a", "backend"), sdstest.SPIFFE("a", "backend")))

		require.InDelta(t, 3, h.metric("meshsds_sds_connected_dataplanes"), 0)
		require.InDelta(t, 3, h.metric("meshsds_certificates_issued_total"), 0)
	})
}

func urisOf(c *x509.Certificate) []string {
	out := make([]string, 0, len(c.URIs))
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

func TestWorkloadCertificateShape(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		root := pkitest.NewRootCA(t, "root")
		inter := pkitest.NewIntermediateCA(t, "intermediate", root)
		ca, err := pki.ParseCA(append(append([]byte{}, inter.CertPEM...), root.CertPEM...), inter.KeyPEM, time.Now())
		require.NoError(t, err)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": {Name: "default", CA: ca, DPCertValidity: 2 * time.Hour}}, time.Now())
		h.cache.SetReady()

		raw, err := h.issuer.Issue(tokenClaims("default", "web-1", map[string][]string{
			sds.ServiceTag: {"web", "web-admin"}, "kuma.io/zone": {"east"}, "version": {"v1"},
		}), 24*time.Hour, time.Now()) // outlives the certificate: it does not cut it short
		require.NoError(t, err)
		conn := sdstest.Dial(t, h.addr, raw)
		id := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameIdentityCert)
		bundle := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameMeshCA)
		ids, _ := id.Expect()
		bs, _ := bundle.Expect()
		w := sdstest.WorkloadFrom(t, ids[sds.NameIdentityCert], bs[sds.NameMeshCA])

		leaf := w.Leaf
		require.Equal(t, []string{"spiffe://default/web", "spiffe://default/web-admin", "kuma://kuma.io/zone/east", "kuma://version/v1"}, urisOf(leaf))
		require.Equal(t, "ECDSA", leaf.PublicKeyAlgorithm.String())
		require.Contains(t, leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		require.Contains(t, leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		require.False(t, leaf.IsCA)
		require.WithinDuration(t, time.Now().Add(-10*time.Second), leaf.NotBefore, 5*time.Second)
		require.WithinDuration(t, time.Now().Add(2*time.Hour), leaf.NotAfter, 5*time.Second)
		// The chain carries the intermediate, not the root; the bundle is the root.
		require.Len(t, w.Cert.Certificate, 2)
		require.Equal(t, inter.Cert.Raw, w.Cert.Certificate[1])
		require.Equal(t, root.CertPEM, bs[sds.NameMeshCA].GetValidationContext().GetTrustedCa().GetInlineBytes())
	})
}

func TestNamesAliasesAndUnknown(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.serve(pkitest.NewRootCA(t, "ca"))
		conn := h.dial("default", "web-1", "web")

		t.Run("several names on one stream, plus an unknown one", func(t *testing.T) {
			s := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameMeshCA, "no-such-secret", sds.NameIdentityCert)
			got, resp := s.Expect()
			require.Len(t, got, 2)
			require.Contains(t, got, sds.NameIdentityCert)
			require.Contains(t, got, sds.NameMeshCA)
			require.NotEmpty(t, resp.GetVersionInfo())
			require.InDelta(t, 1, h.metric("meshsds_sds_unknown_resource_names_total"), 0)
			s.ExpectNothing(quiet) // the ACK is not answered
		})
		t.Run("Istio and SPIRE aliases", func(t *testing.T) {
			s := sdstest.OpenStream(t, conn, "default.web-1", false, sds.AliasIdentity, sds.AliasMeshCA)
			got, _ := s.Expect()
			require.Len(t, got, 2)
			require.NotNil(t, got[sds.AliasIdentity].GetTlsCertificate())
			require.NotNil(t, got[sds.AliasMeshCA].GetValidationContext())
		})
		t.Run("only unknown names: no answer", func(t *testing.T) {
			s := sdstest.OpenStream(t, conn, "default.web-1", false, "foo")
			s.ExpectNothing(quiet)
			dps := h.server.Dataplanes()
			require.Len(t, dps, 1)
			var unknown []string
			for _, st := range dps[0].Streams {
				unknown = append(unknown, st.UnknownNames...)
			}
			require.Contains(t, unknown, "foo")
		})
		t.Run("ADS for the Secret type", func(t *testing.T) {
			s := sdstest.OpenStream(t, conn, "default.web-1", true, sds.NameIdentityCert, sds.NameMeshCA)
			got, _ := s.Expect()
			require.Len(t, got, 2)
		})
		t.Run("changing names on a stream", func(t *testing.T) {
			s := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameMeshCA)
			_, resp := s.Expect()
			require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{
				Node: &corev3.Node{Id: "default.web-1"}, TypeUrl: xds.TypeSecret, ResourceNames: []string{sds.NameMeshCA, sds.NameIdentityCert},
				VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
			}))
			resp2, err := s.Recv(10 * time.Second)
			require.NoError(t, err)
			require.Len(t, sdstest.Decode(t, resp2), 2)
		})
	})
}

func TestFetchAndDelta(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		ca := pkitest.NewRootCA(t, "ca")
		h.serve(ca)
		conn := h.dial("default", "web-1", "web")
		client := secretv3.NewSecretDiscoveryServiceClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		resp, err := client.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "default.web-1"}, TypeUrl: xds.TypeSecret, ResourceNames: []string{sds.NameIdentityCert, sds.NameMeshCA},
		})
		require.NoError(t, err)
		fetched := sdstest.Decode(t, resp)
		require.Len(t, fetched, 2)

		ds, err := client.DeltaSecrets(ctx)
		require.NoError(t, err)
		require.NoError(t, ds.Send(&discoveryv3.DeltaDiscoveryRequest{
			Node: &corev3.Node{Id: "default.web-1"}, TypeUrl: xds.TypeSecret, ResourceNamesSubscribe: []string{sds.NameIdentityCert, sds.NameMeshCA, "nope"},
		}))
		d, err := ds.Recv()
		require.NoError(t, err)
		require.Len(t, d.GetResources(), 2)
		versions := map[string]string{}
		for _, r := range d.GetResources() {
			sec := &tlsv3.Secret{}
			require.NoError(t, r.GetResource().UnmarshalTo(sec))
			require.NoError(t, sec.ValidateAll())
			require.Equal(t, r.GetName(), sec.GetName())
			versions[r.GetName()] = r.GetVersion()
		}
		// Fetch and the stream share the cached certificate: one issue.
		require.InDelta(t, 1, h.metric("meshsds_certificates_issued_total"), 0)
		require.NoError(t, ds.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.TypeSecret, ResponseNonce: d.GetNonce()}))
		require.Eventually(t, func() bool { return h.metric("meshsds_sds_acks_total", "api", "delta") == 1 }, 10*time.Second, 10*time.Millisecond)

		// A CA change reaches the delta stream in its phases: each push carries
		// only what changed, and the stream ends with both secrets new.
		newCA := pkitest.NewRootCA(t, "ca2")
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", newCA)}, time.Now())
		got := map[string]*tlsv3.Secret{}
		var order []string
		for len(order) < 3 {
			d2, err := ds.Recv()
			require.NoError(t, err)
			for _, r := range d2.GetResources() {
				require.NotEqual(t, versions[r.GetName()], r.GetVersion())
				sec := &tlsv3.Secret{}
				require.NoError(t, r.GetResource().UnmarshalTo(sec))
				got[r.GetName()] = sec
				order = append(order, r.GetName())
			}
			require.NoError(t, ds.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.TypeSecret, ResponseNonce: d2.GetNonce()}))
		}
		require.Equal(t, []string{sds.NameMeshCA, sds.NameIdentityCert, sds.NameMeshCA}, order)
		require.Equal(t, string(newCA.CertPEM), string(got[sds.NameMeshCA].GetValidationContext().GetTrustedCa().GetInlineBytes()))
	})
}

func TestRotationReachesOnlyItsMesh(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		bState := resolved(t, "b", pkitest.NewRootCA(t, "b1"))
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"a": resolved(t, "a", pkitest.NewRootCA(t, "a1")), "b": bState}, time.Now())
		h.cache.SetReady()

		web := h.connect("a", "web-1", "web")
		backend := h.connect("a", "backend-1", "backend")
		other := h.connect("b", "web-1", "web")
		oldSerial := web.held.Leaf.SerialNumber

		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"a": resolved(t, "a", pkitest.NewRootCA(t, "a2")), "b": bState}, time.Now())

		rotate(t, web, backend)
		require.NotEqual(t, oldSerial, web.held.Leaf.SerialNumber)
		require.NoError(t, sdstest.Handshake(backend.held, web.held, sdstest.SPIFFE("a", "backend"), sdstest.SPIFFE("a", "web")))
		other.identity.ExpectNothing(quiet)
		other.bundle.ExpectNothing(quiet)
		require.Positive(t, h.histogramCount("meshsds_sds_push_latency_seconds"))
	})
}

func TestReconnectDoesNotReissue(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.serve(pkitest.NewRootCA(t, "ca"))
		tok := h.token("default", "web-1", "web")
		first := h.connectWith("default", "web-1", tok)
		first.identity.Cancel()
		first.bundle.Cancel()
		second := h.connectWith("default", "web-1", tok)
		require.Equal(t, first.held.Leaf.SerialNumber, second.held.Leaf.SerialNumber)
		require.InDelta(t, 1, h.metric("meshsds_certificates_issued_total"), 0)
	})
}

// TestNewTokenGetsANewCertificate: a data plane given another token (the
// replacement of a revoked, stolen one) never gets the certificate and key
// served under the old token.
func TestNewTokenGetsANewCertificate(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.serve(pkitest.NewRootCA(t, "ca"))
		first := h.connect("default", "web-1", "web")
		second := h.connect("default", "web-1", "web") // another token
		require.NotEqual(t, first.held.Leaf.SerialNumber, second.held.Leaf.SerialNumber)
		require.NotEqual(t, first.idSecret.GetTlsCertificate().GetPrivateKey().GetInlineBytes(),
			second.idSecret.GetTlsCertificate().GetPrivateKey().GetInlineBytes())
		require.InDelta(t, 2, h.metric("meshsds_certificates_issued_total"), 0)
	})
}

// TestCertificateNeverOutlivesItsToken: a token valid for a minute yields a
// certificate that ends with it, not the mesh's hour.
func TestCertificateNeverOutlivesItsToken(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.serve(pkitest.NewRootCA(t, "ca")) // DPCertValidity: an hour
		issued := time.Now()
		tok, err := h.issuer.Issue(token.Claims{Mesh: "default", Name: "web-1", Tags: map[string][]string{sds.ServiceTag: {"web"}}}, time.Minute, issued)
		require.NoError(t, err)
		w := h.connectWith("default", "web-1", tok)
		expires := issued.Add(time.Minute).Truncate(time.Second) // a JWT's exp is in whole seconds
		require.False(t, w.held.Leaf.NotAfter.After(expires), "certificate until %s, token until %s", w.held.Leaf.NotAfter, expires)
		require.WithinDuration(t, expires, w.held.Leaf.NotAfter, 5*time.Second)
	})
}

func TestNotReadyAnswersNothing(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		conn := h.dial("default", "web-1", "web")
		s := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameIdentityCert, sds.NameMeshCA)
		s.ExpectNothing(quiet)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", pkitest.NewRootCA(t, "ca"))}, time.Now())
		s.ExpectNothing(quiet) // a view is in, but not every source has synced
		h.cache.SetReady()
		got, _ := s.Expect()
		require.Len(t, got, 2)
	})
}

func TestMeshWithoutCAWaits(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": {Name: "default"}}, time.Now())
		h.cache.SetReady()
		conn := h.dial("default", "web-1", "web")
		s := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameIdentityCert)
		s.ExpectNothing(quiet)
		h.cache.Update(map[string]*meshconfig.ResolvedMesh{"default": resolved(t, "default", pkitest.NewRootCA(t, "ca"))}, time.Now())
		got, _ := s.Expect()
		require.Len(t, got, 1)
	})
}

func TestNackIsRecordedAndNotResent(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.serve(pkitest.NewRootCA(t, "ca"))
		conn := h.dial("default", "web-1", "web")
		s := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameIdentityCert)
		resp, err := s.Recv(10 * time.Second)
		require.NoError(t, err)
		require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "default.web-1"}, TypeUrl: xds.TypeSecret, ResourceNames: []string{sds.NameIdentityCert},
			ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "bad key"},
		}))
		require.Eventually(t, func() bool { return h.metric("meshsds_sds_nacks_total", "api", "sotw") == 1 }, 10*time.Second, 5*time.Millisecond)
		s.ExpectNothing(quiet) // the same content is not sent again
		dps := h.server.Dataplanes()
		require.Len(t, dps, 1)
		require.Equal(t, "bad key", dps[0].Streams[0].LastNACKMessage)
		require.NotEmpty(t, dps[0].Streams[0].CertSerial)
	})
}

func TestNodeCannotChange(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.serve(pkitest.NewRootCA(t, "ca"))
		conn := h.dial("default", "web-1", "web")
		s := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameIdentityCert)
		resp, err := s.Recv(10 * time.Second)
		require.NoError(t, err)
		require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "default.backend-1"}, TypeUrl: xds.TypeSecret, ResourceNames: []string{sds.NameIdentityCert, sds.NameMeshCA},
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
		}))
		_, err = s.Recv(10 * time.Second)
		require.Equal(t, codes.InvalidArgument, status.Code(err), "got %v", err)
	})
}

func TestStreamEndedByTheTransportIsForgotten(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.serve(pkitest.NewRootCA(t, "ca"))
		conn := h.dial("default", "web-1", "web")
		s := sdstest.OpenStream(t, conn, "default.web-1", false, sds.NameIdentityCert)
		resp, err := s.Recv(10 * time.Second)
		require.NoError(t, err)
		require.Len(t, h.server.Dataplanes(), 1)

		// A request over the transport's 4 MiB limit: the transport ends the
		// stream, and the SDS server must let go of it.
		sent(t, s.Send(&discoveryv3.DiscoveryRequest{
			TypeUrl: xds.TypeSecret, ResourceNames: []string{sds.NameIdentityCert}, ResponseNonce: resp.GetNonce(),
			VersionInfo: strings.Repeat("v", 5<<20),
		}))
		_, err = s.Recv(10 * time.Second)
		require.Equal(t, codes.ResourceExhausted, status.Code(err), "got %v", err)
		require.Eventually(t, func() bool { return len(h.server.Dataplanes()) == 0 }, 10*time.Second, 5*time.Millisecond)
		require.InDelta(t, 0, h.metric("meshsds_sds_active_streams", "api", "sotw"), 0)
	})
}

func tokenClaims(mesh, name string, tags map[string][]string) token.Claims {
	return token.Claims{Mesh: mesh, Name: name, Tags: tags}
}

func TestRSAWorkloadKeys(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport, func(c *cache.Config, _ *sds.ServerConfig) { c.KeyType = pki.KeyRSA })
		h.serve(pkitest.NewRootCA(t, "ca"))
		web := h.connect("default", "web-1", "web")
		backend := h.connect("default", "backend-1", "backend")
		require.Equal(t, x509.RSA, web.held.Leaf.PublicKeyAlgorithm)
		require.Equal(t, 2048, web.held.Leaf.PublicKey.(*rsa.PublicKey).N.BitLen())
		require.NotZero(t, web.held.Leaf.KeyUsage&x509.KeyUsageKeyEncipherment)
		require.NoError(t, sdstest.Handshake(backend.held, web.held, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("default", "web")))
	})
}

func TestCloseStreamsEndsThemAndRefusesNewOnes(t *testing.T) {
	eachTransport(t, func(t *testing.T, transport string) {
		h := newHarness(t, transport)
		h.serve(pkitest.NewRootCA(t, "ca"))
		s := sdstest.OpenStream(t, h.dial("default", "web-1", "web"), "default.web-1", false, sds.NameIdentityCert)
		_, err := s.Recv(10 * time.Second)
		require.NoError(t, err)

		h.server.CloseStreams(status.Error(codes.Unavailable, "shutting down"))
		_, err = s.Recv(10 * time.Second)
		require.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)

		late := sdstest.OpenStream(t, h.dial("default", "web-2", "web"), "default.web-2", false, sds.NameIdentityCert)
		_, err = late.Recv(10 * time.Second)
		require.Equal(t, codes.Unavailable, status.Code(err), "a stream opened after CloseStreams: got %v", err)
		require.Empty(t, h.server.Dataplanes())
	})
}
