package grpclite_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/internal/testing/testenv"
)

// httpTool finds one of Debian's nghttp2-client tools: skipped locally
// without it, a failure in CI (which installs it).
func httpTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		testenv.Missing(t, name+" not found: apt-get install nghttp2-client (.ci/run does)")
	}
	return path
}

// healthRequestFile writes an empty grpc.health.v1 HealthCheckRequest, as
// a gRPC message, to a file.
func healthRequestFile(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "req")
	require.NoError(t, os.WriteFile(f, []byte{0, 0, 0, 0, 0}, 0o600))
	return f
}

// TestNghttpWithoutHPACKTable: nghttp -c 0 sets SETTINGS_HEADER_TABLE_SIZE
// to 0 and fails every response that does not say so first (it got
// COMPRESSION_ERROR before).
func TestNghttpWithoutHPACKTable(t *testing.T) {
	nghttp := httpTool(t, "nghttp")
	ts := startServer(t, serverSetup{})
	ts.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	out, err := exec.Command(nghttp, "-v", "-c", "0", "-H", ":method: POST", "-H", "content-type: application/grpc",
		"-H", "te: trailers", "-d", healthRequestFile(t), "http://"+ts.addr+healthCheck).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NotContains(t, string(out), "COMPRESSION_ERROR")
	require.Contains(t, string(out), ":status: 200")
	require.Contains(t, string(out), "grpc-status: 0")
}

// TestH2loadManyStreams: h2load, 4 connections of 64 concurrent streams,
// 2,000 gRPC health checks: every one answered.
func TestH2loadManyStreams(t *testing.T) {
	h2load := httpTool(t, "h2load")
	ts := startServer(t, serverSetup{cfg: grpclite.Config{MaxConcurrentStreams: 64}})
	ts.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	out, err := exec.Command(h2load, "-n", "2000", "-c", "4", "-m", "64", "-H", "content-type: application/grpc",
		"-H", "te: trailers", "-d", healthRequestFile(t), "http://"+ts.addr+healthCheck).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "2000 succeeded, 0 failed, 0 errored", "%s", out)
	require.True(t, strings.Contains(string(out), "status codes: 2000 2xx"), "%s", out)
}
