// Package e2e runs the real meshsds binary against real files and talks to it
// over real sockets, as a user and an Envoy would.
package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/internal/testing/syncbuf"
	"github.com/meshsds/meshsds/internal/testing/testenv"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshsds-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "meshsds")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/meshsds")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building meshsds:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running meshsds process.
type server struct {
	sds, metrics, admin string
	dataDir             string
	logs                *syncbuf.Buffer
	proc                *os.Process
	exited              chan error
}

// kill ends the server with SIGKILL, as a crash would.
func (s *server) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, s.proc.Kill())
	err := <-s.exited
	s.exited <- err // for the cleanup, which waits for the exit too
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testenv.FreeAddr()
	require.NoError(t, err)
	return addr
}

// start runs "meshsds serve" on free loopback ports and waits until ready.
// A "--data-dir DIR" in extra replaces the fresh temporary one.
func start(t *testing.T, secretsDir string, extra ...string) *server {
	t.Helper()
	s := &server{sds: freeAddr(t), metrics: freeAddr(t), admin: freeAddr(t), logs: &syncbuf.Buffer{}, exited: make(chan error, 1)}
	for i, a := range extra {
		if a == "--data-dir" && i+1 < len(extra) {
			s.dataDir = extra[i+1]
		}
	}
	args := []string{
		"serve", "--secrets-dir", secretsDir,
		"--sds-address", s.sds, "--metrics-address", s.metrics, "--admin-address", s.admin, "--log-level", "debug",
	}
	if s.dataDir == "" {
		s.dataDir = t.TempDir()
		args = append(args, "--data-dir", s.dataDir)
	}
	cmd := exec.Command(binary, append(args, extra...)...)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	require.NoError(t, cmd.Start())
	s.proc = cmd.Process
	exited := s.exited
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("meshsds logs:\n%s", s.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("meshsds exited early: %v\n%s", err, s.logs.String())
		default:
		}
		resp, err := http.Get("http://" + s.metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		require.True(t, time.Now().Before(deadline), "meshsds not ready in time:\n%s", s.logs.String())
		time.Sleep(50 * time.Millisecond)
	}
}

// token mints a dataplane token with the CLI, offline, from the data dir.
func (s *server) token(t *testing.T, mesh, name, service string) string {
	t.Helper()
	out, err := exec.Command(binary, "generate", "dataplane-token", "--data-dir", s.dataDir,
		"--mesh", mesh, "--name", name, "--tag", "kuma.io/service="+service, "--valid-for", "1h").Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

func (s *server) scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// writeAtomic replaces path's content the way careful tools do: a temp file
// in the same directory, then rename.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

const meshes = `type: Mesh
name: default
mtls:
  backends:
  - name: ca-1
    type: provided
    dpCert:
      rotation:
        expiration: 1h
    config:
      cert: { secret: ca-cert }
      key: { secret: ca-key }
---
type: Mesh
name: other
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: provided
    conf:
      cert: { secret: ca-cert }
      key: { secret: ca-key }
`

// secretsDir lays out a secrets directory with meshes default and other,
// each with its own CA as raw files <dir>/<mesh>/ca-cert and ca-key.
func secretsDir(t *testing.T) (string, map[string]*pki.KeyPair) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "meshes.yaml"), []byte(meshes), 0o600))
	cas := map[string]*pki.KeyPair{}
	for _, mesh := range []string{"default", "other"} {
		ca := pkitest.NewRootCA(t, mesh+" CA")
		cas[mesh] = ca
		require.NoError(t, os.MkdirAll(filepath.Join(dir, mesh), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, mesh, "ca-cert"), ca.CertPEM, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, mesh, "ca-key"), ca.KeyPEM, 0o600))
	}
	return dir, cas
}

// dataplane is a simulated Envoy: one connection, one stream per secret,
// every push applied and ACKed as it arrives.
type dataplane struct {
	live *sdstest.Live
	held *sdstest.Workload
}

func connect(t *testing.T, s *server, mesh, name, service string) *dataplane {
	t.Helper()
	return followConn(t, sdstest.Dial(t, s.sds, s.token(t, mesh, name, service)), mesh+"."+name)
}

func followConn(t *testing.T, conn *grpc.ClientConn, nodeID string) *dataplane {
	t.Helper()
	live := sdstest.Follow(t, conn, nodeID, "identity_cert", "mesh_ca", true)
	return &dataplane{live: live, held: live.WaitFor("its first certificate", func(*sdstest.Workload) bool { return true })}
}

// rotatedTo waits until the data plane holds a certificate of ca and trusts
// ca alone: the end of a CA change, through its phases.
func (dp *dataplane) rotatedTo(t *testing.T, ca *pki.KeyPair) {
	t.Helper()
	dp.held = dp.live.WaitFor("the end of the CA change", sdstest.SignedBy(ca))
}

// quiet fails if the data plane receives anything within d.
func (dp *dataplane) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	before := dp.live.Pushes()
	time.Sleep(d)
	require.Equal(t, before, dp.live.Pushes(), "a data plane of an untouched mesh received a push")
}

func TestTwoDataplanesHandshakeThenRotate(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			s := start(t, dir, transportArgs(transport)...)

			web := connect(t, s, "default", "web-1", "web")
			backend := connect(t, s, "default", "backend-1", "backend")
			stranger := connect(t, s, "other", "web-1", "web")

			require.NoError(t, sdstest.Handshake(backend.held, web.held, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("default", "web")))
			require.Error(t, sdstest.Handshake(backend.held, stranger.held, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("other", "web")),
				"a data plane of another mesh must not be trusted")

			// Rotate mesh default's CA by atomic renames of both files.
			newCA := pkitest.NewRootCA(t, "default CA 2")
			oldSerial := web.held.Leaf.SerialNumber
			writeAtomic(t, filepath.Join(dir, "default", "ca-key"), newCA.KeyPEM)
			writeAtomic(t, filepath.Join(dir, "default", "ca-cert"), newCA.CertPEM)

			web.rotatedTo(t, newCA)
			backend.rotatedTo(t, newCA)
			require.NotEqual(t, oldSerial, web.held.Leaf.SerialNumber)
			require.NoError(t, web.held.Leaf.CheckSignatureFrom(newCA.Cert))
			require.NoError(t, sdstest.Handshake(backend.held, web.held, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("default", "web")))
			require.NoError(t, sdstest.Handshake(web.held, backend.held, sdstest.SPIFFE("default", "web"), sdstest.SPIFFE("default", "backend")))
			stranger.quiet(t, 500*time.Millisecond)

			metrics := s.scrape(t)
			for _, name := range []string{
				"meshsds_sds_active_streams", "meshsds_sds_connected_dataplanes", "meshsds_certificates_issued_total",
				"meshsds_sds_push_latency_seconds", "meshsds_ca_expiry_timestamp_seconds", "meshsds_source_last_sync_timestamp_seconds",
			} {
				require.Contains(t, metrics, name)
			}
			require.Contains(t, metrics, `meshsds_sds_connected_dataplanes 3`)
			require.Contains(t, metrics, `meshsds_sds_connections 3`, "one HTTP/2 connection per data plane")
		})
	}
}

func TestBrokenMeshHarmsOnlyItself(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			s := start(t, dir, transportArgs(transport)...)
			web := connect(t, s, "default", "web-1", "web")
			stranger := connect(t, s, "other", "web-1", "web")

			// Break mesh other: a key that does not match its certificate.
			writeAtomic(t, filepath.Join(dir, "other", "ca-key"), pkitest.NewRootCA(t, "unrelated").KeyPEM)
			require.Eventually(t, func() bool {
				return strings.Contains(s.scrape(t), `meshsds_mesh_resolution_failing{mesh="other"} 1`)
			}, 10*time.Second, 50*time.Millisecond)
			stranger.quiet(t, 300*time.Millisecond) // keeps its last good CA
			require.Contains(t, s.logs.String(), "mesh cannot be resolved")
			require.NotContains(t, s.logs.String(), "PRIVATE KEY", "key material must never be logged")

			// Mesh default still works: a CA change there is pushed.
			newCA := pkitest.NewRootCA(t, "default CA 2")
			writeAtomic(t, filepath.Join(dir, "default", "ca-key"), newCA.KeyPEM)
			writeAtomic(t, filepath.Join(dir, "default", "ca-cert"), newCA.CertPEM)
			web.rotatedTo(t, newCA)

			// A new data plane of the broken mesh is still served its last good CA.
			late := connect(t, s, "other", "web-2", "web")
			require.NoError(t, sdstest.Handshake(stranger.held, late.held, sdstest.SPIFFE("other", "web"), sdstest.SPIFFE("other", "web")))
		})
	}
}

func TestHealthAndReflectionOnSDSPort(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			s := start(t, dir, transportArgs(transport)...)
			conn := sdstest.Dial(t, s.sds, "")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
			require.NoError(t, err)
			require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, h.GetStatus())

			rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
			require.NoError(t, err)
			require.NoError(t, rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
			resp, err := rs.Recv()
			require.NoError(t, err)
			var names []string
			for _, svc := range resp.GetListServicesResponse().GetService() {
				names = append(names, svc.GetName())
			}
			require.Contains(t, names, "envoy.service.secret.v3.SecretDiscoveryService")
			require.Contains(t, names, "envoy.service.discovery.v3.AggregatedDiscoveryService")

			r, err := http.Get("http://" + s.metrics + "/healthz")
			require.NoError(t, err)
			r.Body.Close()
			require.Equal(t, http.StatusOK, r.StatusCode)
		})
	}
}

func TestStartupRefusesUnsafeSettings(t *testing.T) {
	dir, _ := secretsDir(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sds-address", "0.0.0.0:0"}, "not a loopback address"},
		{[]string{"--admin-address", "0.0.0.0:0"}, "only allowed from this machine"},
		{[]string{"--auth", "maybe"}, "--auth must be"},
	} {
		out, err := exec.Command(binary, append([]string{"serve", "--secrets-dir", dir, "--data-dir", t.TempDir()}, tc.args...)...).CombinedOutput()
		require.Error(t, err)
		require.Contains(t, string(out), tc.want)
	}
}

func TestAuthNoneWarnsLoudly(t *testing.T) {
	dir, _ := secretsDir(t)
	s := start(t, dir, "--auth", "none")
	require.Contains(t, s.logs.String(), "SDS AUTHENTICATION IS DISABLED")
	conn := sdstest.Dial(t, s.sds, "")
	st := sdstest.OpenStream(t, conn, "default.web-1", false, "identity_cert")
	got, _ := st.Expect()
	require.Len(t, got, 1)
}

// grpcurlBinary finds grpcurl: in $GRPCURL, in the repository's .tools
// (where "make tools" and CI install it) or on PATH.
func grpcurlBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("GRPCURL"), "../../.tools/grpcurl"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				abs, err := filepath.Abs(p)
				require.NoError(t, err)
				return abs
			}
		}
	}
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	testenv.Missing(t, "grpcurl is not installed: make .tools/grpcurl (make test does)")
	return ""
}

func TestGrpcurlFetchesSecrets(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			grpcurl := grpcurlBinary(t)
			dir, cas := secretsDir(t)
			s := start(t, dir, transportArgs(transport)...)

			out, err := exec.Command(grpcurl, "-plaintext", s.sds, "list").CombinedOutput()
			require.NoError(t, err, string(out))
			require.Contains(t, string(out), "envoy.service.secret.v3.SecretDiscoveryService")

			req := `{"node":{"id":"default.web-1"},"type_url":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret","resource_names":["mesh_ca"]}`
			out, err = exec.Command(grpcurl, "-plaintext", "-H", "authorization: Bearer "+s.token(t, "default", "web-1", "web"),
				"-d", req, s.sds, "envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets").CombinedOutput()
			require.NoError(t, err, string(out))
			require.Contains(t, string(out), `"name": "mesh_ca"`)
			require.Contains(t, string(out), base64Of(cas["default"].CertPEM))

			out, err = exec.Command(grpcurl, "-plaintext", "-d", req, s.sds,
				"envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets").CombinedOutput()
			require.Error(t, err)
			require.Contains(t, string(out), "Unauthenticated")
		})
	}
}

func base64Of(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// tokenID reads the jti claim of a JWT without verifying it.
func tokenID(t *testing.T, raw string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	require.Len(t, parts, 3)
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims struct {
		ID string `json:"jti"`
	}
	require.NoError(t, json.Unmarshal(payload, &claims))
	require.NotEmpty(t, claims.ID)
	return claims.ID
}

func TestRevocationListInSecretsDirClosesStreams(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			s := start(t, dir, transportArgs(transport)...)
			revokedToken := s.token(t, "default", "web-1", "web")
			revoked := sdstest.OpenStream(t, sdstest.Dial(t, s.sds, revokedToken), "default.web-1", false, "identity_cert")
			revoked.Expect()
			kept := sdstest.OpenStream(t, sdstest.Dial(t, s.sds, s.token(t, "default", "web-2", "web")), "default.web-2", false, "identity_cert")
			kept.Expect()

			list := "# revoked after the laptop was lost\n" + tokenID(t, revokedToken) + "\n"
			writeAtomic(t, filepath.Join(dir, "default", "dataplane-token-revocations-default"), []byte(list))

			_, err := revoked.Recv(10 * time.Second)
			require.Equal(t, codes.PermissionDenied, status.Code(err), "got %v", err)
			kept.ExpectNothing(300 * time.Millisecond)
			require.Contains(t, s.scrape(t), `meshsds_sds_auth_failures_total{reason="revoked"}`)
		})
	}
}

func TestServeHelpDocumentsEveryFlag(t *testing.T) {
	out, err := exec.Command(binary, "serve", "--help").CombinedOutput()
	require.NoError(t, err)
	help := string(out)
	for flag, def := range map[string]string{
		"--secrets-dir": "", "--data-dir": "./meshsds-data", "--sds-address": "127.0.0.1:5677",
		"--admin-address": "127.0.0.1:5681", "--metrics-address": ":5680", "--auth": "dataplane-token",
		"--sds-tls-cert": "", "--sds-tls-key": "", "--sds-insecure": "", "--admin-tls-address": "",
		"--admin-tls-cert": "", "--admin-tls-key": "", "--admin-client-certs-dir": "", "--kubernetes": "",
		"--namespace": "kuma-system", "--kubeconfig": "", "--store": "sqlite", "--postgres-url": "", "--config": "",
	} {
		require.Contains(t, help, flag)
		if def != "" {
			require.Contains(t, help, `(default "`+def+`")`, "default of %s", flag)
		}
	}
	require.Contains(t, help, "MESHSDS_")
}

func TestUnixSocketSDS(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			sock := filepath.Join(t.TempDir(), "sds.sock")
			s := start(t, dir, append(transportArgs(transport), "--sds-address", "unix://"+sock)...)
			conn := sdstest.Dial(t, "unix://"+sock, s.token(t, "default", "web-1", "web"))
			st := sdstest.OpenStream(t, conn, "default.web-1", false, "identity_cert", "mesh_ca")
			got, _ := st.Expect()
			require.Len(t, got, 2)
		})
	}
}

func TestShutdownEndsStreamsAtOnce(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			s := start(t, dir, transportArgs(transport)...)
			st := sdstest.OpenStream(t, sdstest.Dial(t, s.sds, s.token(t, "default", "web-1", "web")), "default.web-1", false, "identity_cert")
			st.Expect()

			began := time.Now()
			require.NoError(t, s.proc.Signal(syscall.SIGTERM))
			_, err := st.Recv(10 * time.Second)
			require.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
			require.Contains(t, status.Convert(err).Message(), "shutting down")
			select {
			case err := <-s.exited:
				s.exited <- err // for the cleanup
				require.NoError(t, err, "a clean exit")
			case <-time.After(5 * time.Second):
				t.Fatal("meshsds still running 5 s after SIGTERM (its --shutdown-timeout is 10 s: streams held it)")
			}
			require.Less(t, time.Since(began), 5*time.Second)
		})
	}
}
