package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
)

// TestSDSOverTLSOnAPublicAddress serves SDS with a certificate on a
// non-loopback address (allowed only with TLS), and serves a renewed
// certificate to new connections without a restart.
func TestSDSOverTLSOnAPublicAddress(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			certDir := t.TempDir()
			cert, key := filepath.Join(certDir, "sds.crt"), filepath.Join(certDir, "sds.key")
			gen := func() []byte {
				out, err := exec.Command(binary, "generate", "tls-certificate", "--type", "server", "--hostname", "127.0.0.1",
					"--cert-file", cert, "--key-file", key).CombinedOutput()
				require.NoError(t, err, string(out))
				pem, err := os.ReadFile(cert)
				require.NoError(t, err)
				return pem
			}
			first := gen()
			port := freeAddr(t)
			_, p, err := net.SplitHostPort(port)
			require.NoError(t, err)
			s := start(t, dir, append(transportArgs(transport), "--sds-address", "0.0.0.0:"+p, "--sds-tls-cert", cert, "--sds-tls-key", key)...)
			addr := "127.0.0.1:" + p

			trusting := func(pem []byte) credentials.TransportCredentials {
				pool := x509.NewCertPool()
				require.True(t, pool.AppendCertsFromPEM(pem))
				return credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
			}
			st := sdstest.OpenStream(t, sdstest.DialWith(t, addr, s.token(t, "default", "web-1", "web"), trusting(first)), "default.web-1", false, "identity_cert", "mesh_ca")
			got, _ := st.Expect()
			require.Len(t, got, 2)

			// A renewed certificate (new key) is served to new connections.
			time.Sleep(10 * time.Millisecond) // a distinct modification time
			second := gen()
			st2 := sdstest.OpenStream(t, sdstest.DialWith(t, addr, s.token(t, "default", "web-2", "web"), trusting(second)), "default.web-2", false, "mesh_ca")
			got, _ = st2.Expect()
			require.Len(t, got, 1)
		})
	}
}
