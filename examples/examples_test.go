package examples_test

import (
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// The typed extensions used by bootstrap.yaml are registered by importing
// their packages above (tlsv3, tcpproxyv3, httpv3); protojson resolves the
// "@type" of each Any through the global registry.

const tokenPlaceholder = "${MESHSDS_TOKEN}"

// loadBootstrap reads bootstrap.yaml, substitutes the token the way envsubst
// would, and decodes it strictly into a validated Bootstrap.
func loadBootstrap(t *testing.T, token string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile("envoy/bootstrap.yaml")
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(raw), "Bearer "+tokenPlaceholder),
		"the token placeholder must appear exactly once (the SDS source is a YAML anchor)")
	text := strings.ReplaceAll(string(raw), tokenPlaceholder, token)
	require.NotContains(t, text, "${", "envsubst would leave no other placeholder")

	js, err := yaml.YAMLToJSON([]byte(text))
	require.NoError(t, err)
	var b bootstrapv3.Bootstrap
	require.NoError(t, protojson.Unmarshal(js, &b))
	require.NoError(t, b.ValidateAll())
	return &b
}

func TestEnvoyBootstrap(t *testing.T) {
	const token = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"
	b := loadBootstrap(t, token)

	t.Run("node", func(t *testing.T) {
		mesh, name, ok := strings.Cut(b.GetNode().GetId(), ".")
		require.True(t, ok, "node.id must be <mesh>.<name>")
		require.Equal(t, "default", mesh)
		require.Equal(t, "web", name)
		require.Equal(t, "web", b.GetNode().GetCluster())
		sa := b.GetAdmin().GetAddress().GetSocketAddress()
		require.Equal(t, "127.0.0.1", sa.GetAddress())
		require.EqualValues(t, 9901, sa.GetPortValue())
	})

	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	listeners := map[string]*listenerv3.Listener{}
	for _, l := range b.GetStaticResources().GetListeners() {
		listeners[l.GetName()] = l
	}

	t.Run("meshsds cluster speaks HTTP/2", func(t *testing.T) {
		c := clusters["meshsds"]
		require.NotNil(t, c)
		require.Equal(t, clusterv3.Cluster_STATIC, c.GetType())
		anyOpts := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
		require.NotNil(t, anyOpts)
		var opts httpv3.HttpProtocolOptions
		require.NoError(t, anyOpts.UnmarshalTo(&opts))
		require.NotNil(t, opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions())
		requireEndpoint(t, c, "127.0.0.1", 5677)
	})

	t.Run("inbound listener", func(t *testing.T) {
		l := listeners["inbound_web"]
		require.NotNil(t, l)
		require.EqualValues(t, 15443, l.GetAddress().GetSocketAddress().GetPortValue())
		require.Len(t, l.GetFilterChains(), 1)
		fc := l.GetFilterChains()[0]

		var dtc tlsv3.DownstreamTlsContext
		unmarshalAny(t, fc.GetTransportSocket().GetTypedConfig(), &dtc)
		require.True(t, dtc.GetRequireClientCertificate().GetValue())
		ctx := dtc.GetCommonTlsContext()
		require.Len(t, ctx.GetTlsCertificateSdsSecretConfigs(), 1)
		requireMeshsdsSDS(t, ctx.GetTlsCertificateSdsSecretConfigs()[0], "identity_cert", token)
		// Peers must be of mesh default: the URI SAN prefix keeps meshes that
		// share a CA apart.
		cvc := ctx.GetCombinedValidationContext()
		require.NotNil(t, cvc)
		requireMeshsdsSDS(t, cvc.GetValidationContextSdsSecretConfig(), "mesh_ca", token)
		sans := cvc.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
		require.Len(t, sans, 1)
		require.Equal(t, tlsv3.SubjectAltNameMatcher_URI, sans[0].GetSanType())
		require.Equal(t, "spiffe://default/", sans[0].GetMatcher().GetPrefix())
		require.Empty(t, ctx.GetTlsCertificates(), "no Envoy-side certificate files")

		require.Len(t, fc.GetFilters(), 1)
		var tp tcpproxyv3.TcpProxy
		unmarshalAny(t, fc.GetFilters()[0].GetTypedConfig(), &tp)
		require.Equal(t, "local_app", tp.GetCluster())
		requireEndpoint(t, clusters["local_app"], "127.0.0.1", 8080)
	})

	t.Run("backend cluster", func(t *testing.T) {
		c := clusters["backend"]
		require.NotNil(t, c)
		requireEndpoint(t, c, "127.0.0.1", 25443)
		var utc tlsv3.UpstreamTlsContext
		unmarshalAny(t, c.GetTransportSocket().GetTypedConfig(), &utc)
		ctx := utc.GetCommonTlsContext()
		require.Len(t, ctx.GetTlsCertificateSdsSecretConfigs(), 1)
		requireMeshsdsSDS(t, ctx.GetTlsCertificateSdsSecretConfigs()[0], "identity_cert", token)
		cvc := ctx.GetCombinedValidationContext()
		require.NotNil(t, cvc)
		requireMeshsdsSDS(t, cvc.GetValidationContextSdsSecretConfig(), "mesh_ca", token)
		sans := cvc.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
		require.Len(t, sans, 1)
		require.Equal(t, tlsv3.SubjectAltNameMatcher_URI, sans[0].GetSanType())
		require.Equal(t, "spiffe://default/backend", sans[0].GetMatcher().GetExact())

		l := listeners["outbound_backend"]
		require.NotNil(t, l)
		var tp tcpproxyv3.TcpProxy
		unmarshalAny(t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), &tp)
		require.Equal(t, "backend", tp.GetCluster())
	})
}

func TestEnvoyBootstrapRejectsBrokenCopy(t *testing.T) {
	// Guards the test itself: strict decoding and validation must catch a
	// typo or an out-of-range value a user might introduce.
	raw, err := os.ReadFile("envoy/bootstrap.yaml")
	require.NoError(t, err)
	for name, mutate := range map[string]func(string) string{
		"unknown field": func(s string) string {
			return strings.Replace(s, "require_client_certificate:", "require_client_certificates:", 1)
		},
		"port out of range": func(s string) string { return strings.Replace(s, "port_value: 15443", "port_value: 154430", 1) },
		"unknown enum":      func(s string) string { return strings.Replace(s, "api_type: GRPC", "api_type: GRPCS", 1) },
		"negative timeout":  func(s string) string { return strings.Replace(s, "connect_timeout: 1s", "connect_timeout: -1s", 1) },
	} {
		t.Run(name, func(t *testing.T) {
			js, err := yaml.YAMLToJSON([]byte(mutate(string(raw))))
			require.NoError(t, err)
			var b bootstrapv3.Bootstrap
			err = protojson.Unmarshal(js, &b)
			if err == nil {
				err = b.ValidateAll()
			}
			require.Error(t, err)
		})
	}
}

func unmarshalAny(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	require.NotNil(t, a)
	require.NoError(t, a.UnmarshalTo(m))
}

func requireEndpoint(t *testing.T, c *clusterv3.Cluster, addr string, port uint32) {
	t.Helper()
	require.NotNil(t, c)
	eps := c.GetLoadAssignment().GetEndpoints()
	require.Len(t, eps, 1)
	require.Len(t, eps[0].GetLbEndpoints(), 1)
	sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	require.Equal(t, addr, sa.GetAddress())
	require.Equal(t, port, sa.GetPortValue())
}

// requireMeshsdsSDS checks that an SDS secret config asks meshsds for name
// over gRPC (v3) and authenticates with the dataplane token.
func requireMeshsdsSDS(t *testing.T, s *tlsv3.SdsSecretConfig, name, token string) {
	t.Helper()
	require.NotNil(t, s)
	require.Equal(t, name, s.GetName())
	cfg := s.GetSdsConfig()
	require.Equal(t, corev3.ApiVersion_V3, cfg.GetResourceApiVersion())
	src := cfg.GetApiConfigSource()
	require.Equal(t, corev3.ApiConfigSource_GRPC, src.GetApiType())
	require.Equal(t, corev3.ApiVersion_V3, src.GetTransportApiVersion())
	require.Len(t, src.GetGrpcServices(), 1)
	gs := src.GetGrpcServices()[0]
	require.Equal(t, "meshsds", gs.GetEnvoyGrpc().GetClusterName())
	require.Len(t, gs.GetInitialMetadata(), 1)
	require.Equal(t, "authorization", gs.GetInitialMetadata()[0].GetKey())
	require.Equal(t, "Bearer "+token, gs.GetInitialMetadata()[0].GetValue())
}

func TestPrometheusConfig(t *testing.T) {
	raw, err := os.ReadFile("prometheus/prometheus.yml")
	require.NoError(t, err)
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &cfg))
	var found bool
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "meshsds" {
			continue
		}
		found = true
		require.Equal(t, "/metrics", sc.MetricsPath)
		require.Len(t, sc.StaticConfigs, 1)
		require.Equal(t, []string{"127.0.0.1:5680"}, sc.StaticConfigs[0].Targets)
	}
	require.True(t, found, "a scrape job named meshsds")
}

func TestSecretsExample(t *testing.T) {
	raw, err := os.ReadFile("secrets/mesh.yaml")
	require.NoError(t, err)
	var mesh struct {
		Type string `json:"type"`
		Name string `json:"name"`
		MTLS struct {
			EnabledBackend string `json:"enabledBackend"`
			Backends       []struct {
				Name   string `json:"name"`
				Type   string `json:"type"`
				DPCert struct {
					Rotation struct {
						Expiration string `json:"expiration"`
					} `json:"rotation"`
				} `json:"dpCert"`
				Config struct {
					Cert struct {
						Secret string `json:"secret"`
					} `json:"cert"`
					Key struct {
						Secret string `json:"secret"`
					} `json:"key"`
				} `json:"config"`
			} `json:"backends"`
		} `json:"mtls"`
	}
	require.NoError(t, yaml.UnmarshalStrict(raw, &mesh))
	require.Equal(t, "Mesh", mesh.Type)
	require.Equal(t, "default", mesh.Name)
	require.Equal(t, "ca-1", mesh.MTLS.EnabledBackend)
	require.Len(t, mesh.MTLS.Backends, 1)
	be := mesh.MTLS.Backends[0]
	require.Equal(t, "ca-1", be.Name)
	require.Equal(t, "provided", be.Type)
	require.Equal(t, "24h", be.DPCert.Rotation.Expiration)
	require.Equal(t, "ca-cert", be.Config.Cert.Secret)
	require.Equal(t, "ca-key", be.Config.Key.Secret)

	ignore, err := os.ReadFile("secrets/default/.gitignore")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"ca-cert", "ca-key"}, nonComment(string(ignore)))
}

func nonComment(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
