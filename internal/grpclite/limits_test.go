package grpclite_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
)

// tokenAuthorize lets a stream through when it carries "authorization: ok".
func tokenAuthorize(ctx context.Context, _ string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) == 1 && v[0] == "ok" {
		return nil
	}
	return status.Error(codes.Unauthenticated, "no token")
}

// limitsServer is a server with an Authorize hook, short deadlines and its
// metrics in reg.
func limitsServer(t *testing.T, mutate func(*grpclite.Config)) (*testServer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := grpclite.NewMetrics(reg)
	require.NoError(t, err)
	cfg := grpclite.Config{
		Metrics:                m,
		Authorize:              tokenAuthorize,
		PublicMethods:          []string{healthCheck},
		UnauthenticatedTimeout: 500 * time.Millisecond,
		MaxRecvMsgSize:         2 << 20,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return startServer(t, serverSetup{cfg: cfg}), reg
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// announce opens stream id as a client with the given authorization (none
// when empty), announces a message of size bytes and sends the first part
// bytes of it.
func announce(c *rawConn, id uint32, auth string, size, part int) {
	c.t.Helper()
	fields := grpcRequest(streamSecrets)
	if auth != "" {
		fields = with(fields, "authorization", auth)
	}
	c.headers(id, false, fields...)
	msg := binary.BigEndian.AppendUint32([]byte{0}, uint32(size))
	msg = append(msg, make([]byte, part)...)
	_ = c.fr.WriteData(id, false, msg)
}

// TestUnauthenticatedClientHoldsNoMemory: the probe's attack, 64 streams
// announcing 1 MiB messages with partial bodies and no token: every stream
// is refused at its headers, nothing of its body is buffered, and the
// connection is closed at its deadline.
func TestUnauthenticatedClientHoldsNoMemory(t *testing.T) {
	ts, reg := limitsServer(t, nil)
	c := dialRaw(t, ts.addr)
	c.start()
	for i := range 64 {
		announce(c, uint32(2*i+1), "", 1<<20, 1000)
	}
	refused := 0
	var goAway *http2.GoAwayFrame
	for goAway == nil {
		f, err := c.fr.ReadFrame()
		require.NoError(t, err)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			require.Equal(t, "16", fieldMap(f)["grpc-status"], "Unauthenticated")
			refused++
		case *http2.GoAwayFrame:
			goAway = f
		}
		require.Zero(t, grpclite.BufferedBytes(ts.Server), "nothing of an unauthenticated stream is buffered")
	}
	require.Equal(t, 64, refused)
	require.Equal(t, http2.ErrCodeNo, goAway.ErrCode)
	c.awaitClosed()
	require.InDelta(t, 64, counterValue(t, reg, "meshsds_sds_limits_exceeded_total", "limit", grpclite.LimitUnauthorized), 0)
	require.Eventually(t, func() bool {
		return counterValue(t, reg, "meshsds_sds_connections_closed_total", "reason", grpclite.ReasonUnauthenticated) == 1
	}, waitTime, 10*time.Millisecond)
}

// TestSilentConnectionIsClosed: a connection that opens no stream at all
// is closed at the unauthenticated deadline, whatever it does not send.
func TestSilentConnectionIsClosed(t *testing.T) {
	ts, _ := limitsServer(t, nil)
	c := dialRaw(t, ts.addr)
	c.start()
	start := time.Now()
	got := c.awaitClosed()
	require.Equal(t, []http2.ErrCode{http2.ErrCodeNo}, got.goAways)
	require.Less(t, time.Since(start), 3*time.Second)
}

// TestAuthorizedClientGetsEverything: with a token, a stream works, large
// messages included, and its connection outlives the deadline.
func TestAuthorizedClientGetsEverything(t *testing.T) {
	ts, _ := limitsServer(t, nil)
	cc := dial(t, ts.addr, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "ok")
	stream, _ := openSDS(ctx, t, ts, cc)
	roundTrip(t, stream, "v1")
	big := string(make([]byte, 1<<20))
	require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: big, TypeUrl: sdstest.SecretTypeURL}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	require.Len(t, resp.GetVersionInfo(), 1<<20)
	time.Sleep(time.Second) // past UnauthenticatedTimeout
	roundTrip(t, stream, "v2")

	// Without the token the same call is refused.
	_, err = secretv3.NewSecretDiscoveryServiceClient(cc).FetchSecrets(testCtx(t), &discoveryv3.DiscoveryRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
}

// TestPublicMethodsDoNotAuthenticate: a health check needs no token, but a
// connection of health checks only is bounded (two streams at once, small
// messages) and closed at the deadline.
func TestPublicMethodsDoNotAuthenticate(t *testing.T) {
	ts, reg := limitsServer(t, nil)
	ts.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	cc := dial(t, ts.addr)
	resp, err := healthpb.NewHealthClient(cc).Check(testCtx(t), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	c := dialRaw(t, ts.addr)
	c.start()
	c.headers(1, false, grpcRequest(healthCheck)...)
	c.headers(3, false, grpcRequest(healthCheck)...)
	c.headers(5, false, grpcRequest(healthCheck)...)
	rst, ok := c.awaitStream(5).(*http2.RSTStreamFrame)
	require.True(t, ok, "a third public stream on an unauthenticated connection")
	require.Equal(t, http2.ErrCodeRefusedStream, rst.ErrCode)
	require.NoError(t, c.fr.WriteData(1, false, binary.BigEndian.AppendUint32([]byte{0}, 64<<10)))
	h, ok := c.awaitStream(1).(*http2.MetaHeadersFrame)
	require.True(t, ok)
	require.Equal(t, "8", fieldMap(h)["grpc-status"], "ResourceExhausted: a large message before authentication")
	require.Equal(t, []http2.ErrCode{http2.ErrCodeNo}, c.awaitClosed().goAways)
	require.InDelta(t, 1, counterValue(t, reg, "meshsds_sds_limits_exceeded_total", "limit", grpclite.LimitUnauthenticatedStreams), 0)
	require.InDelta(t, 1, counterValue(t, reg, "meshsds_sds_limits_exceeded_total", "limit", grpclite.LimitUnauthenticatedMessage), 0)
}

// TestConnectionBufferIsBounded: an authenticated client that opens many
// streams, announces a large message on each, sends as much of each as the
// windows allow and finishes none makes the server hold at most
// MaxConnBuffered, one message (the stream whose turn it is to finish) and
// a stream window per stream; beyond, its streams get no window back, and
// its connection lives on.
func TestConnectionBufferIsBounded(t *testing.T) {
	const (
		capBytes  = 256 << 10
		streams   = 32
		announced = 1 << 20
	)
	ts, reg := limitsServer(t, func(c *grpclite.Config) { c.MaxConnBuffered = capBytes })
	f := newFlowClient(dialRaw(t, ts.addr))
	left := map[uint32]int{} // what each stream may still send and leave its message incomplete
	for i := range streams {
		id := uint32(2*i + 1)
		f.open(id, with(grpcRequest(streamSecrets), "authorization", "ok")...)
		require.Equal(t, 5, f.send(id, binary.BigEndian.AppendUint32([]byte{0}, announced), false, waitTime))
		left[id] = announced - 1
	}
	const bound = capBytes + 5 + announced + streams*65535
	zeros := make([]byte, announced)
	peak := 0
	for progress := true; progress; {
		progress = false
		for id, n := range left {
			sent := f.send(id, zeros[:n], false, 20*time.Millisecond)
			left[id] -= sent
			progress = progress || sent > 0
			held := grpclite.BufferedBytes(ts.Server)
			require.LessOrEqual(t, held, bound)
			peak = max(peak, held)
		}
	}
	t.Logf("the server held at most %d KiB (bound %d KiB)", peak>>10, bound>>10)
	require.Greater(t, grpclite.BufferedBytes(ts.Server), capBytes, "the client was let past the cap")
	require.GreaterOrEqual(t, counterValue(t, reg, "meshsds_sds_limits_exceeded_total", "limit", grpclite.LimitConnBuffered), 1.0)
	// The connection lives on: the client only waits.
	require.NoError(t, f.fr.WritePing(false, [8]byte{3}))
	require.True(t, f.collect(waitTime, func() bool {
		for _, fr := range f.frames {
			if p, ok := fr.(*http2.PingFrame); ok && p.IsAck() {
				return true
			}
		}
		return false
	}), "no PING ack")
}

// TestDataBeyondTheWindowIsAConnectionError: a client that ignores flow
// control cannot make the server buffer more.
func TestDataBeyondTheWindowIsAConnectionError(t *testing.T) {
	// A small buffer: stream 1's incomplete message fills it and has the
	// turn to finish, so stream 3 gets no window back, and its client
	// sends on regardless.
	ts, _ := limitsServer(t, func(c *grpclite.Config) { c.MaxConnBuffered = 1 })
	c := dialRaw(t, ts.addr)
	c.start()
	announce(c, 1, "ok", 1<<20, 0)
	announce(c, 3, "ok", 1<<20, 0)
	for range 8 {
		_ = c.fr.WriteData(3, false, make([]byte, 16<<10))
	}
	require.Contains(t, c.awaitClosed().goAways, http2.ErrCodeFlowControl)
}

// TestMaxConnections: a connection beyond the cap is closed at once.
func TestMaxConnections(t *testing.T) {
	ts, reg := limitsServer(t, func(c *grpclite.Config) { c.MaxConnections = 3 })
	for range 3 {
		c := dialRaw(t, ts.addr)
		c.start()
		await[*http2.SettingsFrame](c)
	}
	extra := dialRaw(t, ts.addr)
	_ = extra.nc.SetReadDeadline(time.Now().Add(waitTime))
	var b [1]byte
	_, err := extra.nc.Read(b[:])
	require.True(t, isClosed(err), "the fourth connection: %v", err)
	require.InDelta(t, 1, counterValue(t, reg, "meshsds_sds_limits_exceeded_total", "limit", grpclite.LimitConnections), 0)
}

// TestDataOnClosedStreams: DATA on a stream the client ended, or on one it
// reset, is a STREAM_CLOSED stream error (RFC 9113 section 5.1); DATA still
// in flight on a stream the server reset is dropped quietly.
func TestDataOnClosedStreams(t *testing.T) {
	ts := startServer(t, serverSetup{})
	c := dialRaw(t, ts.addr)
	c.start()
	// The client resets its stream, then sends on it.
	c.headers(1, false, grpcRequest(streamSecrets)...)
	require.NoError(t, c.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	require.NoError(t, c.fr.WriteData(1, false, []byte{0, 0, 0, 0, 0}))
	rst, ok := c.awaitStream(1).(*http2.RSTStreamFrame)
	require.True(t, ok)
	require.Equal(t, http2.ErrCodeStreamClosed, rst.ErrCode)

	// The server refuses a stream (an unknown method) while the client is
	// still sending: what was in flight is dropped, no error.
	c.headers(3, false, grpcRequest("/no.such.Service/Method")...)
	h, ok := c.awaitStream(3).(*http2.MetaHeadersFrame)
	require.True(t, ok)
	require.Equal(t, "12", fieldMap(h)["grpc-status"])
	require.IsType(t, &http2.RSTStreamFrame{}, c.awaitStream(3), "RST_STREAM NO_ERROR: stop sending")
	require.NoError(t, c.fr.WriteData(3, false, []byte{0, 0, 0, 0, 0}))
	require.NoError(t, c.fr.WritePing(false, [8]byte{4}))
	for {
		f, err := c.fr.ReadFrame()
		require.NoError(t, err)
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			t.Fatalf("in-flight DATA on a stream the server reset got %v", r)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}
}

// TestContentLengthMustMatch: a request whose body differs from its
// content-length is malformed (RFC 9113 section 8.1.1).
func TestContentLengthMustMatch(t *testing.T) {
	ts := startServer(t, serverSetup{})
	c := dialRaw(t, ts.addr)
	c.start()
	c.headers(1, false, with(grpcRequest(streamSecrets), "content-length", "10")...)
	require.NoError(t, c.fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}))
	rst, ok := c.awaitStream(1).(*http2.RSTStreamFrame)
	require.True(t, ok)
	require.Equal(t, http2.ErrCodeProtocol, rst.ErrCode)
}
