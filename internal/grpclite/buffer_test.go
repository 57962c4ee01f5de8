package grpclite_test

import (
	"context"
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/internal/grpclite"
)

// flowClient sends on a raw connection as a well-behaved client does:
// within the windows the server gave, which it collects as it goes.
type flowClient struct {
	*rawConn
	conn    int64
	streams map[uint32]int64
	frames  []http2.Frame // what it read besides WINDOW_UPDATEs
}

func newFlowClient(c *rawConn) *flowClient {
	c.start()
	// This client's waits are its own (collect); the connection's
	// deadline of waitTime would cut the longer tests short.
	require.NoError(c.t, c.nc.SetDeadline(time.Time{}))
	return &flowClient{rawConn: c, conn: 65535, streams: map[uint32]int64{}}
}

// open opens stream id with fields.
func (f *flowClient) open(id uint32, fields ...string) {
	f.t.Helper()
	f.headers(id, false, fields...)
	f.streams[id] = 65535
}

// send sends data on stream id as far as the windows let it, ending the
// stream with the last frame when end. Once a window is spent it waits
// up to wait for more; it returns how much it sent.
func (f *flowClient) send(id uint32, data []byte, end bool, wait time.Duration) int {
	f.t.Helper()
	sent := 0
	for sent < len(data) {
		n := int(min(int64(len(data)-sent), f.conn, f.streams[id], 16<<10))
		if n <= 0 {
			if !f.collect(wait, func() bool { return f.conn > 0 && f.streams[id] > 0 }) {
				return sent
			}
			continue
		}
		require.NoError(f.t, f.fr.WriteData(id, end && sent+n == len(data), data[sent:sent+n]))
		f.conn -= int64(n)
		f.streams[id] -= int64(n)
		sent += n
	}
	return sent
}

// collect reads frames for at most wait, until done reports true; it
// returns done's last answer.
func (f *flowClient) collect(wait time.Duration, done func() bool) bool {
	f.t.Helper()
	require.NoError(f.t, f.nc.SetReadDeadline(time.Now().Add(wait)))
	defer func() { require.NoError(f.t, f.nc.SetReadDeadline(time.Time{})) }()
	for !done() {
		fr, err := f.fr.ReadFrame()
		if isTimeout(err) {
			return done()
		}
		require.NoError(f.t, err)
		if wu, ok := fr.(*http2.WindowUpdateFrame); ok {
			if wu.StreamID == 0 {
				f.conn += int64(wu.Increment)
			} else {
				f.streams[wu.StreamID] += int64(wu.Increment)
			}
			continue
		}
		f.frames = append(f.frames, fr)
	}
	return true
}

// status waits for the grpc-status of stream id.
func (f *flowClient) status(id uint32) string {
	f.t.Helper()
	find := func() string {
		for _, fr := range f.frames {
			if h, ok := fr.(*http2.MetaHeadersFrame); ok && h.StreamID == id {
				if s, ok := fieldMap(h)["grpc-status"]; ok {
					return s
				}
			}
		}
		return ""
	}
	f.collect(waitTime, func() bool { return find() != "" })
	s := find()
	require.NotEmpty(f.t, s, "no status on stream %d", id)
	return s
}

// sdsRequest frames a DiscoveryRequest of about size bytes (resource names
// the echo leaves out).
func sdsRequest(t testing.TB, version string, size int) []byte {
	return grpcMessage(t, &discoveryv3.DiscoveryRequest{VersionInfo: version, ResourceNames: []string{printable(size, 7)}})
}

// TestLargeMessagesComplete: messages within MaxRecvMsgSize go through
// however many are in flight on one connection, however small
// MaxConnBuffered: beyond it the streams take turns, and never wait on
// each other for good. Both kinds of method: run by RegisterService (a
// unary call) and as events (HandleStream).
func TestLargeMessagesComplete(t *testing.T) {
	small := grpclite.Config{MaxConnBuffered: 1 << 20, MaxRecvMsgSize: 2 << 20}
	tiny := grpclite.Config{MaxConnBuffered: 64 << 10, MaxRecvMsgSize: 2 << 20}
	tests := []struct {
		name string
		cfg  grpclite.Config
		size int // of each request's payload
		n    int // requests at once
	}{
		{"one of MaxRecvMsgSize, default limits", grpclite.Config{}, 4<<20 - 100, 1},
		{"one larger than MaxConnBuffered", small, 2<<20 - 100, 1},
		{"two of MaxConnBuffered", small, 1 << 20, 2},
		{"eight of MaxConnBuffered", small, 1 << 20, 8},
		{"eight of 16 times MaxConnBuffered", tiny, 1 << 20, 8},
	}
	calls := map[string]func(ctx context.Context, client secretv3.SecretDiscoveryServiceClient, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error){
		"unary": func(ctx context.Context, client secretv3.SecretDiscoveryServiceClient, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
			return client.FetchSecrets(ctx, req)
		},
		"event stream": func(ctx context.Context, client secretv3.SecretDiscoveryServiceClient, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
			stream, err := client.StreamSecrets(ctx)
			if err != nil {
				return nil, err
			}
			if err := stream.Send(req); err != nil {
				return nil, err
			}
			if err := stream.CloseSend(); err != nil {
				return nil, err
			}
			return stream.Recv()
		},
	}
	for _, tt := range tests {
		for kind, call := range calls {
			t.Run(tt.name+"/"+kind, func(t *testing.T) {
				ts := startServer(t, serverSetup{cfg: tt.cfg})
				cc := dial(t, ts.addr, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
				client := secretv3.NewSecretDiscoveryServiceClient(cc)
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				payload := printable(tt.size, 1)
				var g errgroup.Group
				for i := range tt.n {
					g.Go(func() error {
						version := strconv.Itoa(i)
						resp, err := call(ctx, client, &discoveryv3.DiscoveryRequest{VersionInfo: version, ResourceNames: []string{payload}})
						if err != nil {
							return err
						}
						if resp.GetVersionInfo() != version {
							return status.Errorf(codes.Internal, "request %s answered as %q", version, resp.GetVersionInfo())
						}
						return nil
					})
				}
				require.NoError(t, g.Wait())
				require.Eventually(t, func() bool { return grpclite.BufferedBytes(ts.Server) == 0 }, waitTime, 10*time.Millisecond)
			})
		}
	}
}

// TestEndedStreamReleasesItsBuffer: a stream that holds an incomplete
// message past MaxConnBuffered, whichever way it ends, gives its share of
// the connection back: another stream's large message goes through.
func TestEndedStreamReleasesItsBuffer(t *testing.T) {
	const capBytes = 64 << 10
	tests := []struct {
		name string
		end  func(t *testing.T, f *flowClient, ts *testServer)
		code string // the first stream's status, "" for none
	}{
		{
			name: "the client resets it",
			end: func(t *testing.T, f *flowClient, _ *testServer) {
				require.NoError(t, f.fr.WriteRSTStream(1, http2.ErrCodeCancel))
			},
		},
		{
			name: "the client ends it inside the message",
			end: func(_ *testing.T, f *flowClient, _ *testServer) {
				f.send(1, []byte{0}, true, waitTime)
			},
			code: "13", // Internal
		},
		{
			name: "the handler closes it",
			end: func(t *testing.T, _ *flowClient, ts *testServer) {
				ts.sds.next(t).st.Close(status.Error(codes.Aborted, "enough"))
			},
			code: "10", // Aborted
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, _ := limitsServer(t, func(c *grpclite.Config) { c.MaxConnBuffered = capBytes })
			f := newFlowClient(dialRaw(t, ts.addr))
			// Stream 1 sends well past the cap, and stops inside its
			// message.
			f.open(1, with(grpcRequest(streamSecrets), "authorization", "ok")...)
			msg := binary.BigEndian.AppendUint32([]byte{0}, 1<<20)
			msg = append(msg, make([]byte, 4*capBytes)...)
			require.Greater(t, f.send(1, msg, false, 200*time.Millisecond), capBytes)
			require.Eventually(t, func() bool { return grpclite.BufferedBytes(ts.Server) > capBytes }, waitTime, time.Millisecond)

			// Stream 3's message waits for stream 1's: the connection holds
			// more than the cap, and stream 1 is first.
			f.open(3, with(grpcRequest(streamSecrets), "authorization", "ok")...)
			req := sdsRequest(t, "second", 512<<10)
			sent := f.send(3, req, true, 200*time.Millisecond)
			require.Less(t, sent, len(req), "stream 3 was not held back")

			tt.end(t, f, ts)
			if tt.code != "" {
				require.Equal(t, tt.code, f.status(1))
			}
			require.Equal(t, len(req)-sent, f.send(3, req[sent:], true, waitTime), "stream 3 is still held back")
			require.Equal(t, "0", f.status(3))
			require.Eventually(t, func() bool { return grpclite.BufferedBytes(ts.Server) == 0 }, waitTime, time.Millisecond)
		})
	}
}

// TestUnreadMessagesAreBounded: a method run by RegisterService whose
// handler does not read (health Watch reads its one request) gets no
// window back for its stream: what it leaves unread stays within a
// window, empty messages included, and counts toward its connection.
func TestUnreadMessagesAreBounded(t *testing.T) {
	for _, size := range []int{0, 1000} {
		t.Run(strconv.Itoa(size)+" byte messages", func(t *testing.T) {
			ts, _ := limitsServer(t, nil)
			f := newFlowClient(dialRaw(t, ts.addr))
			// Another stream authenticates the connection: no limits for
			// the unauthenticated apply.
			f.open(1, with(grpcRequest(streamSecrets), "authorization", "ok")...)
			f.open(3, with(grpcRequest("/grpc.health.v1.Health/Watch"), "authorization", "ok")...)
			one := grpcMessage(t, &healthpb.HealthCheckRequest{Service: string(make([]byte, size))})
			var flood []byte
			for len(flood) < 1<<20 {
				flood = append(flood, one...)
			}
			sent := f.send(3, flood, false, 200*time.Millisecond)
			require.Less(t, sent, 3*65535, "the client sent on and on")
			require.LessOrEqual(t, grpclite.BufferedBytes(ts.Server), 2*65535)
		})
	}
}

// TestHeldMessagesStallTheirStream: an event handler that holds the
// messages it has not handled yet (Stream.Hold) gets no window back for
// its stream until it releases them, and its connection counts them.
func TestHeldMessagesStallTheirStream(t *testing.T) {
	ts := startServer(t, serverSetup{holdMessages: true})
	f := newFlowClient(dialRaw(t, ts.addr))
	f.open(1, grpcRequest(streamSecrets)...)
	s := ts.sds.next(t)
	one := sdsRequest(t, "v", 1000)
	var flood []byte
	for len(flood) < 1<<20 {
		flood = append(flood, one...)
	}
	sent := f.send(1, flood, false, 200*time.Millisecond)
	require.Less(t, sent, 3*65535, "the client sent on and on")
	held := grpclite.BufferedBytes(ts.Server)
	require.Greater(t, held, 0, "the held messages count")
	require.LessOrEqual(t, held, 2*65535)

	s.st.Release(held)
	more := f.send(1, flood[sent:], false, 200*time.Millisecond)
	require.Greater(t, more, 0, "released, the stream gets its window back")
	require.Less(t, more, 3*65535, "and the new messages are held again")
}
