package sds

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
)

// TestGRPCDeadlineClosesAndCountsOnce: on grpc-go, a connection that never
// finishes its handshake and one that does but opens no authenticated
// stream are both closed at the deadline, and each counted once with
// reason "unauthenticated".
func TestGRPCDeadlineClosesAndCountsOnce(t *testing.T) {
	stats, err := NewGRPCConnStats(nil)
	require.NoError(t, err)
	gs := grpc.NewServer(grpc.StatsHandler(stats))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(stats.Listener(lis, 300*time.Millisecond)) }()
	t.Cleanup(gs.Stop)

	closedAtDeadline := func(nc net.Conn) {
		t.Helper()
		start := time.Now()
		require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := io.Copy(io.Discard, nc)
		require.NoError(t, err, "closed by the server, not by the read deadline")
		require.Less(t, time.Since(start), 3*time.Second)
	}
	unauthenticated := func() float64 {
		return testutil.ToFloat64(stats.closed.WithLabelValues("unauthenticated"))
	}

	silent, err := net.Dial("tcp", lis.Addr().String())
	require.NoError(t, err)
	defer silent.Close()
	closedAtDeadline(silent)
	require.Eventually(t, func() bool { return unauthenticated() == 1 }, 2*time.Second, 10*time.Millisecond)

	idle, err := net.Dial("tcp", lis.Addr().String())
	require.NoError(t, err)
	defer idle.Close()
	_, err = io.WriteString(idle, http2.ClientPreface)
	require.NoError(t, err)
	require.NoError(t, http2.NewFramer(idle, idle).WriteSettings())
	closedAtDeadline(idle)
	require.Eventually(t, func() bool { return unauthenticated() == 2 }, 2*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, 2.0, unauthenticated(), "each connection counted once")
}
