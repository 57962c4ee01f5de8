package grpclite_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/big"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// TestMain fails the package if a connection, stream or handler goroutine
// outlives its test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	sdsService    = "envoy.service.secret.v3.SecretDiscoveryService"
	streamSecrets = "/" + sdsService + "/StreamSecrets"
	healthCheck   = "/grpc.health.v1.Health/Check"
	// waitTime bounds every wait in these tests: a broken server fails a
	// test instead of hanging it.
	waitTime = 5 * time.Second
)

// ---------------------------------------------------------------------------
// Server under test and its handlers.

// serverSetup says how startServer builds the server.
type serverSetup struct {
	cfg grpclite.Config
	lis net.Listener // default: TCP on 127.0.0.1:0
	// noEvents serves StreamSecrets with the generated handler (a
	// goroutine per stream) instead of HandleStream.
	noEvents bool
	// streamsFirst calls HandleStream before RegisterService.
	streamsFirst bool
	// respond gives the event handler's answers to a request; default one
	// echo.
	respond func(*discoveryv3.DiscoveryRequest) []*discoveryv3.DiscoveryResponse
	// holdOnEOF keeps event streams open after End(io.EOF) instead of
	// closing them.
	holdOnEOF bool
	// holdMessages has the event handler Hold each message it gets, until
	// the test releases them.
	holdMessages bool
}

// testServer is a grpclite server serving the real health and reflection
// services, the SDS service through RegisterService (sdsImpl) and, unless
// noEvents, StreamSecrets through HandleStream (sdsHandler).
type testServer struct {
	*grpclite.Server
	addr   string
	health *health.Server
	sds    *sdsHandler
	impl   *sdsImpl
	done   chan struct{} // closed when Serve returns
	err    error         // Serve's result, once done is closed
}

func startServer(t testing.TB, setup serverSetup) *testServer {
	t.Helper()
	s := grpclite.NewServer(setup.cfg)
	ts := &testServer{
		Server: s, health: health.NewServer(), sds: newSDSHandler(setup.respond, setup.holdOnEOF),
		impl: &sdsImpl{peers: make(chan *peer.Peer, 16)}, done: make(chan struct{}),
	}
	ts.sds.holdMessages = setup.holdMessages
	if !setup.noEvents && setup.streamsFirst {
		s.HandleStream(streamSecrets, ts.sds.open)
	}
	s.RegisterService(&secretv3.SecretDiscoveryService_ServiceDesc, ts.impl)
	if !setup.noEvents && !setup.streamsFirst {
		s.HandleStream(streamSecrets, ts.sds.open)
	}
	healthpb.RegisterHealthServer(s, ts.health)
	reflection.Register(s)

	lis := setup.lis
	if lis == nil {
		var err error
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
	}
	ts.addr = lis.Addr().String()
	go func() {
		ts.err = s.Serve(lis)
		close(ts.done)
	}()
	t.Cleanup(func() {
		s.Stop()
		select {
		case <-ts.done:
		case <-time.After(waitTime):
			t.Errorf("Serve did not return after Stop")
			return
		}
		if !errors.Is(ts.err, grpclite.ErrServerStopped) {
			t.Errorf("Serve returned %v, want ErrServerStopped", ts.err)
		}
	})
	return ts
}

// served waits for Serve to return and returns its error.
func (ts *testServer) served(t testing.TB) error {
	t.Helper()
	select {
	case <-ts.done:
		return ts.err
	case <-time.After(waitTime):
		t.Fatal("Serve did not return")
		return nil
	}
}

// sdsImpl is the SDS service run the grpc-go way, in a goroutine per call.
type sdsImpl struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	peers chan *peer.Peer // the callers of FetchSecrets
}

func (s *sdsImpl) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	p, _ := peer.FromContext(ctx)
	select {
	case s.peers <- p:
	default:
	}
	method, _ := grpc.Method(ctx)
	if err := grpc.SetHeader(ctx, metadata.Pairs("x-method", method)); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "done")); err != nil {
		return nil, err
	}
	if req.GetVersionInfo() == "fail" {
		return nil, status.Error(codes.FailedPrecondition, "asked to fail")
	}
	return echo(req), nil
}

func (s *sdsImpl) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(echo(req)); err != nil {
			return err
		}
	}
}

func echo(req *discoveryv3.DiscoveryRequest) *discoveryv3.DiscoveryResponse {
	return &discoveryv3.DiscoveryResponse{VersionInfo: req.GetVersionInfo(), Nonce: req.GetResponseNonce(), TypeUrl: req.GetTypeUrl()}
}

// sdsHandler serves StreamSecrets as events, the way a real handler must:
// Message and End never block and never Send; a goroutine per stream sends
// the answers in order, and closes the stream after the client's last
// message.
type sdsHandler struct {
	opened       chan *sdsStream
	respond      func(*discoveryv3.DiscoveryRequest) []*discoveryv3.DiscoveryResponse
	holdOnEOF    bool
	holdMessages bool
}

func newSDSHandler(respond func(*discoveryv3.DiscoveryRequest) []*discoveryv3.DiscoveryResponse, holdOnEOF bool) *sdsHandler {
	if respond == nil {
		respond = func(req *discoveryv3.DiscoveryRequest) []*discoveryv3.DiscoveryResponse {
			return []*discoveryv3.DiscoveryResponse{echo(req)}
		}
	}
	return &sdsHandler{opened: make(chan *sdsStream, 64), respond: respond, holdOnEOF: holdOnEOF}
}

func (h *sdsHandler) open(st *grpclite.Stream) grpclite.StreamEvents {
	s := &sdsStream{
		st: st, respond: h.respond, holdOnEOF: h.holdOnEOF, holdMessages: h.holdMessages,
		work: make(chan func(), 1024), reqs: make(chan *discoveryv3.DiscoveryRequest, 1024),
		ended: make(chan error, 4), sendErrs: make(chan error, 1),
	}
	go s.sender()
	select {
	case h.opened <- s:
	default:
	}
	return s
}

// next returns the next stream the handler opened.
func (h *sdsHandler) next(t testing.TB) *sdsStream {
	t.Helper()
	select {
	case s := <-h.opened:
		return s
	case <-time.After(waitTime):
		t.Fatal("no stream opened")
		return nil
	}
}

type sdsStream struct {
	st           *grpclite.Stream
	respond      func(*discoveryv3.DiscoveryRequest) []*discoveryv3.DiscoveryResponse
	holdOnEOF    bool
	holdMessages bool
	work         chan func()
	reqs         chan *discoveryv3.DiscoveryRequest // what Message decoded
	ended        chan error                         // what End was called with, each time
	sendErrs     chan error                         // what failed Sends returned
}

var _ grpclite.StreamEvents = (*sdsStream)(nil)

func (s *sdsStream) sender() {
	for {
		select {
		case f := <-s.work:
			f()
		case <-s.st.Context().Done():
			return
		}
	}
}

func (s *sdsStream) Message(msg []byte) error {
	if s.holdMessages {
		s.st.Hold(len(msg))
	}
	req := &discoveryv3.DiscoveryRequest{}
	if err := proto.Unmarshal(msg, req); err != nil {
		return status.Error(codes.InvalidArgument, "not a DiscoveryRequest")
	}
	select {
	case s.reqs <- req:
	default:
	}
	resps := s.respond(req)
	select {
	case s.work <- func() {
		for _, r := range resps {
			if err := s.st.Send(r); err != nil {
				select {
				case s.sendErrs <- err:
				default:
				}
				return
			}
		}
	}:
		return nil
	default:
		return status.Error(codes.ResourceExhausted, "test handler queue full")
	}
}

func (s *sdsStream) End(err error) {
	select {
	case s.ended <- err:
	default:
	}
	if errors.Is(err, io.EOF) && !s.holdOnEOF {
		select {
		case s.work <- func() { s.st.Close(nil) }:
		default:
			s.st.Close(status.Error(codes.ResourceExhausted, "test handler queue full"))
		}
	}
}

// waitEnd returns what End was called with.
func (s *sdsStream) waitEnd(t testing.TB) error {
	t.Helper()
	select {
	case err := <-s.ended:
		return err
	case <-time.After(waitTime):
		t.Fatal("End was not called")
		return nil
	}
}

// requests returns the n next requests Message decoded.
func (s *sdsStream) requests(t testing.TB, n int) []*discoveryv3.DiscoveryRequest {
	t.Helper()
	var out []*discoveryv3.DiscoveryRequest
	for range n {
		select {
		case r := <-s.reqs:
			out = append(out, r)
		case <-time.After(waitTime):
			t.Fatalf("Message got %d requests, want %d", len(out), n)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// grpc-go clients.

func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type sdsClientStream = grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]

// openSDS opens StreamSecrets and returns both ends.
func openSDS(ctx context.Context, t *testing.T, ts *testServer, cc *grpc.ClientConn, opts ...grpc.CallOption) (sdsClientStream, *sdsStream) {
	t.Helper()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(cc).StreamSecrets(ctx, opts...)
	require.NoError(t, err)
	return stream, ts.sds.next(t)
}

// roundTrip sends one request and checks its echo.
func roundTrip(t *testing.T, stream sdsClientStream, version string) {
	t.Helper()
	require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: version, TypeUrl: sdstest.SecretTypeURL}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	require.Equal(t, version, resp.GetVersionInfo())
}

// pattern returns n bytes that differ with seed and position, so that a
// lost, repeated or reordered chunk shows.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) ^ byte(i>>9)
	}
	return b
}

// printable is pattern as letters, for string fields.
func printable(n int, seed byte) string {
	b := pattern(n, seed)
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return string(b)
}

// ---------------------------------------------------------------------------
// Generic services run by grpc-go clients.

func TestHealthCheck(t *testing.T) {
	ts := startServer(t, serverSetup{})
	ts.health.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	client := healthpb.NewHealthClient(dial(t, ts.addr))

	tests := []struct {
		name     string
		service  string
		want     healthpb.HealthCheckResponse_ServingStatus
		wantCode codes.Code
	}{
		{name: "whole server", service: "", want: healthpb.HealthCheckResponse_SERVING},
		{name: "service not serving", service: "svc", want: healthpb.HealthCheckResponse_NOT_SERVING},
		{name: "unknown service", service: "nope", wantCode: codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Check(testCtx(t), &healthpb.HealthCheckRequest{Service: tt.service})
			if tt.wantCode != codes.OK {
				require.Equal(t, tt.wantCode, status.Code(err), "err: %v", err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, resp.GetStatus())
		})
	}
}

func TestHealthWatch(t *testing.T) {
	ts := startServer(t, serverSetup{})
	ts.health.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	client := healthpb.NewHealthClient(dial(t, ts.addr))

	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	require.NoError(t, err)
	resp, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus())

	ts.health.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	resp, err = watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	cancel()
	_, err = watch.Recv()
	require.Equal(t, codes.Canceled, status.Code(err), "err: %v", err)
}

func TestReflectionListsServices(t *testing.T) {
	ts := startServer(t, serverSetup{})
	ctx := testCtx(t)
	stream, err := reflectionpb.NewServerReflectionClient(dial(t, ts.addr)).ServerReflectionInfo(ctx)
	require.NoError(t, err)

	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	sort.Strings(names)
	require.Equal(t, []string{
		sdsService,
		"grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
	}, names)

	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: sdsService},
	}))
	resp, err = stream.Recv()
	require.NoError(t, err)
	require.NotEmpty(t, resp.GetFileDescriptorResponse().GetFileDescriptorProto())

	require.NoError(t, stream.CloseSend())
	_, err = stream.Recv()
	require.ErrorIs(t, err, io.EOF)
}

func TestUnknownMethod(t *testing.T) {
	ts := startServer(t, serverSetup{})
	cc := dial(t, ts.addr)

	tests := []struct {
		name, method string
		streaming    bool
	}{
		{name: "unknown service", method: "/no.such.Service/Method"},
		{name: "unknown method of a known service", method: "/grpc.health.v1.Health/Nope"},
		{name: "unknown streaming method", method: "/" + sdsService + "/Nope", streaming: true},
		{name: "method left to Unimplemented", method: "/" + sdsService + "/DeltaSecrets", streaming: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			var err error
			if tt.streaming {
				var cs grpc.ClientStream
				cs, err = cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, tt.method)
				require.NoError(t, err)
				err = cs.RecvMsg(&discoveryv3.DiscoveryResponse{})
			} else {
				err = cc.Invoke(ctx, tt.method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
			}
			require.Equal(t, codes.Unimplemented, status.Code(err), "err: %v", err)
		})
	}
}

func TestUnaryThroughRegisterService(t *testing.T) {
	ts := startServer(t, serverSetup{})
	client := secretv3.NewSecretDiscoveryServiceClient(dial(t, ts.addr))

	tests := []struct {
		name     string
		version  string
		wantCode codes.Code
	}{
		{name: "answer", version: "v1"},
		{name: "error status", version: "fail", wantCode: codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header, trailer metadata.MD
			resp, err := client.FetchSecrets(testCtx(t), &discoveryv3.DiscoveryRequest{VersionInfo: tt.version},
				grpc.Header(&header), grpc.Trailer(&trailer))
			require.Equal(t, tt.wantCode, status.Code(err), "err: %v", err)
			require.Equal(t, []string{"done"}, trailer.Get("x-trailer"))
			if tt.wantCode != codes.OK {
				// A failed call is answered trailers-only: what the
				// handler set as headers arrives with the trailers
				// (grpc-go would send it in a HEADERS frame of its own).
				require.Equal(t, []string{"/" + sdsService + "/FetchSecrets"}, metadata.Join(header, trailer).Get("x-method"))
				return
			}
			require.Equal(t, tt.version, resp.GetVersionInfo())
			require.Equal(t, []string{"/" + sdsService + "/FetchSecrets"}, header.Get("x-method"))
		})
	}
}

// ---------------------------------------------------------------------------
// Event streams.

func TestHandleStreamRegistrationOrder(t *testing.T) {
	for _, streamsFirst := range []bool{false, true} {
		t.Run("HandleStream first "+strconv.FormatBool(streamsFirst), func(t *testing.T) {
			ts := startServer(t, serverSetup{streamsFirst: streamsFirst})
			cc := dial(t, ts.addr)
			ctx := testCtx(t)

			stream, s := openSDS(ctx, t, ts, cc)
			roundTrip(t, stream, "v1")
			require.Len(t, s.requests(t, 1), 1, "the event handler serves StreamSecrets")

			resp, err := secretv3.NewSecretDiscoveryServiceClient(cc).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{VersionInfo: "v2"})
			require.NoError(t, err, "the registered implementation serves FetchSecrets")
			require.Equal(t, "v2", resp.GetVersionInfo())
		})
	}
}

func TestEventStream(t *testing.T) {
	t.Run("messages in order, metadata and half-close", func(t *testing.T) {
		ts := startServer(t, serverSetup{})
		ctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "Bearer secret-token")
		stream, s := openSDS(ctx, t, ts, dial(t, ts.addr))

		const n = 50
		for i := range n {
			require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{
				VersionInfo: strconv.Itoa(i), ResponseNonce: "nonce-" + strconv.Itoa(i), TypeUrl: sdstest.SecretTypeURL,
			}))
		}
		for i := range n {
			resp, err := stream.Recv()
			require.NoError(t, err)
			require.Equal(t, strconv.Itoa(i), resp.GetVersionInfo())
			require.Equal(t, "nonce-"+strconv.Itoa(i), resp.GetNonce())
			require.Equal(t, sdstest.SecretTypeURL, resp.GetTypeUrl())
		}
		for i, req := range s.requests(t, n) {
			require.Equal(t, strconv.Itoa(i), req.GetVersionInfo())
		}

		sctx := s.st.Context()
		md, ok := metadata.FromIncomingContext(sctx)
		require.True(t, ok)
		require.Equal(t, []string{"Bearer secret-token"}, md.Get("authorization"))
		require.Equal(t, streamSecrets, s.st.Method())
		method, ok := grpc.Method(sctx)
		require.True(t, ok)
		require.Equal(t, streamSecrets, method)
		p, ok := peer.FromContext(sctx)
		require.True(t, ok)
		require.Equal(t, "127.0.0.1", p.Addr.(*net.TCPAddr).IP.String())

		require.NoError(t, stream.CloseSend())
		_, err := stream.Recv()
		require.ErrorIs(t, err, io.EOF, "Close(nil) after End(io.EOF) ends the call with OK")
		require.ErrorIs(t, s.waitEnd(t), io.EOF)
	})

	t.Run("Close with a status from another goroutine", func(t *testing.T) {
		ts := startServer(t, serverSetup{})
		cc := dial(t, ts.addr)
		stream, s := openSDS(testCtx(t), t, ts, cc)
		roundTrip(t, stream, "v1")

		closed := make(chan struct{})
		go func() {
			defer close(closed)
			s.st.Close(status.Error(codes.PermissionDenied, "x"))
		}()
		<-closed
		_, err := stream.Recv()
		require.Equal(t, codes.PermissionDenied, status.Code(err), "err: %v", err)
		require.Equal(t, "x", status.Convert(err).Message())
		require.Error(t, s.st.Send(&discoveryv3.DiscoveryResponse{}), "Send after Close")
		require.Error(t, s.st.Context().Err(), "Close cancels the stream's context")

		cc.Close()
		require.Never(t, func() bool { return len(s.ended) > 0 }, 200*time.Millisecond, 10*time.Millisecond,
			"End is not called for a stream the handler closed")
	})

	t.Run("client cancels", func(t *testing.T) {
		ts := startServer(t, serverSetup{})
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		stream, s := openSDS(ctx, t, ts, dial(t, ts.addr))
		roundTrip(t, stream, "v1")

		cancel()
		err := s.waitEnd(t)
		require.Error(t, err)
		require.NotErrorIs(t, err, io.EOF)
		require.Equal(t, codes.Canceled, status.Code(err), "err: %v", err)
		require.Error(t, s.st.Context().Err())
	})

	t.Run("client closes its connection", func(t *testing.T) {
		ts := startServer(t, serverSetup{})
		cc := dial(t, ts.addr)
		stream, s := openSDS(testCtx(t), t, ts, cc)
		roundTrip(t, stream, "v1")

		cc.Close()
		err := s.waitEnd(t)
		require.Error(t, err)
		require.NotErrorIs(t, err, io.EOF)
		require.Error(t, s.st.Context().Err())
	})
}

// TestEndCalledOnce checks the StreamEvents contract: End is called at
// most once, also when a stream the client half-closed is gone before the
// handler closes it.
func TestEndCalledOnce(t *testing.T) {
	tests := []struct {
		name string
		// after makes the stream go away once End(io.EOF) was delivered.
		after func(t *testing.T, cancel context.CancelFunc, cc *grpc.ClientConn)
	}{
		{name: "client cancels", after: func(_ *testing.T, cancel context.CancelFunc, _ *grpc.ClientConn) { cancel() }},
		{name: "client closes its connection", after: func(_ *testing.T, _ context.CancelFunc, cc *grpc.ClientConn) { cc.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, serverSetup{holdOnEOF: true})
			cc := dial(t, ts.addr)
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			stream, s := openSDS(ctx, t, ts, cc)
			roundTrip(t, stream, "v1")
			require.NoError(t, stream.CloseSend())
			require.ErrorIs(t, s.waitEnd(t), io.EOF)

			tt.after(t, cancel, cc)
			require.Eventually(t, func() bool { return s.st.Context().Err() != nil }, waitTime, 5*time.Millisecond, "the stream ended")
			select {
			case err := <-s.ended:
				t.Fatalf("End called a second time, with %v, after End(io.EOF)", err)
			case <-time.After(100 * time.Millisecond):
			}
		})
	}

	t.Run("trailers after END_STREAM", func(t *testing.T) {
		ts := startServer(t, serverSetup{holdOnEOF: true})
		c := dialRaw(t, ts.addr)
		c.start()
		c.headers(1, false, grpcRequest(streamSecrets)...)
		s := ts.sds.next(t)
		require.NoError(t, c.fr.WriteData(1, true, grpcMessage(t, &discoveryv3.DiscoveryRequest{VersionInfo: "v1"})))
		require.ErrorIs(t, s.waitEnd(t), io.EOF)

		// A broken client sends HEADERS on the half-closed stream.
		c.headers(1, true, "x-trailer", "t")
		require.NoError(t, c.fr.WritePing(false, [8]byte{7}))
		require.True(t, await[*http2.PingFrame](c).IsAck())
		select {
		case err := <-s.ended:
			t.Fatalf("End called a second time, with %v, after End(io.EOF)", err)
		default:
		}
	})
}

func TestEventStreamMetadata(t *testing.T) {
	t.Run("header and trailer", func(t *testing.T) {
		ts := startServer(t, serverSetup{})
		stream, s := openSDS(testCtx(t), t, ts, dial(t, ts.addr))

		require.NoError(t, s.st.SetHeader(metadata.Pairs("x-header", "h")))
		require.NoError(t, s.st.SendHeader(metadata.Pairs("x-data-bin", "\x00\x01\xfe\xff")))
		require.Error(t, s.st.SetHeader(metadata.Pairs("x-late", "l")), "SetHeader after SendHeader")
		header, err := stream.Header()
		require.NoError(t, err)
		require.Equal(t, []string{"h"}, header.Get("x-header"))
		require.Equal(t, []string{"\x00\x01\xfe\xff"}, header.Get("x-data-bin"))

		roundTrip(t, stream, "v1")
		require.NoError(t, s.st.SetTrailer(metadata.Pairs("x-trailer", "t")))
		s.st.Close(nil)
		_, err = stream.Recv()
		require.ErrorIs(t, err, io.EOF)
		require.Equal(t, []string{"t"}, stream.Trailer().Get("x-trailer"))
	})

	t.Run("trailer larger than a frame", func(t *testing.T) {
		ts := startServer(t, serverSetup{})
		stream, s := openSDS(testCtx(t), t, ts, dial(t, ts.addr))
		roundTrip(t, stream, "v1")

		big := strings.Repeat("v", 20<<10)
		require.NoError(t, s.st.SetTrailer(metadata.Pairs("x-big", big)))
		s.st.Close(nil)
		_, err := stream.Recv()
		require.ErrorIs(t, err, io.EOF, "a 20 KiB trailer must be split over CONTINUATION frames, not break the connection")
		require.Equal(t, []string{big}, stream.Trailer().Get("x-big"))
	})

	t.Run("status details", func(t *testing.T) {
		ts := startServer(t, serverSetup{})
		stream, s := openSDS(testCtx(t), t, ts, dial(t, ts.addr))
		roundTrip(t, stream, "v1")

		st, err := status.New(codes.FailedPrecondition, "node changed").
			WithDetails(&errdetails.ErrorInfo{Reason: "NODE_CHANGED", Domain: "meshsds.io"})
		require.NoError(t, err)
		s.st.Close(st.Err())
		_, err = stream.Recv()
		got := status.Convert(err)
		require.Equal(t, codes.FailedPrecondition, got.Code())
		require.Equal(t, "node changed", got.Message())
		require.Len(t, got.Details(), 1, "grpc-status-details-bin carries the status details")
	})
}

// ---------------------------------------------------------------------------
// Flow control and message sizes.

func TestFlowControl(t *testing.T) {
	const (
		bigSize  = 300 << 10
		burst    = 200
		itemSize = 16 << 10
	)
	respond := func(req *discoveryv3.DiscoveryRequest) []*discoveryv3.DiscoveryResponse {
		switch req.GetVersionInfo() {
		case "big":
			return []*discoveryv3.DiscoveryResponse{{
				VersionInfo: "big",
				Resources:   []*anypb.Any{{TypeUrl: sdstest.SecretTypeURL, Value: pattern(bigSize, 1)}},
			}}
		case "burst":
			var out []*discoveryv3.DiscoveryResponse
			for i := range burst {
				out = append(out, &discoveryv3.DiscoveryResponse{
					Nonce:     strconv.Itoa(i),
					Resources: []*anypb.Any{{TypeUrl: sdstest.SecretTypeURL, Value: pattern(itemSize+i, byte(i))}},
				})
			}
			return out
		default:
			return []*discoveryv3.DiscoveryResponse{{VersionInfo: req.GetVersionInfo(), Nonce: strconv.Itoa(len(req.GetResourceNames()))}}
		}
	}
	ts := startServer(t, serverSetup{respond: respond})
	// Small client windows: the server must wait for WINDOW_UPDATEs.
	cc := dial(t, ts.addr, grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535))

	t.Run("300 KiB response", func(t *testing.T) {
		stream, _ := openSDS(testCtx(t), t, ts, cc)
		require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: "big"}))
		resp, err := stream.Recv()
		require.NoError(t, err)
		require.Len(t, resp.GetResources(), 1)
		require.True(t, bytes.Equal(pattern(bigSize, 1), resp.GetResources()[0].GetValue()), "the 300 KiB payload arrived changed")
	})

	t.Run("many responses to a slow reader", func(t *testing.T) {
		stream, _ := openSDS(testCtx(t), t, ts, cc)
		require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: "burst"}))
		for i := range burst {
			if i%10 == 0 {
				time.Sleep(5 * time.Millisecond) // let the server fill the windows
			}
			resp, err := stream.Recv()
			require.NoError(t, err, "response %d", i)
			require.Equal(t, strconv.Itoa(i), resp.GetNonce())
			require.True(t, bytes.Equal(pattern(itemSize+i, byte(i)), resp.GetResources()[0].GetValue()), "response %d arrived changed", i)
		}
		// The stream still works after the burst.
		roundTrip(t, stream, "after")
	})

	t.Run("200 KiB request", func(t *testing.T) {
		stream, s := openSDS(testCtx(t), t, ts, cc)
		req := &discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResourceNames: []string{printable(200<<10, 3), "second"}}
		require.NoError(t, stream.Send(req))
		resp, err := stream.Recv()
		require.NoError(t, err)
		require.Equal(t, "2", resp.GetNonce())
		got := s.requests(t, 1)[0]
		require.True(t, proto.Equal(req, got), "Message got a different request")

		// A small one after it, from the same stream buffer.
		roundTrip(t, stream, "v2")
	})
}

func TestMaxRecvMsgSize(t *testing.T) {
	ts := startServer(t, serverSetup{cfg: grpclite.Config{MaxRecvMsgSize: 1024}})
	stream, s := openSDS(testCtx(t), t, ts, dial(t, ts.addr))
	roundTrip(t, stream, "small")

	require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: strings.Repeat("x", 2048)}))
	_, err := stream.Recv()
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "err: %v", err)
	require.Error(t, s.st.Context().Err(), "the stream ended")
	// The transport ended it, not the handler: the handler learns why, so
	// that it can let go of the stream.
	require.Equal(t, codes.ResourceExhausted, status.Code(s.waitEnd(t)))
}

// TestServerEndedGenericStream checks that a method run in a goroutine of
// its own (RegisterService, not HandleStream) returns when the server ends
// its stream: its handler must not stay blocked in RecvMsg.
func TestServerEndedGenericStream(t *testing.T) {
	const recvMsg = "grpclite.(*genericStream).RecvMsg"
	big := &discoveryv3.DiscoveryRequest{VersionInfo: strings.Repeat("x", 2048)}
	tests := []struct {
		name     string
		call     func(ctx context.Context, t *testing.T, addr string, client secretv3.SecretDiscoveryServiceClient) error
		wantCode codes.Code
	}{
		{
			// The control: a stream the client ends.
			name: "client half-closes",
			call: func(ctx context.Context, _ *testing.T, _ string, client secretv3.SecretDiscoveryServiceClient) error {
				stream, err := client.StreamSecrets(ctx)
				if err != nil {
					return err
				}
				if err := stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: "v1"}); err != nil {
					return err
				}
				if _, err := stream.Recv(); err != nil {
					return err
				}
				if err := stream.CloseSend(); err != nil {
					return err
				}
				if _, err = stream.Recv(); !errors.Is(err, io.EOF) {
					return err
				}
				return nil
			},
			wantCode: codes.OK,
		},
		{
			name: "bidi message over MaxRecvMsgSize",
			call: func(ctx context.Context, _ *testing.T, _ string, client secretv3.SecretDiscoveryServiceClient) error {
				stream, err := client.StreamSecrets(ctx)
				if err != nil {
					return err
				}
				if err := stream.Send(big); err != nil {
					return err
				}
				_, err = stream.Recv()
				return err
			},
			wantCode: codes.ResourceExhausted,
		},
		{
			name: "unary request over MaxRecvMsgSize",
			call: func(ctx context.Context, _ *testing.T, _ string, client secretv3.SecretDiscoveryServiceClient) error {
				_, err := client.FetchSecrets(ctx, big)
				return err
			},
			wantCode: codes.ResourceExhausted,
		},
		{
			name: "compressed bidi message",
			call: func(ctx context.Context, _ *testing.T, _ string, client secretv3.SecretDiscoveryServiceClient) error {
				stream, err := client.StreamSecrets(ctx, grpc.UseCompressor(gzip.Name))
				if err != nil {
					return err
				}
				if err := stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: "v1"}); err != nil {
					return err
				}
				_, err = stream.Recv()
				return err
			},
			wantCode: codes.Unimplemented,
		},
		{
			// A client whose RST_STREAM would come after the server's
			// deadline; raw, so that it never comes.
			name: "grpc-timeout passes",
			call: func(_ context.Context, t *testing.T, addr string, _ secretv3.SecretDiscoveryServiceClient) error {
				c := dialRaw(t, addr)
				c.start()
				c.headers(1, false, with(grpcRequest(streamSecrets), "grpc-timeout", "50m")...)
				h, ok := c.awaitStream(1).(*http2.MetaHeadersFrame)
				require.True(t, ok)
				code, err := strconv.Atoi(fieldMap(h)["grpc-status"])
				require.NoError(t, err)
				return status.Error(codes.Code(code), fieldMap(h)["grpc-message"])
			},
			wantCode: codes.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, serverSetup{cfg: grpclite.Config{MaxRecvMsgSize: 1024}, noEvents: true})
			client := secretv3.NewSecretDiscoveryServiceClient(dial(t, ts.addr))
			before := countGoroutines(recvMsg)

			err := tt.call(testCtx(t), t, ts.addr, client)
			require.Equal(t, tt.wantCode, status.Code(err), "err: %v", err)
			require.Eventually(t, func() bool { return countGoroutines(recvMsg) <= before }, time.Second, 10*time.Millisecond,
				"the handler is still blocked in RecvMsg after the server ended its stream")
		})
	}
}

// countGoroutines counts the goroutines whose stack mentions fn.
func countGoroutines(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// TestSlowClient checks that a sender never waits forever on a client that
// stopped reading.
func TestSlowClient(t *testing.T) {
	chunk := pattern(1<<20, 5)
	respond := func(req *discoveryv3.DiscoveryRequest) []*discoveryv3.DiscoveryResponse {
		var out []*discoveryv3.DiscoveryResponse
		for i := range 100 { // far more than the socket buffers hold
			out = append(out, &discoveryv3.DiscoveryResponse{Nonce: strconv.Itoa(i), Resources: []*anypb.Any{{Value: chunk}}})
		}
		return out
	}
	reg := prometheus.NewRegistry()
	metrics, err := grpclite.NewMetrics(reg)
	require.NoError(t, err)
	ts := startServer(t, serverSetup{cfg: grpclite.Config{WriteTimeout: 200 * time.Millisecond, Metrics: metrics}, respond: respond})
	request := grpcMessage(t, &discoveryv3.DiscoveryRequest{VersionInfo: "flood"})

	t.Run("client that grants windows but stops reading", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.start()
		require.NoError(t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}))
		require.NoError(t, c.fr.WriteWindowUpdate(0, 1<<31-1-65535))
		c.headers(1, false, grpcRequest(streamSecrets)...)
		s := ts.sds.next(t)
		require.NoError(t, c.fr.WriteData(1, false, request))

		// The client reads nothing more: a write times out, and the
		// connection closes.
		err := s.waitEnd(t)
		require.Equal(t, codes.Unavailable, status.Code(err), "End: %v", err)
		select {
		case err := <-s.sendErrs:
			require.Error(t, err)
		case <-time.After(waitTime):
			t.Fatal("Send did not return")
		}
		require.Eventually(t, func() bool { return closedTotal(t, reg, grpclite.ReasonWriteTimeout) == 1 }, waitTime, 5*time.Millisecond)
	})

	t.Run("Send waiting for a window, then the client resets the stream", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.start()
		c.headers(1, false, grpcRequest(streamSecrets)...)
		s := ts.sds.next(t)
		require.NoError(t, c.fr.WriteData(1, false, request))

		// The default 64 KiB windows fill, and are never given back.
		received := 0
		for received < 65535 {
			if d, ok := c.awaitStream(1).(*http2.DataFrame); ok {
				received += len(d.Data())
			}
		}
		require.NoError(t, c.fr.WriteRSTStream(1, http2.ErrCodeCancel))
		require.Equal(t, codes.Canceled, status.Code(s.waitEnd(t)))
		select {
		case err := <-s.sendErrs:
			require.Error(t, err)
		case <-time.After(waitTime):
			t.Fatal("Send still waits for a window of a reset stream")
		}
	})
}

// ---------------------------------------------------------------------------
// Shutdown.

func TestGracefulStop(t *testing.T) {
	ts := startServer(t, serverSetup{})
	c := dialRaw(t, ts.addr)
	c.start()
	c.headers(1, false, grpcRequest(streamSecrets)...)
	s := ts.sds.next(t)

	stopped := make(chan struct{})
	go func() {
		ts.GracefulStop()
		close(stopped)
	}()
	ga := await[*http2.GoAwayFrame](c)
	require.Equal(t, http2.ErrCodeNo, ga.ErrCode)
	require.Equal(t, uint32(1), ga.LastStreamID)

	// A stream opened after the GOAWAY is refused.
	c.headers(3, true, grpcRequest(streamSecrets)...)
	rst := await[*http2.RSTStreamFrame](c)
	require.Equal(t, uint32(3), rst.StreamID)
	require.Equal(t, http2.ErrCodeRefusedStream, rst.ErrCode)
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned while a stream was open")
	default:
	}

	// The handler ends its stream: the client gets its status, and the
	// server its connection back.
	s.st.Close(nil)
	trailers := await[*http2.MetaHeadersFrame](c)
	require.Equal(t, uint32(1), trailers.StreamID)
	require.True(t, trailers.StreamEnded())
	require.Equal(t, "0", fieldMap(trailers)["grpc-status"])
	select {
	case <-stopped:
	case <-time.After(waitTime):
		t.Fatal("GracefulStop did not return after the last stream closed")
	}
	c.awaitClosed()
	require.ErrorIs(t, ts.served(t), grpclite.ErrServerStopped)
}

func TestGracefulStopWaitsForGenericStream(t *testing.T) {
	ts := startServer(t, serverSetup{})
	cc := dial(t, ts.addr)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = watch.Recv()
	require.NoError(t, err)
	require.Equal(t, connectivity.Ready, cc.GetState())

	stopped := make(chan struct{})
	go func() {
		ts.GracefulStop()
		close(stopped)
	}()
	// grpc-go leaves READY when it gets the GOAWAY.
	require.True(t, cc.WaitForStateChange(testCtx(t), connectivity.Ready), "the client never saw a GOAWAY")
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned while a health Watch was open")
	case <-time.After(50 * time.Millisecond):
	}

	cancel()
	select {
	case <-stopped:
	case <-time.After(waitTime):
		t.Fatal("GracefulStop did not return after the client cancelled its last stream")
	}
	require.ErrorIs(t, ts.served(t), grpclite.ErrServerStopped)
}

func TestStop(t *testing.T) {
	ts := startServer(t, serverSetup{})
	cc := dial(t, ts.addr)
	ctx := testCtx(t)
	stream, s := openSDS(ctx, t, ts, cc)
	roundTrip(t, stream, "v1")
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = watch.Recv()
	require.NoError(t, err)

	ts.Stop()
	endErr := s.waitEnd(t)
	require.Error(t, endErr)
	require.NotErrorIs(t, endErr, io.EOF)
	require.Equal(t, codes.Unavailable, status.Code(endErr), "End: %v", endErr)
	require.ErrorIs(t, ts.served(t), grpclite.ErrServerStopped)

	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "event stream: %v", err)
	_, err = watch.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "health watch: %v", err)

	// A stopped server serves nothing more.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.ErrorIs(t, ts.Serve(lis), grpclite.ErrServerStopped)
}

// ---------------------------------------------------------------------------
// TLS.

// tlsFixture is a CA, a server certificate for 127.0.0.1 and a client
// certificate.
type tlsFixture struct {
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newTLSFixture(t *testing.T) *tlsFixture {
	ca := pkitest.NewRootCA(t, "grpclite test CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &tlsFixture{
		pool:   pool,
		server: issueCert(t, ca, "server", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1)),
		client: issueCert(t, ca, "client", x509.ExtKeyUsageClientAuth),
	}
}

func issueCert(t *testing.T, ca *pki.KeyPair, cn string, usage x509.ExtKeyUsage, ips ...net.IP) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (f *tlsFixture) serverConfig() *tls.Config {
	// No NextProtos: the server must add h2 itself.
	return &tls.Config{
		Certificates: []tls.Certificate{f.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    f.pool,
		MinVersion:   tls.VersionTLS12,
	}
}

func TestTLS(t *testing.T) {
	fx := newTLSFixture(t)
	ts := startServer(t, serverSetup{cfg: grpclite.Config{TLS: fx.serverConfig()}})

	t.Run("grpc-go client", func(t *testing.T) {
		creds := credentials.NewTLS(&tls.Config{RootCAs: fx.pool, Certificates: []tls.Certificate{fx.client}, MinVersion: tls.VersionTLS12})
		cc := dial(t, ts.addr, grpc.WithTransportCredentials(creds))
		ctx := testCtx(t)

		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

		_, err = secretv3.NewSecretDiscoveryServiceClient(cc).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{})
		require.NoError(t, err)
		var p *peer.Peer
		select {
		case p = <-ts.impl.peers:
		case <-time.After(waitTime):
			t.Fatal("FetchSecrets not called")
		}
		requireTLSPeer(t, p)

		stream, s := openSDS(ctx, t, ts, cc)
		roundTrip(t, stream, "v1")
		p, ok := peer.FromContext(s.st.Context())
		require.True(t, ok)
		requireTLSPeer(t, p)
	})

	t.Run("client without ALPN h2", func(t *testing.T) {
		tc, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: fx.pool, Certificates: []tls.Certificate{fx.client}, MinVersion: tls.VersionTLS12})
		require.NoError(t, err)
		t.Cleanup(func() { tc.Close() })
		c := newRawConn(t, tc)
		_, err = io.WriteString(tc, http2.ClientPreface)
		require.NoError(t, err)
		// Refused in the handshake's place: not one HTTP/2 frame (a
		// GOAWAY would come before the server's SETTINGS).
		require.Zero(t, c.awaitClosed().frames)
	})
}

func requireTLSPeer(t *testing.T, p *peer.Peer) {
	t.Helper()
	require.NotNil(t, p)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	require.True(t, ok, "AuthInfo is %T, want credentials.TLSInfo", p.AuthInfo)
	require.Equal(t, "h2", info.State.NegotiatedProtocol)
	require.NotEmpty(t, info.State.PeerCertificates)
	require.Equal(t, "client", info.State.PeerCertificates[0].Subject.CommonName)
	require.Equal(t, credentials.PrivacyAndIntegrity, info.SecurityLevel)
}

// TestStopDuringTLSPreface stops the server while a TLS client that
// completed its handshake has not sent the HTTP/2 preface yet.
func TestStopDuringTLSPreface(t *testing.T) {
	fx := newTLSFixture(t)
	ts := startServer(t, serverSetup{cfg: grpclite.Config{TLS: fx.serverConfig()}})
	tc, err := tls.Dial("tcp", ts.addr, &tls.Config{
		RootCAs: fx.pool, Certificates: []tls.Certificate{fx.client}, NextProtos: []string{"h2"},
		MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, // the server's handshake ends with the client's
	})
	require.NoError(t, err)
	t.Cleanup(func() { tc.Close() })
	// Let the server's connection goroutine get past its handshake; it
	// then waits for the preface.
	time.Sleep(100 * time.Millisecond)

	stopped := make(chan struct{})
	go func() {
		ts.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(waitTime):
		t.Fatal("Stop did not return")
	}
	require.NoError(t, tc.SetDeadline(time.Now().Add(waitTime)))
	_, err = tc.Read(make([]byte, 1))
	require.Error(t, err)
	require.False(t, isTimeout(err), "the connection is still open")
}

// ---------------------------------------------------------------------------
// The HTTP/2 protocol, spoken by hand.

// rawConn is an HTTP/2 client written frame by frame.
type rawConn struct {
	t    testing.TB
	nc   net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitTime)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return newRawConn(t, nc)
}

func newRawConn(t testing.TB, nc net.Conn) *rawConn {
	t.Helper()
	require.NoError(t, nc.SetDeadline(time.Now().Add(waitTime)))
	c := &rawConn{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.fr.AllowIllegalWrites = true
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.SetMaxReadFrameSize(1<<24 - 1)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// start sends the client preface and an empty SETTINGS frame.
func (c *rawConn) start() {
	c.t.Helper()
	_, err := io.WriteString(c.nc, http2.ClientPreface)
	require.NoError(c.t, err)
	require.NoError(c.t, c.fr.WriteSettings())
}

// block HPACK-encodes fields, given as name, value pairs.
func (c *rawConn) block(fields ...string) []byte {
	c.t.Helper()
	c.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		require.NoError(c.t, c.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}))
	}
	return bytes.Clone(c.hbuf.Bytes())
}

func (c *rawConn) headers(id uint32, endStream bool, fields ...string) {
	c.t.Helper()
	require.NoError(c.t, c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: c.block(fields...), EndStream: endStream, EndHeaders: true,
	}))
}

// grpcRequest returns the header fields of a gRPC request for path.
func grpcRequest(path string) []string {
	return []string{
		":method", "POST", ":scheme", "http", ":path", path, ":authority", "localhost",
		"content-type", "application/grpc", "te", "trailers",
	}
}

// with returns fields with the given pairs replacing or added to theirs.
func with(fields []string, pairs ...string) []string {
	out := append([]string(nil), fields...)
next:
	for i := 0; i+1 < len(pairs); i += 2 {
		for j := 0; j+1 < len(out); j += 2 {
			if out[j] == pairs[i] {
				out[j+1] = pairs[i+1]
				continue next
			}
		}
		out = append(out, pairs[i], pairs[i+1])
	}
	return out
}

// without returns fields without the field name.
func without(fields []string, name string) []string {
	var out []string
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] != name {
			out = append(out, fields[i], fields[i+1])
		}
	}
	return out
}

// grpcMessage frames m as a gRPC length-prefixed message.
func grpcMessage(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b))), b...)
}

// await reads frames until one of type F, skipping the others.
func await[F http2.Frame](c *rawConn) F {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		require.NoError(c.t, err, "waiting for a %T", *new(F))
		if ff, ok := f.(F); ok {
			return ff
		}
	}
}

// awaitStream reads frames until HEADERS, DATA or RST_STREAM of stream id.
func (c *rawConn) awaitStream(id uint32) http2.Frame {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		require.NoError(c.t, err, "waiting for stream %d", id)
		switch f.(type) {
		case *http2.MetaHeadersFrame, *http2.DataFrame, *http2.RSTStreamFrame:
			if f.Header().StreamID == id {
				return f
			}
		}
	}
}

// closedConn is what a client read before the server closed its
// connection.
type closedConn struct {
	frames  int
	goAways []http2.ErrCode
}

// awaitClosed reads until the server closes the connection; a read
// timeout fails the test.
func (c *rawConn) awaitClosed() closedConn {
	c.t.Helper()
	var cc closedConn
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			require.False(c.t, isTimeout(err), "the connection is still open")
			require.True(c.t, isClosed(err), "reading: %v", err)
			return cc
		}
		cc.frames++
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			cc.goAways = append(cc.goAways, ga.ErrCode)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

func fieldMap(f *http2.MetaHeadersFrame) map[string]string {
	m := map[string]string{}
	for _, hf := range f.Fields {
		m[hf.Name] = hf.Value
	}
	return m
}

func TestRawSettingsAndPing(t *testing.T) {
	ts := startServer(t, serverSetup{cfg: grpclite.Config{MaxConcurrentStreams: 7}})
	c := dialRaw(t, ts.addr)
	c.start()

	settings := await[*http2.SettingsFrame](c)
	require.False(t, settings.IsAck(), "the server speaks first")
	v, ok := settings.Value(http2.SettingMaxConcurrentStreams)
	require.True(t, ok)
	require.Equal(t, uint32(7), v)
	require.True(t, await[*http2.SettingsFrame](c).IsAck(), "the server acknowledges the client's SETTINGS")

	for _, data := range [][8]byte{{}, {'g', 'r', 'p', 'c', 'l', 'i', 't', 'e'}, {0xff, 0, 0xfe, 1, 0xfd, 2, 0xfc, 3}} {
		require.NoError(t, c.fr.WritePing(false, data))
		ack := await[*http2.PingFrame](c)
		require.True(t, ack.IsAck())
		require.Equal(t, data, ack.Data)
	}
}

func TestRawHeadersAreBoundedDecoded(t *testing.T) {
	ts := startServer(t, serverSetup{})
	c := dialRaw(t, ts.addr)
	c.start()
	// One 3 KB value, then 29 references to it in the HPACK table: a small
	// block that decodes to 90 KB.
	fields := grpcRequest(streamSecrets)
	big := strings.Repeat("a", 3000)
	for range 30 {
		fields = append(fields, "x-big", big)
	}
	block := c.block(fields...)
	require.Less(t, len(block), 16<<10, "the compressed block fits one frame")
	require.NoError(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true}))
	h, ok := c.awaitStream(1).(*http2.MetaHeadersFrame)
	require.True(t, ok)
	got := ""
	for _, f := range h.Fields {
		if f.Name == "grpc-status" {
			got = f.Value
		}
	}
	require.Equal(t, strconv.Itoa(int(codes.ResourceExhausted)), got, "trailers-only answer: %v", h.Fields)

	// The connection, and its HPACK table, are still good.
	c.headers(3, false, grpcRequest(streamSecrets)...)
	s := ts.sds.next(t)
	require.NotNil(t, s)
}

func TestRawFloodsAreCut(t *testing.T) {
	ts := startServer(t, serverSetup{})
	tests := []struct {
		name  string
		flood func(c *rawConn, i int) error
	}{
		{"pings", func(c *rawConn, i int) error { return c.fr.WritePing(false, [8]byte{byte(i)}) }},
		{"settings", func(c *rawConn, _ int) error { return c.fr.WriteSettings() }},
		{"rapid reset", func(c *rawConn, i int) error {
			id := uint32(2*i + 1)
			err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block(grpcRequest(streamSecrets)...), EndHeaders: true})
			if err != nil {
				return err
			}
			return c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			c.start()
			// A reader keeps the server's answers flowing while we flood.
			goAway := make(chan http2.ErrCode, 1)
			go func() {
				for {
					f, err := c.fr.ReadFrame()
					if err != nil {
						close(goAway)
						return
					}
					if ga, ok := f.(*http2.GoAwayFrame); ok {
						goAway <- ga.ErrCode
						return
					}
				}
			}()
			for i := 0; i < 3000; i++ {
				if tc.flood(c, i) != nil {
					break // the server hung up
				}
			}
			select {
			case code, ok := <-goAway:
				require.True(t, ok, "the connection ended without a GOAWAY")
				require.Equal(t, http2.ErrCodeEnhanceYourCalm, code)
			case <-time.After(10 * time.Second):
				t.Fatal("3,000 frames in a row were not cut")
			}
		})
	}
	// A client that pings now and then is left alone.
	c := dialRaw(t, ts.addr)
	c.start()
	for i := range 50 {
		require.NoError(t, c.fr.WritePing(false, [8]byte{byte(i)}))
		require.True(t, await[*http2.PingFrame](c).IsAck())
	}
}

func TestRawConnectionErrors(t *testing.T) {
	ts := startServer(t, serverSetup{})
	tests := []struct {
		name  string
		write func(c *rawConn)
		// want is the GOAWAY error code; none when noFrames.
		want     http2.ErrCode
		noFrames bool
	}{
		{
			name:     "HTTP/1.1 request instead of the preface",
			write:    func(c *rawConn) { _, _ = io.WriteString(c.nc, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n") },
			noFrames: true,
		},
		{
			name: "PUSH_PROMISE",
			write: func(c *rawConn) {
				c.start()
				c.headers(1, false, grpcRequest(streamSecrets)...)
				require.NoError(c.t, c.fr.WritePushPromise(http2.PushPromiseParam{
					StreamID: 1, PromiseID: 2, BlockFragment: c.block(":method", "GET", ":path", "/"), EndHeaders: true,
				}))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name:  "DATA on stream 0",
			write: func(c *rawConn) { c.start(); require.NoError(c.t, c.fr.WriteData(0, false, []byte("x"))) },
			want:  http2.ErrCodeProtocol,
		},
		{
			name: "HEADERS on stream 0",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 0, c.block(grpcRequest(healthCheck)...)))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name:  "even stream id",
			write: func(c *rawConn) { c.start(); c.headers(2, true, grpcRequest(healthCheck)...) },
			want:  http2.ErrCodeProtocol,
		},
		{
			name:  "DATA on an idle stream",
			write: func(c *rawConn) { c.start(); require.NoError(c.t, c.fr.WriteData(5, false, []byte("x"))) },
			want:  http2.ErrCodeProtocol,
		},
		{
			name: "padding longer than the DATA frame",
			write: func(c *rawConn) {
				c.start()
				c.headers(1, false, grpcRequest(streamSecrets)...)
				require.NoError(c.t, c.fr.WriteRawFrame(http2.FrameData, http2.FlagDataPadded, 1, []byte{9, 0, 0}))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name: "PING on a stream",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteRawFrame(http2.FramePing, 0, 1, make([]byte, 8)))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name: "PING of 4 bytes",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 4)))
			},
			want: http2.ErrCodeFrameSize,
		},
		{
			name: "frame over 16 KiB",
			write: func(c *rawConn) {
				c.start()
				c.headers(1, false, grpcRequest(streamSecrets)...)
				// The server may close before reading all of it.
				_ = c.fr.WriteData(1, false, make([]byte, 20<<10))
			},
			want: http2.ErrCodeFrameSize,
		},
		{
			name:  "CONTINUATION without HEADERS",
			write: func(c *rawConn) { c.start(); require.NoError(c.t, c.fr.WriteContinuation(1, true, c.block("a", "b"))) },
			want:  http2.ErrCodeProtocol,
		},
		{
			name: "PING inside a header block",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.block(grpcRequest(streamSecrets)...)}))
				require.NoError(c.t, c.fr.WritePing(false, [8]byte{}))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name: "malformed HPACK",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0xff}, EndHeaders: true}))
			},
			want: http2.ErrCodeCompression,
		},
		{
			name:  "WINDOW_UPDATE of 0 on the connection",
			write: func(c *rawConn) { c.start(); require.NoError(c.t, c.fr.WriteWindowUpdate(0, 0)) },
			want:  http2.ErrCodeProtocol,
		},
		{
			name:  "connection window over 2^31-1",
			write: func(c *rawConn) { c.start(); require.NoError(c.t, c.fr.WriteWindowUpdate(0, 1<<31-1)) },
			want:  http2.ErrCodeFlowControl,
		},
		{
			name: "initial window size over 2^31-1",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}))
			},
			want: http2.ErrCodeFlowControl,
		},
		{
			name: "max frame size under 16 KiB",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1000}))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name:  "RST_STREAM on stream 0",
			write: func(c *rawConn) { c.start(); require.NoError(c.t, c.fr.WriteRSTStream(0, http2.ErrCodeCancel)) },
			want:  http2.ErrCodeProtocol,
		},
		{
			name:  "RST_STREAM on an idle stream",
			write: func(c *rawConn) { c.start(); require.NoError(c.t, c.fr.WriteRSTStream(7, http2.ErrCodeCancel)) },
			want:  http2.ErrCodeProtocol,
		},
		{
			name:  "WINDOW_UPDATE on an idle stream",
			write: func(c *rawConn) { c.start(); require.NoError(c.t, c.fr.WriteWindowUpdate(7, 100)) },
			want:  http2.ErrCodeProtocol,
		},
		{
			name: "ENABLE_PUSH of 2",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2}))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name: "PRIORITY on stream 0",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteRawFrame(http2.FramePriority, 0, 0, make([]byte, 5)))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name: "GOAWAY on a stream",
			write: func(c *rawConn) {
				c.start()
				require.NoError(c.t, c.fr.WriteRawFrame(http2.FrameGoAway, 0, 1, make([]byte, 8)))
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name: "a new stream id lower than the highest seen",
			write: func(c *rawConn) {
				c.start()
				c.headers(5, false, grpcRequest(streamSecrets)...)
				c.headers(3, false, grpcRequest(streamSecrets)...)
			},
			want: http2.ErrCodeProtocol,
		},
		{
			name: "HEADERS on a stream that ended",
			write: func(c *rawConn) {
				c.start()
				c.headers(1, true, grpcRequest("/no.such.Service/Method")...)
				c.awaitStream(1)
				c.headers(1, true, grpcRequest(streamSecrets)...)
			},
			want: http2.ErrCodeStreamClosed,
		},
		{
			name: "an INITIAL_WINDOW_SIZE that overflows an open stream's window",
			write: func(c *rawConn) {
				c.start()
				c.headers(1, false, grpcRequest(streamSecrets)...)
				require.NoError(c.t, c.fr.WriteWindowUpdate(1, 1<<31-1-65535))
				require.NoError(c.t, c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}))
			},
			want: http2.ErrCodeFlowControl,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			tt.write(c)
			got := c.awaitClosed()
			if tt.noFrames {
				require.Zero(t, got.frames, "the server answered a client that is not HTTP/2")
				return
			}
			require.Equal(t, []http2.ErrCode{tt.want}, got.goAways)
		})
	}
}

func TestRawRequestErrors(t *testing.T) {
	ts := startServer(t, serverSetup{})
	tests := []struct {
		name   string
		fields []string
		// One of: the HTTP status, the gRPC status of a trailers-only
		// response, or the RST_STREAM code.
		wantHTTP  string
		wantGRPC  codes.Code
		wantReset http2.ErrCode
	}{
		{name: "content-type text/plain", fields: with(grpcRequest(streamSecrets), "content-type", "text/plain"), wantHTTP: "415"},
		{name: "no content-type", fields: with(grpcRequest(healthCheck), "content-type", ""), wantHTTP: "415"},
		{name: "unknown method", fields: grpcRequest("/no.such.Service/Method"), wantGRPC: codes.Unimplemented},
		{name: "grpc-timeout with a bad unit", fields: with(grpcRequest(streamSecrets), "grpc-timeout", "1x"), wantGRPC: codes.Internal},
		{name: "grpc-timeout of nine digits", fields: with(grpcRequest(streamSecrets), "grpc-timeout", "123456789S"), wantGRPC: codes.Internal},
		{name: "grpc-timeout without digits", fields: with(grpcRequest(streamSecrets), "grpc-timeout", "S"), wantGRPC: codes.Internal},
		{name: "negative grpc-timeout", fields: with(grpcRequest(healthCheck), "grpc-timeout", "-1S"), wantGRPC: codes.Internal},
		{name: "malformed binary metadata", fields: with(grpcRequest(streamSecrets), "x-token-bin", "!!!"), wantGRPC: codes.Internal},
		{name: "GET", fields: with(grpcRequest(streamSecrets), ":method", "GET"), wantHTTP: "405"},
		{name: "empty :path", fields: with(grpcRequest(streamSecrets), ":path", ""), wantReset: http2.ErrCodeProtocol},
		{name: "unknown pseudo-header", fields: with(grpcRequest(streamSecrets), ":protocol", "websocket"), wantReset: http2.ErrCodeProtocol},
		{name: "a response pseudo-header", fields: with(grpcRequest(streamSecrets), ":status", "200"), wantReset: http2.ErrCodeProtocol},
		{name: "no :scheme", fields: without(grpcRequest(streamSecrets), ":scheme"), wantReset: http2.ErrCodeProtocol},
		{name: "no :method", fields: without(grpcRequest(streamSecrets), ":method"), wantReset: http2.ErrCodeProtocol},
		{name: "no :path", fields: without(grpcRequest(streamSecrets), ":path"), wantReset: http2.ErrCodeProtocol},
		{name: "a duplicated pseudo-header", fields: append(grpcRequest(streamSecrets)[:6:6], append([]string{":path", streamSecrets}, grpcRequest(streamSecrets)[6:]...)...), wantReset: http2.ErrCodeProtocol},
		{name: "a pseudo-header after a regular field", fields: append(without(grpcRequest(streamSecrets), ":authority"), ":authority", "localhost"), wantReset: http2.ErrCodeProtocol},
		{name: "an upper-case field name", fields: with(grpcRequest(streamSecrets), "X-Token", "1"), wantReset: http2.ErrCodeProtocol},
		{name: "a connection-specific field", fields: with(grpcRequest(streamSecrets), "connection", "keep-alive"), wantReset: http2.ErrCodeProtocol},
		{name: "transfer-encoding", fields: with(grpcRequest(streamSecrets), "transfer-encoding", "chunked"), wantReset: http2.ErrCodeProtocol},
		{name: "te other than trailers", fields: with(grpcRequest(streamSecrets), "te", "gzip"), wantReset: http2.ErrCodeProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			c.start()
			c.headers(1, true, tt.fields...)
			f := c.awaitStream(1)
			if tt.wantReset != http2.ErrCodeNo {
				rst, ok := f.(*http2.RSTStreamFrame)
				require.True(t, ok, "got %v, want RST_STREAM", f)
				require.Equal(t, tt.wantReset, rst.ErrCode)
				return
			}
			h, ok := f.(*http2.MetaHeadersFrame)
			require.True(t, ok, "got %v, want HEADERS", f)
			require.True(t, h.StreamEnded(), "a response in one HEADERS frame")
			fields := fieldMap(h)
			// The request ended with its HEADERS: no RST_STREAM follows
			// the answer (RFC 9113 section 8.1). A PING's answer comes
			// after anything the server wrote before it.
			require.NoError(t, c.fr.WritePing(false, [8]byte{2}))
			for {
				f, err := c.fr.ReadFrame()
				require.NoError(t, err)
				_, isReset := f.(*http2.RSTStreamFrame)
				require.False(t, isReset, "RST_STREAM after the client's END_STREAM")
				if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
					break
				}
			}
			if tt.wantHTTP != "" {
				require.Equal(t, tt.wantHTTP, fields[":status"])
				if tt.wantHTTP == "405" {
					require.Equal(t, "POST", fields["allow"])
				}
				return
			}
			if tt.wantGRPC == codes.Unimplemented {
				require.Equal(t, "identity", fields["grpc-accept-encoding"])
			}
			require.Equal(t, "200", fields[":status"])
			require.Equal(t, "application/grpc", fields["content-type"])
			require.Equal(t, strconv.Itoa(int(tt.wantGRPC)), fields["grpc-status"], "grpc-message: %q", fields["grpc-message"])

			// The connection lives on.
			require.NoError(t, c.fr.WritePing(false, [8]byte{1}))
			require.True(t, await[*http2.PingFrame](c).IsAck())
		})
	}
}

func TestRawMaxConcurrentStreams(t *testing.T) {
	ts := startServer(t, serverSetup{cfg: grpclite.Config{MaxConcurrentStreams: 1}})
	c := dialRaw(t, ts.addr)
	c.start()
	c.headers(1, false, grpcRequest(streamSecrets)...)
	s := ts.sds.next(t)

	c.headers(3, true, grpcRequest(streamSecrets)...)
	rst := await[*http2.RSTStreamFrame](c)
	require.Equal(t, uint32(3), rst.StreamID)
	require.Equal(t, http2.ErrCodeRefusedStream, rst.ErrCode)

	s.st.Close(nil)
	require.Equal(t, uint32(1), c.awaitStream(1).Header().StreamID)
	c.headers(5, false, grpcRequest(streamSecrets)...)
	require.Equal(t, "/"+sdsService+"/StreamSecrets", ts.sds.next(t).st.Method(), "a stream opens once another closed")
}

func TestGRPCTimeout(t *testing.T) {
	const year = 365 * 24 * time.Hour
	ts := startServer(t, serverSetup{})
	tests := []struct {
		timeout  string
		min, max time.Duration // from now, of the stream's deadline
	}{
		{timeout: "1S", min: 500 * time.Millisecond, max: 1100 * time.Millisecond},
		{timeout: "1500000u", min: time.Second, max: 1600 * time.Millisecond},
		{timeout: "99999999M", min: 100 * year, max: 200 * year},
		// The largest timeout the protocol can express: longer than
		// time.Duration, so it must mean "no practical deadline", not
		// an overflowed, negative one.
		{timeout: "99999999H", min: 100 * year, max: math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.timeout, func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			c.start()
			c.headers(1, false, with(grpcRequest(streamSecrets), "grpc-timeout", tt.timeout)...)
			s := ts.sds.next(t)
			deadline, ok := s.st.Context().Deadline()
			require.True(t, ok, "the stream has a deadline")
			left := time.Until(deadline)
			require.True(t, left >= tt.min && left <= tt.max, "deadline in %v, want between %v and %v", left, tt.min, tt.max)
		})
	}

	t.Run("deadline passes", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.start()
		c.headers(1, false, with(grpcRequest(streamSecrets), "grpc-timeout", "50m")...)
		f := c.awaitStream(1)
		h, ok := f.(*http2.MetaHeadersFrame)
		require.True(t, ok, "got %v, want HEADERS", f)
		require.True(t, h.StreamEnded())
		require.Equal(t, strconv.Itoa(int(codes.DeadlineExceeded)), fieldMap(h)["grpc-status"])
	})
}

func TestHandshakeTimeout(t *testing.T) {
	ts := startServer(t, serverSetup{cfg: grpclite.Config{HandshakeTimeout: 200 * time.Millisecond}})
	for _, sent := range []string{"", "PRI * HTTP/2.0\r\n"} {
		t.Run(strconv.Quote(sent), func(t *testing.T) {
			c := dialRaw(t, ts.addr)
			_, err := io.WriteString(c.nc, sent)
			require.NoError(t, err)
			require.Zero(t, c.awaitClosed().frames)
		})
	}
}

func TestKeepalive(t *testing.T) {
	cfg := grpclite.Config{KeepaliveTime: 100 * time.Millisecond, KeepaliveTimeout: 100 * time.Millisecond}

	t.Run("client that never answers loses its connection", func(t *testing.T) {
		ts := startServer(t, serverSetup{cfg: cfg})
		c := dialRaw(t, ts.addr)
		c.start()
		pings := 0
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				require.False(t, isTimeout(err), "the connection is still open after %v", waitTime)
				require.True(t, isClosed(err), "reading: %v", err)
				break
			}
			if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
				pings++
			}
		}
		require.Positive(t, pings, "the server pinged before closing")
	})

	t.Run("client that answers keeps its connection", func(t *testing.T) {
		ts := startServer(t, serverSetup{cfg: cfg})
		c := dialRaw(t, ts.addr)
		c.start()
		probe := [8]byte{'s', 't', 'i', 'l', 'l', 'u', 'p', '?'}
		answered, probed := 0, false
		for {
			f, err := c.fr.ReadFrame()
			require.NoError(t, err, "after %d answered pings", answered)
			p, ok := f.(*http2.PingFrame)
			if !ok {
				continue
			}
			if p.IsAck() {
				require.True(t, probed)
				require.Equal(t, probe, p.Data)
				break
			}
			require.NoError(t, c.fr.WritePing(true, p.Data))
			answered++
			// After several keepalive periods, the connection still
			// answers.
			if answered == 5 && !probed {
				require.NoError(t, c.fr.WritePing(false, probe))
				probed = true
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Fuzzing.

// pipeListener hands out in-memory connections.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(t testing.TB) net.Conn {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client
	case <-l.closed:
		t.Fatal("listener closed")
		return nil
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// wholeFrames reports whether data is a sequence of complete frames.
func wholeFrames(data []byte) bool {
	for len(data) > 0 {
		if len(data) < 9 {
			return false
		}
		n := int(data[0])<<16 | int(data[1])<<8 | int(data[2])
		if len(data) < 9+n {
			return false
		}
		data = data[9+n:]
	}
	return true
}

// encodeFrames returns the frames write writes; block HPACK-encodes fields
// for them.
func encodeFrames(t testing.TB, write func(fr *http2.Framer, block func(fields ...string) []byte) error) []byte {
	var buf, hbuf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.AllowIllegalWrites = true
	enc := hpack.NewEncoder(&hbuf)
	block := func(fields ...string) []byte {
		hbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(hbuf.Bytes())
	}
	require.NoError(t, write(fr, block))
	return buf.Bytes()
}

func fuzzSeeds(t testing.TB) [][]byte {
	check := grpcMessage(t, &healthpb.HealthCheckRequest{})
	sdsReq := grpcMessage(t, &discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResourceNames: []string{"a", "b"}})
	return [][]byte{
		nil,
		[]byte("\x00\x00\x05\x01\x05\x00\x00\x00\x01garbage"),
		encodeFrames(t, func(fr *http2.Framer, _ func(...string) []byte) error {
			return errors.Join(
				fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20}),
				fr.WritePing(false, [8]byte{1, 2, 3}),
				fr.WriteSettingsAck(),
			)
		}),
		encodeFrames(t, func(fr *http2.Framer, block func(...string) []byte) error {
			return errors.Join(
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(grpcRequest(healthCheck)...), EndHeaders: true}),
				fr.WriteData(1, true, check),
			)
		}),
		encodeFrames(t, func(fr *http2.Framer, block func(...string) []byte) error {
			return errors.Join(
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(grpcRequest(streamSecrets)...), EndHeaders: true}),
				fr.WriteData(1, false, sdsReq[:7]),
				fr.WriteData(1, false, sdsReq[7:]),
				fr.WriteWindowUpdate(1, 100),
				fr.WriteRSTStream(1, http2.ErrCodeCancel),
				fr.WriteData(1, false, sdsReq),
			)
		}),
		encodeFrames(t, func(fr *http2.Framer, block func(...string) []byte) error {
			b := block(with(grpcRequest(streamSecrets), "authorization", "Bearer x", "x-id-bin", "AAEC")...)
			return errors.Join(
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b[:4]}),
				fr.WriteContinuation(3, false, b[4:10]),
				fr.WriteContinuation(3, true, b[10:]),
				fr.WriteDataPadded(3, false, sdsReq, make([]byte, 17)),
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("x-trailer", "t"), EndStream: true, EndHeaders: true}),
			)
		}),
		encodeFrames(t, func(fr *http2.Framer, block func(...string) []byte) error {
			return errors.Join(
				fr.WriteHeaders(http2.HeadersFrameParam{
					StreamID: 5, BlockFragment: block(grpcRequest(streamSecrets)...), EndHeaders: true, PadLength: 9,
					Priority: http2.PriorityParam{StreamDep: 0, Weight: 200},
				}),
				fr.WritePriority(5, http2.PriorityParam{StreamDep: 1, Weight: 1}),
				fr.WriteRawFrame(0x42, 0xff, 5, []byte("unknown frame type")),
				fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye")),
				fr.WriteData(5, true, nil),
			)
		}),
		encodeFrames(t, func(fr *http2.Framer, block func(...string) []byte) error {
			return errors.Join(
				fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}),
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(grpcRequest(healthCheck)...), EndHeaders: true}),
				fr.WriteData(1, true, check),
			)
		}),
		encodeFrames(t, func(fr *http2.Framer, block func(...string) []byte) error {
			return errors.Join(
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(grpcRequest("/no.such/Method")...), EndHeaders: true, EndStream: true}),
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(with(grpcRequest(streamSecrets), "grpc-timeout", "1n")...), EndHeaders: true}),
				fr.WriteData(3, false, []byte{1, 0, 0, 0, 1, 0}),
			)
		}),
	}
}

// FuzzServerFrames feeds arbitrary bytes after the client preface. The
// server must not panic, must write only well-formed frames, and after
// whole frames must either still answer a PING or close the connection.
func FuzzServerFrames(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	lis := newPipeListener()
	startServer(f, serverSetup{lis: lis})
	probe := [8]byte{'p', 'r', 'o', 'b', 'e', '!', '!', '!'}
	probeFrame := encodeFrames(f, func(fr *http2.Framer, _ func(...string) []byte) error { return fr.WritePing(false, probe) })

	f.Fuzz(func(t *testing.T, data []byte) {
		nc := lis.dial(t)
		defer nc.Close()
		require.NoError(t, nc.SetDeadline(time.Now().Add(2*time.Second)))
		whole := wholeFrames(data)

		type outcome struct {
			acked, closed bool
			err           error
		}
		res := make(chan outcome, 1)
		go func() {
			fr := http2.NewFramer(nil, nc)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			fr.SetMaxReadFrameSize(1<<24 - 1)
			for {
				f, err := fr.ReadFrame()
				switch {
				case err == nil:
					if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == probe {
						res <- outcome{acked: true}
						return
					}
					continue
				case isTimeout(err):
					res <- outcome{}
				case isClosed(err):
					res <- outcome{closed: true}
				default:
					res <- outcome{err: err}
				}
				return
			}
		}()

		msg := append(append([]byte(http2.ClientPreface), data...), probeFrame...)
		_, _ = nc.Write(msg)
		if !whole {
			nc.Close()
		}
		got := <-res
		require.NoError(t, got.err, "the server wrote a malformed frame")
		if whole {
			require.True(t, got.acked || got.closed, "after whole frames, the server neither answered a PING nor closed the connection")
		}
	})
}
