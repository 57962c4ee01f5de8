package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/envoytest"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// twinMesh is a mesh that shares mesh default's CA: only the spiffe://<mesh>/
// prefix of the URI SAN keeps its data planes out of mesh default.
const twinMesh = `type: Mesh
name: twin
mtls:
  backends:
  - name: ca-1
    type: provided
    config:
      cert: { secret: ca-cert }
      key: { secret: ca-key }
`

// meshWithTwin is secretsDir plus mesh twin, whose CA files are copies of
// mesh default's.
func meshWithTwin(t *testing.T) (string, map[string]*pki.KeyPair) {
	t.Helper()
	dir, cas := secretsDir(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "twin.yaml"), []byte(twinMesh), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "twin"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "twin", "ca-cert"), cas["default"].CertPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "twin", "ca-key"), cas["default"].KeyPEM, 0o600))
	return dir, cas
}

// demo is the two-sidecar demo of examples/envoy/README.md running on free
// ports: the app, the backend sidecar and the web sidecar.
type demo struct {
	s                     *server
	sdsPort               string
	appPort, backendPort  string
	webOutPort, webInPort string
	app, backend, web     *envoytest.Envoy
}

// webURL is where a request enters the web sidecar's outbound listener.
func (d *demo) webURL() string { return "http://127.0.0.1:" + d.webOutPort + "/" }

// backendListener is the stat prefix of the backend sidecar's inbound
// listener.
func (d *demo) backendListener() string { return "listener.127.0.0.1_" + d.backendPort + "." }

// backendAddr is where the backend sidecar takes mTLS from web.
func (d *demo) backendAddr() string { return "127.0.0.1:" + d.backendPort }

// startDemo runs examples/envoy's app.yaml, backend.yaml and bootstrap.yaml
// against s, as the README does, with each port replaced by a free one.
func startDemo(t *testing.T, s *server) *demo {
	t.Helper()
	return startDemoWith(t, s, s.token(t, "default", "web", "web"), s.token(t, "default", "backend", "backend"))
}

// startDemoWith is startDemo with the given dataplane tokens of default.web
// and default.backend.
func startDemoWith(t *testing.T, s *server, webToken, backendToken string) *demo {
	t.Helper()
	_, sdsPort, err := net.SplitHostPort(s.sds)
	require.NoError(t, err)
	d := &demo{s: s, sdsPort: sdsPort, appPort: freePort(t), backendPort: freePort(t), webOutPort: freePort(t), webInPort: freePort(t)}
	d.app = startEnvoy(t, "app", exampleBootstrap(t, "app.yaml", nil, map[string]string{
		"port_value: 8081": "port_value: " + d.appPort,
	}))
	d.backend = startEnvoy(t, "backend", exampleBootstrap(t, "backend.yaml",
		map[string]string{"${MESHSDS_TOKEN}": backendToken},
		map[string]string{
			"0.0.0.0":           "127.0.0.1",
			"port_value: 25443": "port_value: " + d.backendPort,
			"port_value: 8081":  "port_value: " + d.appPort,
			"port_value: 5677":  "port_value: " + sdsPort,
		}))
	d.web = startEnvoy(t, "web", d.webBootstrap(t, "default", "web", webToken, d.webOutPort))
	return d
}

// webBootstrap is bootstrap.yaml as data plane <mesh>.<name> of service
// web, with its outbound listener on outPort calling the demo's backend
// sidecar.
func (d *demo) webBootstrap(t *testing.T, mesh, name, token, outPort string) string {
	t.Helper()
	rewrite := map[string]string{
		"0.0.0.0":           "127.0.0.1",
		"port_value: 15443": "port_value: " + freePort(t),
		"port_value: 10001": "port_value: " + outPort,
		"port_value: 25443": "port_value: " + d.backendPort,
		"port_value: 8080":  "port_value: " + freePort(t), // web's own app: not running
		"port_value: 5677":  "port_value: " + d.sdsPort,
	}
	if mesh != "default" || name != "web" {
		rewrite["id: default.web"] = "id: " + mesh + "." + name
	}
	return exampleBootstrap(t, "bootstrap.yaml", map[string]string{"${MESHSDS_TOKEN}": token}, rewrite)
}

func serial(ca *pki.KeyPair) string { return envoytest.SerialHex(ca.Cert.SerialNumber) }

// TestEnvoyExamplesCarryMTLSTraffic runs the shipped demo as a user would:
// a request through the web sidecar reaches the app through the backend
// sidecar over mTLS with identities from meshsds, and data planes of other
// meshes are refused by the backend's inbound listener.
func TestEnvoyExamplesCarryMTLSTraffic(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, cas := meshWithTwin(t)
			s := start(t, dir, transportArgs(transport)...)
			d := startDemo(t, s)

			waitHolds(t, d.web, 2, "spiffe://default/web", serial(cas["default"]))
			waitHolds(t, d.backend, 1, "spiffe://default/backend", serial(cas["default"]))
			requireSDSClean(t, d.web, 2)
			requireSDSClean(t, d.backend, 2)

			code, header, body, err := httpGet(d.webURL())
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, "hello from backend\n", body)
			// The backend sidecar verified web's certificate and told the app.
			require.Equal(t, "spiffe://default/web", header.Get("x-peer-identity"))
			waitStat(t, d.backend, d.backendListener()+"ssl.handshake", func(v uint64) bool { return v >= 1 })

			// meshsds sees both data planes, two streams each.
			dps := s.mustCLI(t, "", "inspect", "dataplanes")
			require.Contains(t, dps, "web")
			require.Contains(t, dps, "backend")

			t.Run("a data plane of a mesh sharing the CA is refused by its SPIFFE id", func(t *testing.T) {
				port := freePort(t)
				twin := startEnvoy(t, "twin-web", d.webBootstrap(t, "twin", "web", s.token(t, "twin", "web", "web"), port))
				waitHolds(t, twin, 2, "spiffe://twin/web", serial(cas["default"]))
				before := statOf(t, d.backend, d.backendListener()+"ssl.fail_verify_san")
				_, _, _, err := httpGet("http://127.0.0.1:" + port + "/")
				require.Error(t, err, "the backend must not serve mesh twin")
				// The twin trusted the backend (same CA, the SAN it expects):
				// the refusal is the backend's, by the URI SAN prefix.
				waitStat(t, d.backend, d.backendListener()+"ssl.fail_verify_san", func(v uint64) bool { return v > before })
			})

			t.Run("a data plane of a mesh with another CA is refused", func(t *testing.T) {
				port := freePort(t)
				other := startEnvoy(t, "other-web", d.webBootstrap(t, "other", "web", s.token(t, "other", "web", "web"), port))
				waitHolds(t, other, 2, "spiffe://other/web", serial(cas["other"]))
				_, _, _, err := httpGet("http://127.0.0.1:" + port + "/")
				require.Error(t, err)
				// Its sidecar refuses the backend first (an unknown CA) ...
				waitStat(t, other, "cluster.backend.ssl.fail_verify_error", func(v uint64) bool { return v >= 1 })

				// ... and the backend refuses its certificate: a client that
				// trusts anything and presents mesh other's identity.
				before := statOf(t, d.backend, d.backendListener()+"ssl.fail_verify_error")
				stranger := connect(t, s, "other", "web-2", "web")
				conn, err := tls.Dial("tcp", d.backendAddr(), &tls.Config{
					// Sent whatever CAs the backend says it accepts.
					GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger.held.Cert, nil },
					InsecureSkipVerify:   true, //nolint:gosec // the client is the attacker
				})
				if err == nil {
					_, _ = fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
					_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, err = bufio.NewReader(conn).ReadString('\n')
					conn.Close()
				}
				require.Error(t, err, "the backend must not answer mesh other")
				waitStat(t, d.backend, d.backendListener()+"ssl.fail_verify_error", func(v uint64) bool { return v > before })
			})

			// Nobody was served who should not have been, and the demo works on.
			code, _, body, err = httpGet(d.webURL())
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, code, body)
			requireSDSClean(t, d.web, 2)
			requireSDSClean(t, d.backend, 2)
		})
	}
}

// statOf reads one stat now.
func statOf(t *testing.T, e *envoytest.Envoy, name string) uint64 {
	t.Helper()
	v, err := e.Stat(name)
	require.NoError(t, err)
	return v
}

// TestEnvoyExampleBootstrapsLoad checks every shipped bootstrap with Envoy's
// own validation (--mode validate), as substituted by the README's sed.
func TestEnvoyExampleBootstrapsLoad(t *testing.T) {
	bin := envoytest.Binary(t)
	vars := map[string]map[string]string{
		"bootstrap.yaml":       {"${MESHSDS_TOKEN}": "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"},
		"backend.yaml":         {"${MESHSDS_TOKEN}": "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"},
		"app.yaml":             nil,
		"web-google-grpc.yaml": {"${MESHSDS_TOKEN_FILE}": "/tmp/web.token", "${MESHSDS_SDS_CA}": "sds.crt"},
	}
	entries, err := os.ReadDir(examplesDir)
	require.NoError(t, err)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		t.Run(e.Name(), func(t *testing.T) {
			v, ok := vars[e.Name()]
			require.True(t, ok, "a new example: add it to this test")
			dir := t.TempDir()
			path := filepath.Join(dir, e.Name())
			// Envoy reads the CA file the SDS client trusts while validating.
			require.NoError(t, os.WriteFile(filepath.Join(dir, "sds.crt"), pkitest.NewRootCA(t, "sds").CertPEM, 0o600))
			require.NoError(t, os.WriteFile(path, []byte(exampleBootstrap(t, e.Name(), v, nil)), 0o600))
			out, err := runEnvoyValidate(bin, path)
			require.Contains(t, out, "configuration '"+path+"' OK")
			if err != nil && e.Name() == "web-google-grpc.yaml" && strings.Contains(out, "Caught Segmentation fault") {
				// Envoy 1.40 validates this bootstrap, then crashes while
				// exiting validate mode (google_grpc with ssl_credentials):
				// Envoy's bug, not the file's. A real run is
				// TestEnvoyGoogleGrpcTokenFile.
				t.Logf("envoy --mode validate crashed after validating (Envoy bug): %v", err)
				return
			}
			require.NoError(t, err, out)
		})
	}
}
