package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/envoytest"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// shortToken mints a dataplane token valid for d, with the CLI, offline.
func (s *server) shortToken(t *testing.T, mesh, name, service string, d time.Duration) string {
	t.Helper()
	out, err := exec.Command(binary, "generate", "dataplane-token", "--data-dir", s.dataDir,
		"--mesh", mesh, "--name", name, "--tag", "kuma.io/service="+service, "--valid-for", d.String()).Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

// revoke lists token ids in mesh default's revocation Secret, a file of
// the secrets directory.
func revoke(t *testing.T, dir string, tokens ...string) {
	t.Helper()
	var list strings.Builder
	for _, tok := range tokens {
		list.WriteString(tokenID(t, tok) + "\n")
	}
	writeAtomic(t, filepath.Join(dir, "default", "dataplane-token-revocations-default"), []byte(list.String()))
}

// waitStreamsDown waits until both of e's SDS subscriptions have lost their
// stream.
func waitStreamsDown(t *testing.T, e *envoytest.Envoy) {
	t.Helper()
	for _, secret := range []string{"identity_cert", "mesh_ca"} {
		waitStat(t, e, "sds."+secret+".control_plane.connected_state", func(v uint64) bool { return v == 0 })
	}
}

// waitStreamsUp waits until both of e's SDS subscriptions have a stream.
func waitStreamsUp(t *testing.T, e *envoytest.Envoy) {
	t.Helper()
	for _, secret := range []string{"identity_cert", "mesh_ca"} {
		waitStat(t, e, "sds."+secret+".control_plane.connected_state", func(v uint64) bool { return v == 1 })
	}
}

// TestEnvoyTokenRevocationAndExpiry: when meshsds ends a data plane's SDS
// streams because its token was revoked, Envoy keeps the secrets it holds
// and traffic goes on until the certificate expires; when the token
// expires, so does the certificate issued under it. Envoy retries the
// streams and is refused every time, until it is given a new token.
func TestEnvoyTokenRevocationAndExpiry(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, cas := secretsDir(t)
			s := start(t, dir, transportArgs(transport)...)
			const backendValidity = 20 * time.Second
			webToken := s.token(t, "default", "web", "web")
			backendToken := s.shortToken(t, "default", "backend", "backend", backendValidity)
			expires := time.Now().Add(backendValidity)
			d := startDemoWith(t, s, webToken, backendToken)
			ca := serial(cas["default"])
			webCerts := waitHolds(t, d.web, 2, "spiffe://default/web", ca)
			backendCerts := waitHolds(t, d.backend, 1, "spiffe://default/backend", ca)
			tr := startTraffic(t, d.webURL(), demoBody)
			tr.waitMore(t, 10)

			// Revocation: the streams end with PermissionDenied (7).
			revoke(t, dir, webToken)
			waitStreamsDown(t, d.web)
			waitMetric(t, s, `meshsds_sds_auth_failures_total{reason="revoked"}`, func(v float64) bool { return v >= 2 })
			require.Contains(t, d.web.Logs(), "gRPC config stream to meshsds closed: 7")
			// Envoy keeps what it has, and keeps retrying in vain.
			tr.waitMore(t, 20)
			failures := statOf(t, d.web, "sds.identity_cert.update_failure")
			waitStat(t, d.web, "sds.identity_cert.update_failure", func(v uint64) bool { return v > failures })
			c, err := d.web.Certs()
			require.NoError(t, err)
			require.Equal(t, webCerts.LeafSerials(), c.LeafSerials(), "web keeps its certificate")

			tr.requireNoFailure(t, 30) // what the two waits above guarantee

			// Expiry: no identity outlives its credential. The backend's
			// certificate ends when its token does; meshsds closes the
			// streams then (Unauthenticated, 16) and refuses the retries,
			// and the backend, holding an expired certificate, can no
			// longer complete a handshake.
			leafEnd, err := time.Parse(time.RFC3339, backendCerts.Certificates[0].CertChain[0].ExpirationTime)
			require.NoError(t, err)
			require.WithinDuration(t, expires, leafEnd, 3*time.Second, "the certificate ends with its token")
			time.Sleep(time.Until(expires))
			waitStreamsDown(t, d.backend)
			waitMetric(t, s, `meshsds_sds_auth_failures_total{reason="expired"}`, func(v float64) bool { return v >= 1 })
			require.Contains(t, d.backend.Logs(), "gRPC config stream to meshsds closed: 16")
			c, err = d.backend.Certs()
			require.NoError(t, err)
			require.Equal(t, backendCerts.LeafSerials(), c.LeafSerials(), "backend keeps its (now expired) certificate")
			time.Sleep(time.Until(leafEnd.Add(time.Second)))
			after := startTraffic(t, d.webURL(), demoBody)
			require.Eventually(t, func() bool { _, failures := after.counts(); return len(failures) >= 3 }, envoyWait, 50*time.Millisecond,
				"a handshake with an expired certificate must fail")
			after.halt()

			for _, e := range []*envoytest.Envoy{d.web, d.backend} {
				sds, err := e.SDS()
				require.NoError(t, err)
				require.Zero(t, sds.UpdateRejected)
				require.Zero(t, sds.Connected, "%s is refused until it has a new token", e.Name())
			}
		})
	}
}

// TestEnvoyGoogleGrpcTokenFile runs the shipped web-google-grpc.yaml: Envoy's
// google_grpc client over TLS, the token read from a file by the
// file_based_metadata plugin. A new token written into the file is what the
// next stream uses, without restarting Envoy.
func TestEnvoyGoogleGrpcTokenFile(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, cas := secretsDir(t)
			cert, key := sdsServerCert(t)
			s := start(t, dir, append(transportArgs(transport), "--sds-tls-cert", cert, "--sds-tls-key", key)...)
			tokenFile := filepath.Join(t.TempDir(), "web.token")
			first := s.token(t, "default", "web", "web")
			// No newline at the end: the plugin sends the file's bytes as
			// they are, and gRPC refuses a header value with a newline
			// (the stream fails with INTERNAL before it leaves Envoy).
			writeAtomic(t, tokenFile, []byte(first))
			web := startEnvoy(t, "web-google-grpc", exampleBootstrap(t, "web-google-grpc.yaml",
				map[string]string{"${MESHSDS_TOKEN_FILE}": tokenFile, "${MESHSDS_SDS_CA}": cert},
				map[string]string{
					"127.0.0.1:5677":    s.sds,
					"0.0.0.0":           "127.0.0.1",
					"port_value: 15443": "port_value: " + freePort(t),
					"port_value: 10001": "port_value: " + freePort(t),
					"port_value: 25443": "port_value: " + freePort(t),
					"port_value: 8080":  "port_value: " + freePort(t),
				}))
			waitHolds(t, web, 2, "spiffe://default/web", serial(cas["default"]))
			requireSDSClean(t, web, 2)

			// A new token in the file, written by the CLI as the README
			// says, the old one revoked: the streams end, and the retries
			// read the new token.
			out, err := exec.Command(binary, "generate", "dataplane-token", "--data-dir", s.dataDir,
				"--mesh", "default", "--name", "web", "--tag", "kuma.io/service=web", "--output-file", tokenFile).CombinedOutput()
			require.NoError(t, err, string(out))
			written, err := os.ReadFile(tokenFile)
			require.NoError(t, err)
			require.NotContains(t, string(written), "\n", "the token alone, no newline")
			info, err := os.Stat(tokenFile)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
			revoke(t, dir, first)
			waitMetric(t, s, "meshsds_sds_revoked_streams_closed_total", func(v float64) bool { return v >= 2 })
			waitStreamsUp(t, web)

			// The new streams carry changes.
			newCA := pkitest.NewRootCA(t, "default CA 2")
			writeAtomic(t, filepath.Join(dir, "default", "ca-key"), newCA.KeyPEM)
			writeAtomic(t, filepath.Join(dir, "default", "ca-cert"), newCA.CertPEM)
			waitHolds(t, web, 2, "spiffe://default/web", serial(newCA))
			requireSDSClean(t, web, 2)
		})
	}
}

// TestEnvoyGoogleGrpcRawTokenFile: Kuma's file_based_metadata configuration
// sends the raw token, without "Bearer ", which DESIGN.md says meshsds
// accepts.
func TestEnvoyGoogleGrpcRawTokenFile(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, cas := secretsDir(t)
			cert, key := sdsServerCert(t)
			s := start(t, dir, append(transportArgs(transport), "--sds-tls-cert", cert, "--sds-tls-key", key)...)
			tokenFile := filepath.Join(t.TempDir(), "web.token")
			writeAtomic(t, tokenFile, []byte(s.token(t, "default", "web", "web")))
			f := sdsFlavour{NodeID: "default.web", Service: "web", ListenerPort: freePort(t), Client: "google_grpc", TokenFile: tokenFile}
			pointTCP(t, s, &f, cert)
			// Envoy is ready at its initial_fetch_timeout (15 s) if refused.
			e := startEnvoy(t, "web-raw-token", f.render(t))
			if !holdsWithin(e, 20*time.Second, 1, "spiffe://default/web", serial(cas["default"])) {
				t.Fatalf("no secrets with the raw token: meshsds_sds_auth_failures_total{reason=\"malformed\"} %v; Envoy: %s",
					metricValue(t, s.scrape(t), `meshsds_sds_auth_failures_total{reason="malformed"}`), lastLine(e.Logs(), "closed:"))
			}
			requireSDSClean(t, e, 2)
		})
	}
}

// holdsWithin polls e's /certs for up to d.
func holdsWithin(e *envoytest.Envoy, d time.Duration, n int, uri string, caSerials ...string) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := e.Certs(); err == nil && c.Holds(n, uri, caSerials...) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// lastLine returns the last line of log containing s, or "".
func lastLine(log, s string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}

// TestEnvoyHPACKTableSizeZero: an Envoy whose SDS cluster sets
// hpack_table_size: 0 (no HPACK dynamic table) gets its secrets.
func TestEnvoyHPACKTableSizeZero(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, cas := secretsDir(t)
			s := start(t, dir, transportArgs(transport)...)
			f := sdsFlavour{
				NodeID: "default.web", Service: "web", ListenerPort: freePort(t), Client: "envoy_grpc",
				Token: s.token(t, "default", "web", "web"), HPACKTableSizeZero: true,
			}
			pointTCP(t, s, &f, "")
			// Envoy is ready at its initial_fetch_timeout (15 s) if this fails.
			e := envoytest.Start(t, envoytest.Config{Name: "hpack0", Bootstrap: f.render(t), ComponentLogLevel: "config:debug,http2:debug"})
			if !holdsWithin(e, 20*time.Second, 1, "spiffe://default/web", serial(cas["default"])) {
				t.Fatalf("no secrets with hpack_table_size 0: cluster.meshsds.upstream_cx_protocol_error %d; %q",
					statOf(t, e, "cluster.meshsds.upstream_cx_protocol_error"), lastLine(e.Logs(), "closed:"))
			}
			requireSDSClean(t, e, 2)
			require.Zero(t, statOf(t, e, "cluster.meshsds.upstream_cx_protocol_error"))
		})
	}
}
