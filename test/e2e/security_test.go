package e2e

import (
	"bytes"
	encbin "encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// rssKiB is the resident memory of process pid.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// attack opens a connection to addr and, with no token, opens 64
// StreamSecrets streams that each announce a 1 MiB message and send part
// of it, as fast as the server lets it, then waits on the socket.
func attack(t *testing.T, addr string, header ...[2]string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	fr := http2.NewFramer(nc, nc)
	_, err = io.WriteString(nc, http2.ClientPreface)
	require.NoError(t, err)
	require.NoError(t, fr.WriteSettings())
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for i := range 64 {
		hbuf.Reset()
		for _, f := range append([][2]string{
			{":method", "POST"},
			{":scheme", "http"},
			{":path", "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"},
			{":authority", "localhost"},
			{"content-type", "application/grpc"},
			{"te", "trailers"},
		}, header...) {
			require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
		}
		id := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
			break
		}
		msg := append(encbin.BigEndian.AppendUint32([]byte{0}, 1<<20), make([]byte, 16000)...)
		if err := fr.WriteData(id, false, msg); err != nil {
			break
		}
	}
	return nc
}

// TestUnauthenticatedClientsHoldNoMemory: eight connections of the probe's
// attack (64 streams each announcing a 1 MiB message, no token) cost the
// server nothing it keeps, and grpclite closes them at their deadline.
func TestUnauthenticatedClientsHoldNoMemory(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			s := start(t, dir, append(transportArgs(transport), "--sds-unauthenticated-timeout", "2s")...)
			before := rssKiB(t, s.proc.Pid)
			conns := make([]net.Conn, 8)
			for i := range conns {
				conns[i] = attack(t, s.sds)
			}
			time.Sleep(500 * time.Millisecond)
			grew := rssKiB(t, s.proc.Pid) - before
			t.Logf("RSS grew by %d KiB with 8 attacking connections", grew)
			require.Less(t, grew, 16<<10, "the server holds what unauthenticated clients send")
			metrics := s.scrape(t)
			require.GreaterOrEqual(t, metricValue(t, metrics, `meshsds_sds_auth_failures_total{reason="missing_token"}`), 1.0)
			for _, nc := range conns {
				require.NoError(t, nc.SetReadDeadline(time.Now().Add(10*time.Second)))
				_, err := io.Copy(io.Discard, nc)
				var ne net.Error
				require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection was not closed at its deadline")
			}
			// The client may see the close before the server counts it.
			require.Eventually(t, func() bool {
				return strings.Contains(s.scrape(t), `meshsds_sds_connections_closed_total{reason="unauthenticated"} 8`)
			}, 10*time.Second, 20*time.Millisecond)
		})
	}
}

// TestAuthenticatedConnectionsOutliveTheDeadline: the deadline of
// --sds-unauthenticated-timeout is for connections that never present a
// valid token; a data plane's connection stays, and keeps being served.
func TestAuthenticatedConnectionsOutliveTheDeadline(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			s := start(t, dir, append(transportArgs(transport), "--sds-unauthenticated-timeout", "1s")...)
			dp := connect(t, s, "default", "web-1", "web")
			idle := attack(t, s.sds) // refused streams authenticate nothing
			require.NoError(t, idle.SetReadDeadline(time.Now().Add(10*time.Second)))
			_, err := io.Copy(io.Discard, idle)
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the unauthenticated connection was not closed at its deadline")

			time.Sleep(1500 * time.Millisecond) // past the data plane's deadline too
			next := pkitest.NewRootCA(t, "default CA 2")
			writeAtomic(t, filepath.Join(dir, "default", "ca-key"), next.KeyPEM)
			writeAtomic(t, filepath.Join(dir, "default", "ca-cert"), next.CertPEM)
			dp.rotatedTo(t, next) // pushed on the connection opened before the deadline
			require.Eventually(t, func() bool {
				return strings.Contains(s.scrape(t), `meshsds_sds_connections_closed_total{reason="unauthenticated"} 1`)
			}, 5*time.Second, 20*time.Millisecond, "only the unauthenticated connection was closed by the deadline")
			require.Contains(t, s.scrape(t), "meshsds_sds_connections 1", "the data plane's connection is open")
		})
	}
}

// TestRevokedTokensAuthenticateNothing: a connection whose streams carry a
// revoked token is refused at their headers and closed at the
// unauthenticated deadline, as one without a token is; a stolen token
// revoked by the operator cannot hold the server's connections.
func TestRevokedTokensAuthenticateNothing(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			dir, _ := secretsDir(t)
			s := start(t, dir, append(transportArgs(transport), "--sds-unauthenticated-timeout", "1s")...)
			stolen := s.token(t, "default", "web-1", "web")
			victim := sdstest.OpenStream(t, sdstest.Dial(t, s.sds, stolen), "default.web-1", false, "identity_cert")
			victim.Expect()
			writeAtomic(t, filepath.Join(dir, "default", "dataplane-token-revocations-default"), []byte(tokenID(t, stolen)+"\n"))
			_, err := victim.Recv(10 * time.Second)
			require.Equal(t, codes.PermissionDenied, status.Code(err), "the revocation is in force: %v", err)

			nc := attack(t, s.sds, [2]string{"authorization", "Bearer " + stolen})
			require.NoError(t, nc.SetReadDeadline(time.Now().Add(10*time.Second)))
			_, err = io.Copy(io.Discard, nc)
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the revoked token's connection was not closed at its deadline")
			require.Eventually(t, func() bool {
				return strings.Contains(s.scrape(t), `meshsds_sds_connections_closed_total{reason="unauthenticated"} 1`)
			}, 5*time.Second, 20*time.Millisecond)
		})
	}
}

// TestEmptyAdminAddressListensNowhere: --admin-address "" turns the plain
// admin listener off; it never listens on every interface at a random port.
func TestEmptyAdminAddressListensNowhere(t *testing.T) {
	dir, _ := secretsDir(t)
	s := start(t, dir, "--admin-address", "")
	var starting string
	for _, line := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(line, "meshsds starting") {
			starting = line
		}
	}
	require.NotEmpty(t, starting)
	require.NotContains(t, starting, " admin=", "no admin listener")
	_, err := http.Get("http://" + s.admin + "/meshes")
	require.Error(t, err, "nothing listens on the admin address")
}

// TestAdminAndMetricsListenersAreBounded: a client that sends its request
// slowly is cut off, and connections beyond the cap wait at accept without
// costing the server a goroutine.
func TestAdminAndMetricsListenersAreBounded(t *testing.T) {
	dir, _ := secretsDir(t)
	s := start(t, dir)
	for _, addr := range []string{s.admin, s.metrics} {
		// Headers that never end: closed by the read-header timeout (10 s).
		nc, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_, err = io.WriteString(nc, "PUT /meshes/default HTTP/1.1\r\nHost: x\r\n")
		require.NoError(t, err)
		require.NoError(t, nc.SetReadDeadline(time.Now().Add(20*time.Second)))
		start := time.Now()
		_, _ = io.Copy(io.Discard, nc)
		require.Less(t, time.Since(start), 15*time.Second, "%s: a slow client held its connection", addr)
		nc.Close()
	}

	// 256 idle connections fill the admin listener; the next request waits
	// until one goes.
	var idle []net.Conn
	for range 256 {
		nc, err := net.Dial("tcp", s.admin)
		require.NoError(t, err)
		idle = append(idle, nc)
	}
	client := &http.Client{Timeout: time.Second}
	_, err := client.Get("http://" + s.admin + "/meshes")
	require.Error(t, err, "a request beyond the connection cap is not served")
	for _, nc := range idle {
		nc.Close()
	}
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + s.admin + "/meshes")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 100*time.Millisecond)
}
