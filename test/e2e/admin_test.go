package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds/token"
)

// cli runs the meshsds CLI against s's admin API and returns its output.
func (s *server) cli(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, append(args, "--api-url", "http://"+s.admin)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *server) mustCLI(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := s.cli(t, stdin, args...)
	require.NoError(t, err, out)
	return out
}

// caManifests is a Mesh (first, to show apply orders it after its secrets)
// and its provided CA as Secrets.
func caManifests(mesh string, ca *pki.KeyPair) string {
	return fmt.Sprintf(`type: Mesh
name: %[1]s
mtls:
  backends:
  - name: ca-1
    type: provided
    config:
      cert: { secret: ca-cert }
      key: { secret: ca-key }
---
type: Secret
mesh: %[1]s
name: ca-cert
data: %[2]s
---
type: Secret
mesh: %[1]s
name: ca-key
data: %[3]s
`, mesh, base64.StdEncoding.EncodeToString(ca.CertPEM), base64.StdEncoding.EncodeToString(ca.KeyPEM))
}

func TestCLIManagesResourcesThroughTheAPI(t *testing.T) {
	s := start(t, t.TempDir())
	ca := pkitest.NewRootCA(t, "api CA")

	out := s.mustCLI(t, caManifests("default", ca), "apply", "-f", "-")
	require.Equal(t, "secret \"ca-cert\" (mesh \"default\") created\nsecret \"ca-key\" (mesh \"default\") created\nmesh \"default\" created\n", out)
	out = s.mustCLI(t, caManifests("default", ca), "apply", "-f", "-")
	require.Contains(t, out, `mesh "default" configured`)

	out = s.mustCLI(t, "", "get", "secrets", "-m", "default")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	require.Equal(t, []string{"MESH", "NAME", "ORIGIN", "AGE"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"default", "ca-cert", "api"}, strings.Fields(lines[1])[:3])

	out = s.mustCLI(t, "", "get", "meshes")
	require.Contains(t, out, "provided/ca-1")

	out = s.mustCLI(t, "", "get", "secret", "ca-cert", "-m", "default", "-o", "yaml")
	require.Contains(t, out, "data: "+base64.StdEncoding.EncodeToString(ca.CertPEM))
	require.Contains(t, out, "type: Secret")
	require.Contains(t, s.mustCLI(t, "", "get", "meshes", "-o", "json"), `"total": 1`)

	// Bad input: one clear error, nothing changed.
	out, err := s.cli(t, "type: Secret\nname: x\ndata: '!!'\n", "apply", "-f", "-")
	require.Error(t, err)
	require.Contains(t, out, "data: has to be valid base64 string")

	// A Mesh before its Secrets: refused, naming what to create.
	out, err = s.cli(t, strings.SplitN(caManifests("later", ca), "---", 2)[0], "apply", "-f", "-")
	require.Error(t, err)
	require.Contains(t, out, `secret "ca-cert" of backend "ca-1" does not exist in mesh "later": create the Secret first`)

	out, err = s.cli(t, "", "delete", "secret", "ca-key", "-m", "default")
	require.Error(t, err)
	require.Contains(t, out, `Mesh "default", backend "ca-1"`)

	require.Contains(t, s.mustCLI(t, "", "delete", "mesh", "default"), `mesh "default" deleted`)
	require.Contains(t, s.mustCLI(t, "", "delete", "secret", "ca-key", "-m", "default"), "deleted")
	out, err = s.cli(t, "", "delete", "secret", "ca-key", "-m", "default")
	require.Error(t, err)
	require.Contains(t, out, `secret "ca-key" (mesh "default") not found`)
	out, err = s.cli(t, "", "get", "secret", "ca-key", "-m", "default")
	require.Error(t, err)
	require.Contains(t, out, `secret "ca-key" (mesh "default") not found`, "get names what it did not find")
	out, err = s.cli(t, "", "get", "mesh", "nosuch")
	require.Error(t, err)
	require.Contains(t, out, `mesh "nosuch" not found`)

	require.NotContains(t, s.logs.String(), base64.StdEncoding.EncodeToString(ca.KeyPEM), "secret values never reach the log")
	require.NotContains(t, s.logs.String(), "PRIVATE KEY")
}

func TestAPIWriteRotatesConnectedDataplanes(t *testing.T) {
	s := start(t, t.TempDir())
	s.mustCLI(t, caManifests("default", pkitest.NewRootCA(t, "first")), "apply", "-f", "-")
	s.mustCLI(t, caManifests("other", pkitest.NewRootCA(t, "other")), "apply", "-f", "-")

	// Tokens from the admin API (online), not from the data dir.
	tok := strings.TrimSpace(s.mustCLI(t, "", "generate", "dataplane-token", "--mesh", "default", "--name", "web-1", "--tag", "kuma.io/service=web"))
	dp := followConn(t, sdstest.Dial(t, s.sds, tok), "default.web-1")
	stranger := connect(t, s, "other", "web-1", "web")

	second := pkitest.NewRootCA(t, "second")
	s.mustCLI(t, caManifests("default", second), "apply", "-f", "-")
	dp.rotatedTo(t, second)
	stranger.quiet(t, 300*time.Millisecond)

	out := s.mustCLI(t, "", "inspect", "dataplanes")
	require.Contains(t, out, "web-1")
	require.Contains(t, out, fmt.Sprintf("%x", dp.held.Leaf.SerialNumber))
}

func TestWritesSurviveSIGKILL(t *testing.T) {
	dataDir := t.TempDir()
	s := start(t, t.TempDir(), "--data-dir", dataDir)
	ca := pkitest.NewRootCA(t, "durable")
	s.mustCLI(t, caManifests("default", ca), "apply", "-f", "-")
	s.kill(t) // right after the 2xx answers

	again := start(t, t.TempDir(), "--data-dir", dataDir)
	out := again.mustCLI(t, "", "get", "secret", "ca-key", "-m", "default", "-o", "yaml")
	require.Contains(t, out, base64.StdEncoding.EncodeToString(ca.KeyPEM))
	// And it is served: a data plane gets a certificate from that CA.
	dp := connect(t, again, "default", "web-1", "web")
	require.NoError(t, dp.held.Leaf.CheckSignatureFrom(ca.Cert))
}

func TestTokenSigningKeyOfAnOlderDataDirIsKept(t *testing.T) {
	dir, _ := secretsDir(t)
	dataDir := t.TempDir()
	// A data dir from before the store: only the PEM key file, and tokens
	// already handed out, signed with it.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pemKey, err := token.MarshalSigningKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dataDir, token.SigningKeyFile), pemKey, 0o600))
	tok, err := token.NewIssuer(key).Issue(token.Claims{Mesh: "default", Name: "web-1", Tags: map[string][]string{"kuma.io/service": {"web"}}}, time.Hour, time.Now())
	require.NoError(t, err)

	for range 2 { // after the import, and after a restart
		s := start(t, dir, "--data-dir", dataDir)
		st := sdstest.OpenStream(t, sdstest.Dial(t, s.sds, tok), "default.web-1", false, "identity_cert")
		got, _ := st.Expect()
		require.Len(t, got, 1)
		s.kill(t)
	}
}

func TestRemoteAdminNeedsATrustedClientCertificate(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "clients")
	require.NoError(t, os.Mkdir(certs, 0o700))
	gen := func(kind, cert, key string, extra ...string) {
		out, err := exec.Command(binary, append([]string{"generate", "tls-certificate", "--type", kind, "--cert-file", cert, "--key-file", key}, extra...)...).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	srvCert, srvKey := filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	gen("server", srvCert, srvKey, "--hostname", "127.0.0.1")
	trusted, trustedKey := filepath.Join(certs, "alice.pem"), filepath.Join(dir, "alice.key")
	gen("client", trusted, trustedKey)
	stranger, strangerKey := filepath.Join(dir, "mallory.pem"), filepath.Join(dir, "mallory.key")
	gen("client", stranger, strangerKey)

	tlsAddr := freeAddr(t)
	s := start(t, t.TempDir(), "--admin-tls-address", tlsAddr, "--admin-tls-cert", srvCert, "--admin-tls-key", srvKey, "--admin-client-certs-dir", certs)

	remote := func(args ...string) (string, error) {
		out, err := exec.Command(binary, append(args, "--api-url", "https://"+tlsAddr, "--ca-cert-file", srvCert)...).CombinedOutput()
		return string(out), err
	}
	out, err := remote("get", "meshes", "--client-cert-file", trusted, "--client-key-file", trustedKey)
	require.NoError(t, err, out)
	require.Contains(t, out, "NAME")

	out, err = remote("get", "meshes")
	require.Error(t, err)
	require.Contains(t, out, "Unauthorized")
	out, err = remote("get", "meshes", "--client-cert-file", stranger, "--client-key-file", strangerKey)
	require.Error(t, err)
	require.Contains(t, out, "Forbidden")

	// Plain HTTP on a non-loopback address is refused at start.
	out2, err := exec.Command(binary, "serve", "--data-dir", t.TempDir(), "--admin-address", "0.0.0.0:0").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out2), "only allowed from this machine")

	// The server's own certificate is checked by the CLI.
	raw, err := exec.Command(binary, "get", "meshes", "--api-url", "https://"+tlsAddr,
		"--client-cert-file", trusted, "--client-key-file", trustedKey).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(raw), "--ca-cert-file")
	require.Contains(t, s.logs.String(), "refused admin client certificate")

	// And a raw TLS client without a certificate gets 401 too.
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(srvCert)
	require.NoError(t, err)
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + tlsAddr + "/meshes")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	// A client certificate removed from the directory is refused from then
	// on, without a restart; one added is trusted.
	require.NoError(t, os.Rename(trusted, filepath.Join(dir, "alice-revoked.pem")))
	require.NoError(t, os.Rename(stranger, filepath.Join(certs, "mallory.pem")))
	out, err = remote("get", "meshes", "--client-cert-file", filepath.Join(dir, "alice-revoked.pem"), "--client-key-file", trustedKey)
	require.Error(t, err, "a certificate removed from the directory: %s", out)
	require.Contains(t, out, "Forbidden")
	out, err = remote("get", "meshes", "--client-cert-file", filepath.Join(certs, "mallory.pem"), "--client-key-file", strangerKey)
	require.NoError(t, err, out)
}

func TestCLIErrorWhenServerIsUnreachable(t *testing.T) {
	out, err := exec.Command(binary, "get", "meshes", "--api-url", "http://127.0.0.1:1").CombinedOutput()
	require.Error(t, err)
	msg := strings.TrimSpace(string(out))
	require.Contains(t, msg, "http://127.0.0.1:1")
	require.Contains(t, msg, "--api-url")
	require.Equal(t, 1, strings.Count(msg, "\n")+1, "one line: %q", msg)
}

// TestExpiredTokenIDsLeaveRevocationLists: the ids of tokens that expired
// (more than the grace hour ago) leave the admin API's revocation lists when
// the server starts (and every 10 minutes), so the lists do not only grow;
// the ids of live tokens, ids of unknown expiry and comments stay.
func TestExpiredTokenIDsLeaveRevocationLists(t *testing.T) {
	dir, _ := secretsDir(t)
	s := start(t, dir)
	live := tokenID(t, s.token(t, "default", "web-1", "web"))
	exp, ok := token.IDExpiry(live)
	require.True(t, ok, "a token meshsds issues carries its expiry in its id: %q", live)
	require.WithinDuration(t, time.Now().Add(time.Hour), exp, time.Minute)

	expired := fmt.Sprintf("0123456789abcdef0123456789abcdef-%d", time.Now().Add(-2*time.Hour).Unix())
	recent := fmt.Sprintf("fedcba9876543210fedcba9876543210-%d", time.Now().Add(-time.Minute).Unix()) // within the grace hour
	list := "# revoked during the incident\n" + expired + ", " + live + "\n8c2a4e0c-5d1f-4b7e-9a3c-2f1e0d9c8b7a\n" + recent + "\n"
	s.mustCLI(t, fmt.Sprintf("type: Secret\nmesh: default\nname: dataplane-token-revocations-default\ndata: %s\n",
		base64.StdEncoding.EncodeToString([]byte(list))), "apply", "-f", "-")

	s.kill(t)
	s = start(t, dir, "--data-dir", s.dataDir)
	want := "# revoked during the incident\n" + live + "\n8c2a4e0c-5d1f-4b7e-9a3c-2f1e0d9c8b7a\n" + recent + "\n"
	require.Eventually(t, func() bool {
		out := s.mustCLI(t, "", "get", "secret", "dataplane-token-revocations-default", "-m", "default", "-o", "yaml")
		return strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(want)))
	}, 10*time.Second, 100*time.Millisecond, "the expired id leaves the list, the rest stays as written")
	require.Contains(t, s.logs.String(), "removed the ids of expired tokens from a revocation list")
}
