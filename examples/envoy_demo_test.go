package examples_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpccredv3 "github.com/envoyproxy/go-control-plane/envoy/config/grpc_credential/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// The typed extensions of the demo bootstraps (HTTP connection manager,
// router, file-based gRPC credentials) register through these imports.
var (
	_ = routerv3.Router{}
	_ = grpccredv3.FileBasedMetadataConfig{}
)

// decodeExample reads examples/envoy/<file>, substitutes vars as the README's
// sed does, and decodes it strictly into a validated Bootstrap. The
// end-to-end tests run every one of them in a real Envoy.
func decodeExample(t *testing.T, file string, vars map[string]string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("envoy", file))
	require.NoError(t, err)
	text := string(raw)
	for k, v := range vars {
		require.Contains(t, text, k)
		text = strings.ReplaceAll(text, k, v)
	}
	js, err := yaml.YAMLToJSON([]byte(text))
	require.NoError(t, err)
	var b bootstrapv3.Bootstrap
	require.NoError(t, protojson.Unmarshal(js, &b))
	require.NoError(t, b.ValidateAll())
	return &b
}

func TestEnvoyDemoBackend(t *testing.T) {
	const token = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"
	b := decodeExample(t, "backend.yaml", map[string]string{tokenPlaceholder: token})
	require.Equal(t, "default.backend", b.GetNode().GetId())
	require.EqualValues(t, 9902, b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue())

	ls := b.GetStaticResources().GetListeners()
	require.Len(t, ls, 1)
	l := ls[0]
	require.EqualValues(t, 25443, l.GetAddress().GetSocketAddress().GetPortValue())
	fc := l.GetFilterChains()[0]
	var dtc tlsv3.DownstreamTlsContext
	unmarshalAny(t, fc.GetTransportSocket().GetTypedConfig(), &dtc)
	require.True(t, dtc.GetRequireClientCertificate().GetValue())
	ctx := dtc.GetCommonTlsContext()
	requireMeshsdsSDS(t, ctx.GetTlsCertificateSdsSecretConfigs()[0], "identity_cert", token)
	cvc := ctx.GetCombinedValidationContext()
	requireMeshsdsSDS(t, cvc.GetValidationContextSdsSecretConfig(), "mesh_ca", token)
	sans := cvc.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	require.Len(t, sans, 1)
	require.Equal(t, tlsv3.SubjectAltNameMatcher_URI, sans[0].GetSanType())
	require.Equal(t, "spiffe://default/", sans[0].GetMatcher().GetPrefix(), "peers of mesh default only")

	var hcm hcmv3.HttpConnectionManager
	unmarshalAny(t, fc.GetFilters()[0].GetTypedConfig(), &hcm)
	require.Equal(t, hcmv3.HttpConnectionManager_SANITIZE_SET, hcm.GetForwardClientCertDetails())
	require.Equal(t, "local_app", hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster())

	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	requireEndpoint(t, clusters["meshsds"], "127.0.0.1", 5677)
	requireEndpoint(t, clusters["local_app"], "127.0.0.1", 8081)

	// The app the backend sidecar forwards to.
	app := decodeExample(t, "app.yaml", nil)
	al := app.GetStaticResources().GetListeners()
	require.Len(t, al, 1)
	require.Equal(t, "127.0.0.1", al[0].GetAddress().GetSocketAddress().GetAddress())
	require.EqualValues(t, 8081, al[0].GetAddress().GetSocketAddress().GetPortValue())
	require.EqualValues(t, 9903, app.GetAdmin().GetAddress().GetSocketAddress().GetPortValue())
}

func TestEnvoyDemoGoogleGrpcTokenFile(t *testing.T) {
	b := decodeExample(t, "web-google-grpc.yaml", map[string]string{
		"${MESHSDS_TOKEN_FILE}": "/run/meshsds/web.token",
		"${MESHSDS_SDS_CA}":     "/run/meshsds/sds.crt",
	})
	require.Equal(t, "default.web", b.GetNode().GetId())
	for _, c := range b.GetStaticResources().GetClusters() {
		require.NotEqual(t, "meshsds", c.GetName(), "google_grpc needs no cluster")
	}
	listeners := b.GetStaticResources().GetListeners()
	require.Len(t, listeners, 2)

	var dtc tlsv3.DownstreamTlsContext
	unmarshalAny(t, listeners[0].GetFilterChains()[0].GetTransportSocket().GetTypedConfig(), &dtc)
	for _, s := range []*tlsv3.SdsSecretConfig{
		dtc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0],
		dtc.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig(),
	} {
		src := s.GetSdsConfig().GetApiConfigSource()
		require.Equal(t, corev3.ApiConfigSource_GRPC, src.GetApiType())
		gg := src.GetGrpcServices()[0].GetGoogleGrpc()
		require.NotNil(t, gg)
		require.Equal(t, "127.0.0.1:5677", gg.GetTargetUri())
		require.Equal(t, "/run/meshsds/sds.crt", gg.GetChannelCredentials().GetSslCredentials().GetRootCerts().GetFilename())
		require.Equal(t, "envoy.grpc_credentials.file_based_metadata", gg.GetCredentialsFactoryName())
		require.Len(t, gg.GetCallCredentials(), 1)
		plugin := gg.GetCallCredentials()[0].GetFromPlugin()
		require.Equal(t, "envoy.grpc_credentials.file_based_metadata", plugin.GetName())
		var fbm grpccredv3.FileBasedMetadataConfig
		unmarshalAny(t, plugin.GetTypedConfig(), &fbm)
		require.Equal(t, "/run/meshsds/web.token", fbm.GetSecretData().GetFilename())
		require.Equal(t, "authorization", fbm.GetHeaderKey())
		require.Equal(t, "Bearer ", fbm.GetHeaderPrefix())
		require.Empty(t, src.GetGrpcServices()[0].GetInitialMetadata(), "the token is in the file, not the bootstrap")
	}
}
