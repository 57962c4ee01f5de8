package sds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec wrapped by GRPCCodec
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/sds/xds"
)

// The SDS port has two transports, interchangeable behind xds.Stream:
// grpclite (the default: one goroutine per connection, none per waiting
// stream) and grpc-go's server (a goroutine per stream and three per
// connection; a way around any transport bug of our own).

// A grpclite stream holds back its flow-control window while the protocol
// has requests of it queued unhandled (xds.Events finds it by these
// methods): a client that never reads cannot have a stream queue more than
// was in flight, and the queued requests count toward the connection's
// MaxConnBuffered.
var _ interface {
	Hold(n int)
	Release(n int)
} = (*grpclite.Stream)(nil)

// RegisterGRPCLite adds the SDS and ADS services to r: FetchSecrets and the
// service descriptions (for reflection) as generated, the four streaming
// methods as event streams of the protocol.
func (s *Server) RegisterGRPCLite(r *grpclite.Server) {
	secretv3.RegisterSecretDiscoveryServiceServer(r, s)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(r, s)
	for method, api := range xds.Methods {
		r.HandleStream(method, func(gs *grpclite.Stream) grpclite.StreamEvents {
			return xds.NewEvents(api, gs, s)
		})
	}
}

// RegisterGRPC adds the SDS and ADS services to r, a grpc-go server that
// must have been built with the option GRPCCodec, which hands the
// protocol the requests as they came (it decodes them itself) and sends
// the responses it encoded.
func (s *Server) RegisterGRPC(r *grpc.Server) {
	sdsDesc, adsDesc := secretv3.SecretDiscoveryService_ServiceDesc, discoveryv3.AggregatedDiscoveryService_ServiceDesc
	for _, desc := range []*grpc.ServiceDesc{&sdsDesc, &adsDesc} {
		streams := make([]grpc.StreamDesc, len(desc.Streams))
		copy(streams, desc.Streams)
		for i := range streams {
			api := xds.Methods["/"+desc.ServiceName+"/"+streams[i].StreamName]
			streams[i].Handler = s.grpcHandler(api)
		}
		desc.Streams = streams
		r.RegisterService(desc, s)
	}
}

// GRPCCodec is the grpc-go server option RegisterGRPC needs: gRPC's proto
// codec, except for the raw messages of the protocol's streams.
func GRPCCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(rawCodec{encoding.GetCodecV2("proto")})
}

// rawMessage is a message the protocol decodes or encoded itself.
type rawMessage struct{ b []byte }

type rawCodec struct{ proto encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*rawMessage); ok {
		m.b = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (rawCodec) Name() string { return "proto" }

// grpcHandler serves api's streams on grpc-go: a goroutine receives and
// hands each request to the protocol, while the handler's own goroutine
// waits for the protocol to end the stream (grpc-go ends a stream when its
// handler returns).
func (s *Server) grpcHandler(api xds.API) grpc.StreamHandler {
	return func(_ any, ss grpc.ServerStream) error {
		st := &grpcStream{ss: ss, done: make(chan struct{})}
		ev := xds.NewEvents(api, st, s)
		go func() {
			for {
				m := &rawMessage{}
				if err := ss.RecvMsg(m); err != nil {
					ev.End(err) // io.EOF: the client is done sending
					return
				}
				if err := ev.Message(m.b); err != nil {
					ev.Close(err)
					return
				}
			}
		}()
		<-st.done
		return st.err
	}
}

// grpcStream is a grpc-go stream as the protocol uses it.
type grpcStream struct {
	ss   grpc.ServerStream
	once sync.Once
	done chan struct{}
	err  error
}

var _ xds.Stream = (*grpcStream)(nil)

func (g *grpcStream) Context() context.Context { return g.ss.Context() }

func (g *grpcStream) SendEncoded(appendMsg func(b []byte) ([]byte, error)) error {
	select {
	case <-g.done:
		return errors.New("stream closed")
	default:
	}
	b, err := appendMsg(nil)
	if err != nil {
		return status.Errorf(codes.Internal, "encoding a response: %v", err)
	}
	return g.ss.SendMsg(&rawMessage{b: b})
}

func (g *grpcStream) Close(err error) {
	g.once.Do(func() {
		g.err = err
		close(g.done)
	})
}

// GRPCConnStats counts the connections of a grpc-go SDS port under the
// names grpclite uses (meshsds_sds_connections and
// meshsds_sds_connections_closed_total), so that dashboards read the same
// on either transport. grpc-go does not say why a connection ended: an end
// is "server" once Stopping was called, "client" before.
//
// With Listener it also gives grpc-go grpclite's deadline for
// unauthenticated connections: a connection that has not opened a stream
// with a valid credential (GRPCAuthenticated) within the timeout is closed,
// whatever grpc-timeout its streams carry, and counted with reason
// "unauthenticated".
type GRPCConnStats struct {
	conns    prometheus.Gauge
	closed   *prometheus.CounterVec
	stopping atomic.Bool
}

var _ stats.Handler = (*GRPCConnStats)(nil)

// NewGRPCConnStats creates the metrics and registers them with reg (nil:
// kept but not exported).
func NewGRPCConnStats(reg prometheus.Registerer) (*GRPCConnStats, error) {
	s := &GRPCConnStats{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshsds_sds_connections", Help: "Open HTTP/2 connections on the SDS port.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_connections_closed_total",
			Help: "Connections on the SDS port that ended, by reason (with --sds-transport grpc-go: client, unauthenticated or server).",
		}, []string{"reason"}),
	}
	for _, r := range []string{grpclite.ReasonClient, grpclite.ReasonUnauthenticated, grpclite.ReasonServer} {
		s.closed.WithLabelValues(r) // exported at 0 from the start, as grpclite's
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.conns, s.closed} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering transport metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Stopping marks the connections that end from now on as ended by the
// server.
func (s *GRPCConnStats) Stopping() { s.stopping.Store(true) }

// Listener returns l whose connections are closed when they have not
// authenticated within timeout; a timeout of zero or less means none.
func (s *GRPCConnStats) Listener(l net.Listener, timeout time.Duration) net.Listener {
	if timeout <= 0 {
		return l
	}
	return &deadlineListener{Listener: l, timeout: timeout, stats: s}
}

// GRPCAuthenticated records that the connection of a stream's ctx (of a
// grpc-go server with GRPCConnStats and its Listener) has opened a stream
// with a valid credential: its deadline no longer applies.
func GRPCAuthenticated(ctx context.Context) {
	if c, ok := ctx.Value(trackedConnKey{}).(*trackedConn); ok {
		c.authenticated()
	}
}

// deadlineListener starts each accepted connection's deadline.
type deadlineListener struct {
	net.Listener
	timeout time.Duration
	stats   *GRPCConnStats
}

func (l *deadlineListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: nc, stats: l.stats}
	c.timer = time.AfterFunc(l.timeout, c.expire)
	return c, nil
}

// trackedConn is a connection with a deadline for its first authenticated
// stream. Its RemoteAddr, which grpc-go hands to TagConn, leads back to it.
type trackedConn struct {
	net.Conn
	stats   *GRPCConnStats
	timer   *time.Timer
	mu      sync.Mutex
	authed  bool
	expired bool
	// tagged: grpc-go made it a transport (TagConn), so its end is
	// counted by HandleConn; before, a close at the deadline (a TLS or
	// HTTP/2 handshake that never finished) is counted by expire, which
	// sets counted.
	tagged, counted bool
}

type trackedConnKey struct{}

// trackedAddr is a trackedConn's remote address: the same address, and the
// way from grpc-go's ConnTagInfo to the connection.
type trackedAddr struct {
	net.Addr
	conn *trackedConn
}

func (a trackedAddr) Network() string {
	if a.Addr == nil {
		return "unknown"
	}
	return a.Addr.Network()
}

func (a trackedAddr) String() string {
	if a.Addr == nil {
		return ""
	}
	return a.Addr.String()
}

func (c *trackedConn) RemoteAddr() net.Addr { return trackedAddr{Addr: c.Conn.RemoteAddr(), conn: c} }

func (c *trackedConn) authenticated() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.authed {
		c.authed = true
		c.timer.Stop()
	}
}

func (c *trackedConn) expire() {
	c.mu.Lock()
	if c.authed {
		c.mu.Unlock()
		return
	}
	c.expired = true
	count := !c.tagged
	c.counted = count
	c.mu.Unlock()
	// Counted before the close, so whoever sees the close sees the count.
	if count {
		c.stats.closed.WithLabelValues(grpclite.ReasonUnauthenticated).Inc()
	}
	_ = c.Conn.Close()
}

// end reports, as the connection's end is counted, whether it was closed
// at its deadline and whether that close was counted already.
func (c *trackedConn) end() (expired, counted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired, c.counted
}

func (c *trackedConn) Close() error {
	c.timer.Stop()
	return c.Conn.Close()
}

// TagConn implements stats.Handler: the connection's context carries its
// deadline's state.
func (s *GRPCConnStats) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	if a, ok := info.RemoteAddr.(trackedAddr); ok {
		a.conn.mu.Lock()
		a.conn.tagged = true
		a.conn.mu.Unlock()
		return context.WithValue(ctx, trackedConnKey{}, a.conn)
	}
	return ctx
}

// HandleConn implements stats.Handler.
func (s *GRPCConnStats) HandleConn(ctx context.Context, st stats.ConnStats) {
	switch st.(type) {
	case *stats.ConnBegin:
		s.conns.Inc()
	case *stats.ConnEnd:
		s.conns.Dec()
		reason := grpclite.ReasonClient
		if s.stopping.Load() {
			reason = grpclite.ReasonServer
		}
		if c, ok := ctx.Value(trackedConnKey{}).(*trackedConn); ok {
			expired, counted := c.end()
			if counted {
				return // expire counted it, before grpc-go tagged it
			}
			if expired {
				reason = grpclite.ReasonUnauthenticated
			}
		}
		s.closed.WithLabelValues(reason).Inc()
	}
}

// TagRPC implements stats.Handler.
func (s *GRPCConnStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// HandleRPC implements stats.Handler.
func (s *GRPCConnStats) HandleRPC(context.Context, stats.RPCStats) {}
