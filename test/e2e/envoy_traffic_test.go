package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/envoytest"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// The tests here keep requests flowing through the demo of
// examples/envoy (web sidecar → mTLS → backend sidecar → app), each request
// on a new connection and so a new mTLS handshake between the sidecars,
// while the mesh's CA changes, certificates are renewed and meshsds
// restarts or crashes: not one request may fail.

const demoBody = "hello from backend\n"

// stopServer ends s: SIGTERM and a clean exit, or SIGKILL when crash.
func stopServer(t *testing.T, s *server, crash bool) {
	t.Helper()
	if crash {
		s.kill(t)
		return
	}
	require.NoError(t, s.proc.Signal(syscall.SIGTERM))
	err := <-s.exited
	s.exited <- err // for the cleanup
	require.NoError(t, err, "a clean exit")
}

// startAgain starts meshsds again on the SDS address and data directory of
// the stopped s, as a supervisor would.
func startAgain(t *testing.T, s *server, secretsDir string, args ...string) *server {
	t.Helper()
	again := start(t, secretsDir, append(args, "--sds-address", s.sds, "--data-dir", s.dataDir)...)
	again.sds = s.sds
	return again
}

// waitMetric waits until a sample of s's metrics satisfies ok.
func waitMetric(t *testing.T, s *server, series string, ok func(float64) bool) float64 {
	t.Helper()
	var v float64
	deadline := time.Now().Add(envoyWait)
	for time.Now().Before(deadline) {
		if v = metricValue(t, s.scrape(t), series); ok(v) {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s is %v after %s", series, v, envoyWait)
	return 0
}

// waitReconnected waits until both sidecars have every SDS stream up again
// to s (Envoy's view: each secret's control_plane.connected_state), and s
// counts all four.
func (d *demo) waitReconnected(t *testing.T, s *server) {
	t.Helper()
	for _, e := range []*envoytest.Envoy{d.web, d.backend} {
		waitStat(t, e, "sds.identity_cert.control_plane.connected_state", func(v uint64) bool { return v == 1 })
		waitStat(t, e, "sds.mesh_ca.control_plane.connected_state", func(v uint64) bool { return v == 1 })
	}
	waitMetric(t, s, `meshsds_sds_active_streams{api="sotw"}`, func(v float64) bool { return v == 4 })
}

// onlyCA returns the serial of the one CA every presenting context of c
// trusts, if there is exactly one.
func onlyCA(c *envoytest.Certs) (string, bool) {
	serial := ""
	for _, ctx := range c.Certificates {
		if len(ctx.CertChain) == 0 {
			continue
		}
		if len(ctx.CACert) != 1 || (serial != "" && ctx.CACert[0].SerialNumber != serial) {
			return "", false
		}
		serial = ctx.CACert[0].SerialNumber
	}
	return serial, serial != ""
}

// waitNewCA waits until web and backend both present certificates trusting
// only one CA, not old; it returns that CA's serial.
func (d *demo) waitNewCA(t *testing.T, old string) string {
	t.Helper()
	var serial string
	c := waitCerts(t, d.web, "a certificate of a CA other than "+old, func(c *envoytest.Certs) bool {
		s, ok := onlyCA(c)
		return ok && s != old && c.Holds(2, "spiffe://default/web", s)
	})
	serial, _ = onlyCA(c)
	// The backend is checked on the wire: Envoy's /certs has been seen
	// (1 run in about 50) to go on listing the context an SDS update
	// replaced, while the listener served, and web verified, the new one.
	waitPresents(t, "backend", d.backendAddr(), "spiffe://default/backend", meshCA(t, d.s, serial))
	return serial
}

// meshCA returns the CA certificate of mesh default's secrets whose serial
// /certs formats as serial.
func meshCA(t *testing.T, s *server, serial string) *x509.Certificate {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/meshes/default/secrets?size=1000")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list struct {
		Items []struct {
			Data []byte `json:"data"`
		} `json:"items"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	for _, item := range list.Items {
		if block, _ := pem.Decode(item.Data); block != nil && block.Type == "CERTIFICATE" {
			if c, err := x509.ParseCertificate(block.Bytes); err == nil && envoytest.SerialHex(c.SerialNumber) == envoytest.SerialHex(mustSerial(t, serial)) {
				return c
			}
		}
	}
	t.Fatalf("no CA certificate of serial %s among mesh default's secrets", serial)
	return nil
}

func mustSerial(t *testing.T, hex string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(hex, 16)
	require.True(t, ok, "serial %q", hex)
	return n
}

// waitPresents waits until the TLS server on addr presents a certificate
// of uri signed by ca: what its peers get, whatever /certs says.
func waitPresents(t *testing.T, name, addr, uri string, ca *x509.Certificate) {
	t.Helper()
	var last string
	deadline := time.Now().Add(envoyWait)
	for time.Now().Before(deadline) {
		leaf, err := presented(addr)
		switch {
		case err != nil:
			last = err.Error()
		case len(leaf.URIs) != 1 || leaf.URIs[0].String() != uri:
			last = fmt.Sprintf("a certificate of %v", leaf.URIs)
		case leaf.CheckSignatureFrom(ca) != nil:
			last = fmt.Sprintf("a certificate of %s not signed by %s", uri, ca.Subject)
		default:
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s does not present %s signed by %s within %s: %s", name, uri, ca.Subject, envoyWait, last)
}

// presented returns the leaf certificate the TLS server on addr presents.
// The handshake is left unfinished (this client has no certificate to
// give): only what the server sends is read.
func presented(addr string) (*x509.Certificate, error) {
	var leaf *x509.Certificate
	conf := &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // checked by the caller, against the mesh's CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) > 0 {
				leaf, _ = x509.ParseCertificate(raw[0])
			}
			return nil
		},
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, conf)
	if err == nil {
		c.Close()
	}
	if leaf == nil {
		return nil, fmt.Errorf("no certificate presented on %s: %v", addr, err)
	}
	return leaf, nil
}

// TestEnvoyTrafficThroughCAChangeAndRestarts: a provided CA replaced by
// renaming its files, a restart and a crash of meshsds, under traffic.
func TestEnvoyTrafficThroughCAChangeAndRestarts(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, cas := secretsDir(t)
			args := append([]string{"--ca-rotation-timeout", "30s"}, transportArgs(transport)...)
			s := start(t, dir, args...)
			d := startDemo(t, s)
			waitHolds(t, d.web, 2, "spiffe://default/web", serial(cas["default"]))
			waitHolds(t, d.backend, 1, "spiffe://default/backend", serial(cas["default"]))
			tr := startTraffic(t, d.webURL(), demoBody)
			tr.waitMore(t, 20)

			// A new CA, written as operators' tools write files.
			newCA := pkitest.NewRootCA(t, "default CA 2")
			writeAtomic(t, filepath.Join(dir, "default", "ca-key"), newCA.KeyPEM)
			writeAtomic(t, filepath.Join(dir, "default", "ca-cert"), newCA.CertPEM)
			waitHolds(t, d.web, 2, "spiffe://default/web", serial(newCA))
			waitPresents(t, "backend", d.backendAddr(), "spiffe://default/backend", newCA.Cert)
			tr.waitMore(t, 20)

			// A restart: Envoy keeps its secrets while meshsds is away, then
			// reconnects.
			stopServer(t, s, false)
			s = startAgain(t, s, dir, args...)
			d.waitReconnected(t, s)
			tr.waitMore(t, 20)

			// A crash, with traffic while meshsds is down.
			stopServer(t, s, true)
			tr.waitMore(t, 20)
			s = startAgain(t, s, dir, args...)
			d.waitReconnected(t, s)
			tr.waitMore(t, 20)

			// The streams after the crash carry changes: back to the first CA.
			// (Only once every stream is back: a CA change waits for the
			// streams that are connected, and Envoy reconnects each SDS
			// subscription on its own backoff; see the README's note.)
			writeAtomic(t, filepath.Join(dir, "default", "ca-key"), cas["default"].KeyPEM)
			writeAtomic(t, filepath.Join(dir, "default", "ca-cert"), cas["default"].CertPEM)
			waitHolds(t, d.web, 2, "spiffe://default/web", serial(cas["default"]))
			waitPresents(t, "backend", d.backendAddr(), "spiffe://default/backend", cas["default"].Cert)
			tr.waitMore(t, 20)

			ok := tr.requireNoFailure(t, 100)
			handshakes := statOf(t, d.backend, d.backendListener()+"ssl.handshake")
			require.GreaterOrEqual(t, handshakes, uint64(ok), "a new mTLS handshake per request")
			requireSDSClean(t, d.web, 2)
			requireSDSClean(t, d.backend, 2)
			t.Logf("%d requests, %d handshakes at the backend, none failed", ok, handshakes)
		})
	}
}

// builtinMesh is mesh default through the API with a provided CA (ca-1),
// and as many builtin backends (ca-2, ca-3, ...) as builtins, enabled.
func builtinMesh(builtins int, enabled string) string {
	m := fmt.Sprintf(`type: Mesh
name: default
mtls:
  enabledBackend: %s
  backends:
  - name: ca-1
    type: provided
    config:
      cert: { secret: ca-cert }
      key: { secret: ca-key }
`, enabled)
	for i := range builtins {
		m += fmt.Sprintf("  - name: ca-%d\n    type: builtin\n", i+2)
	}
	return m
}

// TestEnvoyTrafficThroughBuiltinCAChanges: provided → builtin → another
// builtin, through the admin API, under traffic.
func TestEnvoyTrafficThroughBuiltinCAChanges(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			s := start(t, t.TempDir(), append([]string{"--ca-rotation-timeout", "30s"}, transportArgs(transport)...)...)
			provided := pkitest.NewRootCA(t, "provided")
			s.mustCLI(t, caManifests("default", provided), "apply", "-f", "-")
			d := startDemo(t, s)
			waitHolds(t, d.web, 2, "spiffe://default/web", serial(provided))
			waitHolds(t, d.backend, 1, "spiffe://default/backend", serial(provided))
			tr := startTraffic(t, d.webURL(), demoBody)
			tr.waitMore(t, 20)

			s.mustCLI(t, builtinMesh(1, "ca-2"), "apply", "-f", "-")
			first := d.waitNewCA(t, serial(provided))
			tr.waitMore(t, 20)

			s.mustCLI(t, builtinMesh(2, "ca-3"), "apply", "-f", "-")
			second := d.waitNewCA(t, first)
			require.NotEqual(t, serial(provided), second)
			tr.waitMore(t, 20)

			tr.requireNoFailure(t, 60)
			requireSDSClean(t, d.web, 2)
			requireSDSClean(t, d.backend, 2)
		})
	}
}

// renewingMesh is mesh default with workload certificates of the shortest
// lifetime meshconfig allows (1m; 10 s backdating makes it 70 s, renewed at
// 4/5 of that, ±5 %).
const renewingMesh = `type: Mesh
name: default
mtls:
  backends:
  - name: ca-1
    type: provided
    dpCert:
      rotation:
        expiration: 1m
    config:
      cert: { secret: ca-cert }
      key: { secret: ca-key }
`

// TestEnvoyTrafficThroughWorkloadRenewal: both sidecars' certificates are
// renewed before they expire, and traffic goes on past the expiry of the
// first ones.
func TestEnvoyTrafficThroughWorkloadRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 75 s: a workload certificate lives at least 70 s")
	}
	transports := transportsToTest(t)
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			dir, cas := secretsDir(t)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "meshes.yaml"), []byte(renewingMesh), 0o600))
			s := start(t, dir, transportArgs(transport)...)
			d := startDemo(t, s)
			ca := serial(cas["default"])
			first := waitHolds(t, d.web, 2, "spiffe://default/web", ca)
			firstBackend := waitHolds(t, d.backend, 1, "spiffe://default/backend", ca)
			expiry, err := time.Parse(time.RFC3339, first.Certificates[0].CertChain[0].ExpirationTime)
			require.NoError(t, err)
			require.Less(t, time.Until(expiry), 75*time.Second, "a short-lived certificate")
			tr := startTraffic(t, d.webURL(), demoBody)

			renewed := func(e *envoytest.Envoy, old *envoytest.Certs, n int, uri string) {
				deadline := time.Now().Add(time.Until(expiry) + 5*time.Second)
				for time.Now().Before(deadline) {
					c, err := e.Certs()
					if err == nil && c.Holds(n, uri, ca) && c.LeafSerials()[0] != old.LeafSerials()[0] {
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
				t.Fatalf("%s's certificate was not renewed before it expired at %s", e.Name(), expiry)
			}
			renewed(d.web, first, 2, "spiffe://default/web")
			renewed(d.backend, firstBackend, 1, "spiffe://default/backend")
			// Past the first certificates' expiry: only the renewed ones work.
			time.Sleep(time.Until(expiry) + 2*time.Second)
			tr.waitMore(t, 10)
			tr.requireNoFailure(t, 100)
			requireSDSClean(t, d.web, 2)
			requireSDSClean(t, d.backend, 2)
		})
	}
}
