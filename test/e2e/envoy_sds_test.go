package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"github.com/stretchr/testify/require"
)

// sdsBootstrap is one data plane with a TLS listener whose certificate and
// trust come from meshsds, in any of the ways Envoy can ask for them. The
// tests generate every combination from it rather than committing dozens of
// bootstraps.
var sdsBootstrap = template.Must(template.New("bootstrap").Parse(`
node: { id: {{.NodeID}}, cluster: {{.Service}} }
{{- define "grpc_service"}}
  {{- if eq .Client "envoy_grpc"}}{ envoy_grpc: { cluster_name: meshsds }
  {{- else}}{ google_grpc: { target_uri: "{{.Target}}", stat_prefix: meshsds
    {{- if .CAFile}}, channel_credentials: { ssl_credentials: { root_certs: { filename: "{{.CAFile}}" } } }{{end}}
    {{- if .TokenFile}}, credentials_factory_name: envoy.grpc_credentials.file_based_metadata,
      call_credentials: [ { from_plugin: { name: envoy.grpc_credentials.file_based_metadata, typed_config: {
        "@type": type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig,
        secret_data: { filename: "{{.TokenFile}}" }{{if .TokenPrefix}}, header_prefix: "{{.TokenPrefix}}"{{end}} } } } ]
    {{- end}} }
  {{- end}}
  {{- if .Token}}, initial_metadata: [ { key: authorization, value: "Bearer {{.Token}}" } ]{{end}} }
{{- end}}
{{- if .ADS}}
dynamic_resources:
  ads_config:
    api_type: {{if .Delta}}DELTA_GRPC{{else}}GRPC{{end}}
    transport_api_version: V3
    grpc_services: [ {{template "grpc_service" .}} ]
{{- end}}
static_resources:
  listeners:
  - name: mtls
    address: { socket_address: { address: 127.0.0.1, port_value: {{.ListenerPort}} } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: identity_cert
              sds_config: &sds
                resource_api_version: V3
                {{- if .ADS}}
                ads: {}
                {{- else}}
                api_config_source:
                  api_type: {{if .Delta}}DELTA_GRPC{{else}}GRPC{{end}}
                  transport_api_version: V3
                  grpc_services: [ {{template "grpc_service" .}} ]
                {{- end}}
            validation_context_sds_secret_config: { name: mesh_ca, sds_config: *sds }
      filters:
      - name: envoy.filters.network.echo
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo }
  clusters:
  {{- if eq .Client "envoy_grpc"}}
  - name: meshsds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options:
            {{- if .HPACKTableSizeZero}}
            hpack_table_size: 0
            {{- end}}
            connection_keepalive: { interval: 30s, timeout: 5s }
    load_assignment:
      cluster_name: meshsds
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              {{- if .UnixSocket}}
              pipe: { path: "{{.UnixSocket}}" }
              {{- else}}
              socket_address: { address: 127.0.0.1, port_value: {{.SDSPort}} }
              {{- end}}
    {{- if .CAFile}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          validation_context:
            trusted_ca: { filename: "{{.CAFile}}" }
            match_typed_subject_alt_names:
            - san_type: IP_ADDRESS
              matcher: { exact: 127.0.0.1 }
    {{- end}}
  {{- else}}
  []
  {{- end}}
`))

// sdsFlavour says how an Envoy reaches meshsds and asks for its secrets.
type sdsFlavour struct {
	NodeID, Service string
	ListenerPort    string
	// ADS puts both secrets on one aggregated stream; Delta uses the
	// incremental protocol.
	ADS, Delta bool
	// Client is "envoy_grpc" or "google_grpc".
	Client string
	// SDSPort (TCP, with Target for google_grpc) or UnixSocket; CAFile makes
	// the connection TLS, trusting that certificate.
	SDSPort, Target, UnixSocket, CAFile string
	// Token goes in initial_metadata; TokenFile is read by the
	// file_based_metadata plugin (google_grpc), with TokenPrefix.
	Token, TokenFile, TokenPrefix string
	// HPACKTableSizeZero sets the SDS cluster's hpack_table_size to 0.
	HPACKTableSizeZero bool
}

func (f sdsFlavour) render(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, sdsBootstrap.Execute(&b, f))
	return b.String()
}

// api is the label meshsds' metrics give the flavour's protocol.
func (f sdsFlavour) api() string {
	switch {
	case f.ADS && f.Delta:
		return "ads_delta"
	case f.ADS:
		return "ads"
	case f.Delta:
		return "delta"
	}
	return "sotw"
}

// sdsConnection is how meshsds serves SDS: plain TCP on loopback, TLS, or a
// Unix socket; it fills the connection fields of a flavour.
type sdsConnection struct {
	name string
	// serve returns the extra serve flags and a function that points a
	// flavour at the server started with them.
	serve func(t *testing.T) (args []string, point func(s *server, f *sdsFlavour))
}

var sdsConnections = []sdsConnection{
	{"tcp", func(t *testing.T) ([]string, func(*server, *sdsFlavour)) {
		return nil, func(s *server, f *sdsFlavour) { pointTCP(t, s, f, "") }
	}},
	{"tls", func(t *testing.T) ([]string, func(*server, *sdsFlavour)) {
		cert, key := sdsServerCert(t)
		return []string{"--sds-tls-cert", cert, "--sds-tls-key", key}, func(s *server, f *sdsFlavour) { pointTCP(t, s, f, cert) }
	}},
	{"unix", func(t *testing.T) ([]string, func(*server, *sdsFlavour)) {
		sock := filepath.Join(t.TempDir(), "sds.sock")
		return []string{"--sds-address", "unix://" + sock}, func(_ *server, f *sdsFlavour) {
			f.UnixSocket, f.Target = sock, "unix://"+sock
		}
	}},
}

func pointTCP(t *testing.T, s *server, f *sdsFlavour, caFile string) {
	t.Helper()
	_, port, err := net.SplitHostPort(s.sds)
	require.NoError(t, err)
	f.SDSPort, f.Target, f.CAFile = port, s.sds, caFile
}

// sdsServerCert makes meshsds' SDS serving certificate (IP SAN 127.0.0.1)
// with its own CLI, and returns the certificate and key files.
func sdsServerCert(t *testing.T) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "sds.crt"), filepath.Join(dir, "sds.key")
	out, err := exec.Command(binary, "generate", "tls-certificate", "--type", "server", "--hostname", "127.0.0.1",
		"--cert-file", cert, "--key-file", key).CombinedOutput()
	require.NoError(t, err, string(out))
	return cert, key
}

// metricValue reads one sample of a scrape, 0 when absent.
func metricValue(t *testing.T, scrape, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(scrape)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

// TestEnvoySDSFlavours runs a real Envoy in every way it can ask meshsds for
// its secrets: state-of-the-world per secret, ADS, delta (incremental) and
// delta ADS; through envoy_grpc and google_grpc; over TCP, TLS (Envoy
// verifying meshsds' certificate) and a Unix socket. Each must get both
// secrets, show them in /certs, and reject none; meshsds must have served
// them on the protocol asked for.
func TestEnvoySDSFlavours(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, cas := secretsDir(t)
			for _, conn := range sdsConnections {
				t.Run(conn.name, func(t *testing.T) {
					args, point := conn.serve(t)
					s := start(t, dir, append(transportArgs(transport), args...)...)
					for _, api := range []struct {
						name       string
						ads, delta bool
					}{{"sotw", false, false}, {"ads", true, false}, {"delta", false, true}, {"delta-ads", true, true}} {
						for _, client := range []string{"envoy_grpc", "google_grpc"} {
							t.Run(api.name+"/"+client, func(t *testing.T) {
								name := strings.ReplaceAll(fmt.Sprintf("%s-%s-%s", conn.name, api.name, client), "_", "-")
								f := sdsFlavour{
									NodeID: "default." + name, Service: "web", ListenerPort: freePort(t),
									ADS: api.ads, Delta: api.delta, Client: client,
									Token: s.token(t, "default", name, "web"),
								}
								point(s, &f)
								before := metricValue(t, s.scrape(t), `meshsds_sds_requests_total{api="`+f.api()+`"}`)
								e := startEnvoy(t, name, f.render(t))
								waitHolds(t, e, 1, "spiffe://default/web", serial(cas["default"]))
								requireSDSClean(t, e, 2)
								after := metricValue(t, s.scrape(t), `meshsds_sds_requests_total{api="`+f.api()+`"}`)
								require.Greater(t, after, before, "served over %s", f.api())
							})
						}
					}
				})
			}
		})
	}
}
