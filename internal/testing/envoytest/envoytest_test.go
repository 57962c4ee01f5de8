package envoytest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/envoytest"
)

// selfSigned writes a self-signed certificate with the URI SAN uri and its
// key into dir and returns the certificate and the two paths.
func selfSigned(t *testing.T, dir, uri string) (*x509.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	u, err := url.Parse(uri)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		// A serial with a leading zero nibble: /certs prints none.
		SerialNumber: new(big.Int).SetBytes([]byte{0x01, 0x02, 0x03, 0x04, 0x05}),
		Subject:      pkix.Name{CommonName: "envoytest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return cert, certPath, keyPath
}

// A TLS listener with a certificate from files, and a plain HTTP listener
// answering directly; the bootstrap's own admin port (9) must be replaced.
const bootstrap = `
node: { id: test.envoytest, cluster: envoytest }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 9 } }
static_resources:
  listeners:
  - name: tls
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: %[1]q }
              private_key: { filename: %[2]q }
            validation_context:
              trusted_ca: { filename: %[1]q }
      filters:
      - name: envoy.filters.network.echo
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo
`

func TestStartInspectStop(t *testing.T) {
	dir := t.TempDir()
	cert, certPath, keyPath := selfSigned(t, dir, "spiffe://test/envoytest")
	e := envoytest.Start(t, envoytest.Config{Name: "one", Bootstrap: fmt.Sprintf(bootstrap, certPath, keyPath)})

	addr, err := e.AdminAddress(time.Second)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(addr, "127.0.0.1:"), addr)
	require.NotEqual(t, "127.0.0.1:9", addr, "the bootstrap's admin address is replaced")
	_, err = e.BaseID()
	require.NoError(t, err)

	certs, err := e.Certs()
	require.NoError(t, err)
	require.Equal(t, []string{"spiffe://test/envoytest"}, certs.URIs())
	require.Equal(t, []string{envoytest.SerialHex(cert.SerialNumber)}, certs.CASerials())
	require.Equal(t, []string{"102030405"}, certs.LeafSerials(), "no leading zero, as Envoy prints it")
	require.True(t, certs.Holds(1, "spiffe://test/envoytest", envoytest.SerialHex(cert.SerialNumber)))
	require.False(t, certs.Holds(1, "spiffe://test/other", envoytest.SerialHex(cert.SerialNumber)))
	require.False(t, certs.Holds(2, "spiffe://test/envoytest", envoytest.SerialHex(cert.SerialNumber)), "one context only")
	require.False(t, certs.Holds(1, "spiffe://test/envoytest", "ff"))

	live, err := e.Stat("server.state")
	require.NoError(t, err)
	require.Zero(t, live, "server.state 0 is LIVE")
	stats, err := e.Stats(`^server\.`)
	require.NoError(t, err)
	require.Contains(t, stats, "server.concurrency")
	require.EqualValues(t, 1, stats["server.concurrency"], "--concurrency 1")
	for name := range stats {
		require.True(t, strings.HasPrefix(name, "server."), name)
	}
	sds, err := e.SDS()
	require.NoError(t, err)
	require.Empty(t, sds.Secrets, "no SDS here")

	dump, err := e.ConfigDump("resource=static_listeners")
	require.NoError(t, err)
	require.Contains(t, string(dump), `"name": "tls"`)

	_, err = e.Admin(http.MethodPost, "/logging?level=debug")
	require.NoError(t, err)
	require.Contains(t, e.Logs(), "starting main dispatch loop")

	e.Stop()
	select {
	case <-e.Exited():
	default:
		t.Fatal("Stop returns after the exit")
	}
	e.Stop() // a second Stop does nothing
}

func TestKillIsACrash(t *testing.T) {
	dir := t.TempDir()
	_, certPath, keyPath := selfSigned(t, dir, "spiffe://test/envoytest")
	e := envoytest.Start(t, envoytest.Config{Bootstrap: fmt.Sprintf(bootstrap, certPath, keyPath)})
	e.Kill()
	<-e.Exited()
	var ee interface{ Sys() any }
	require.ErrorAs(t, e.ExitErr(), &ee)
	require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())
	_, err := e.Certs()
	require.Error(t, err, "its admin is gone")
}

func TestBrokenBootstrapIsReportedNotAwaited(t *testing.T) {
	binary := envoytest.Binary(t)
	e, err := envoytest.Launch(envoytest.Config{Binary: binary, Bootstrap: "static_resources: { clusters: [ { name: x, no_such_field: 1 } ] }"})
	require.NoError(t, err)
	defer e.Stop()
	began := time.Now()
	err = e.WaitReady(envoytest.DefaultReadyTimeout)
	require.Error(t, err)
	require.Contains(t, err.Error(), "exited")
	require.Less(t, time.Since(began), 15*time.Second, "an exit ends the wait")
	require.Contains(t, e.Logs(), "no_such_field")
}

func TestManyEnvoysShareTheMachine(t *testing.T) {
	// Each Envoy picks its own base id, so several run side by side.
	dir := t.TempDir()
	_, certPath, keyPath := selfSigned(t, dir, "spiffe://test/envoytest")
	ids := map[int]bool{}
	for i := range 3 {
		e := envoytest.Start(t, envoytest.Config{Name: fmt.Sprint("envoy-", i), Bootstrap: fmt.Sprintf(bootstrap, certPath, keyPath)})
		id, err := e.BaseID()
		require.NoError(t, err)
		ids[id] = true
	}
	require.Len(t, ids, 3)
}

func TestMissingBinary(t *testing.T) {
	t.Setenv(envoytest.BinaryEnv, filepath.Join(t.TempDir(), "envoy"))
	_, err := envoytest.FindBinary()
	require.ErrorContains(t, err, envoytest.BinaryEnv)
	_, err = envoytest.Launch(envoytest.Config{Bootstrap: "{}"})
	require.ErrorContains(t, err, "make envoy-tools")
}

// TestEnvoyDiesWithTheTestProcess kills a test process that started an
// Envoy, as a crashing or timed-out test would die, and requires the Envoy
// to go with it (Linux: the parent-death signal). Where orphans are killed
// anyway (some sandboxes' init does) it passes without the signal too.
func TestEnvoyDiesWithTheTestProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	if pidFile := os.Getenv("ENVOYTEST_CHILD_PIDFILE"); pidFile != "" {
		// The child: start an Envoy, say its pid, and wait to be killed.
		e, err := envoytest.Launch(envoytest.Config{Bootstrap: "node: { id: child }"})
		require.NoError(t, err)
		require.NoError(t, e.WaitReady(envoytest.DefaultReadyTimeout))
		require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(e.PID())), 0o600))
		time.Sleep(time.Minute)
		e.Stop()
		return
	}
	envoytest.Binary(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	child := exec.Command(os.Args[0], "-test.run=^TestEnvoyDiesWithTheTestProcess$", "-test.count=1")
	child.Env = append(os.Environ(), "ENVOYTEST_CHILD_PIDFILE="+pidFile)
	require.NoError(t, child.Start())
	var pid int
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(string(data))
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "the child's Envoy")
	require.NoError(t, syscall.Kill(pid, 0), "the Envoy runs")
	require.NoError(t, child.Process.Kill())
	_ = child.Wait()
	require.Eventually(t, func() bool {
		// Gone, or a zombie that nobody has reaped yet.
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(stat), ") Z ")
	}, 10*time.Second, 20*time.Millisecond, "the Envoy of a killed test process must die too")
}
