// Package grpclite is a gRPC server transport for many long-lived, mostly
// idle streams: one goroutine per connection, none per stream while it
// waits, and no read or write buffer held by an idle connection.
//
// grpc-go's server keeps three goroutines per connection (reader, writer,
// keepalive) and its handlers one per stream; an SDS server whose data
// planes keep two streams open each pays about 35 KiB of goroutine stacks
// per data plane for it. Here a connection's only goroutine reads frames;
// writes happen on the goroutine that sends, under the connection's write
// lock; keepalive is a timer. Methods registered with HandleStream run as
// events on the reading goroutine (their handlers start goroutines only
// while they have work); every other method registered through
// RegisterService (health, reflection, unary calls) runs as grpc-go would
// run it, in a goroutine of its own, against a grpc.ServerStream.
//
// It speaks HTTP/2 with prior knowledge (cleartext) or over TLS with ALPN
// "h2", as gRPC clients and Envoy do; it does not accept HTTP/1.1 or
// compressed messages.
package grpclite

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// ErrServerStopped is returned by Serve after Stop or GracefulStop.
var ErrServerStopped = errors.New("grpclite: server stopped")

// Config configures a Server. Zero values take the defaults.
type Config struct {
	Logger *slog.Logger
	// TLS, when set, makes the server terminate TLS itself (ALPN h2); the
	// client certificate, if any, reaches handlers as the peer's
	// credentials.TLSInfo.
	TLS *tls.Config
	// MaxConcurrentStreams per connection; default 100.
	MaxConcurrentStreams uint32
	// MaxRecvMsgSize bounds a message from a client; default 4 MiB.
	MaxRecvMsgSize int
	// KeepaliveTime is how long a connection may stay silent before the
	// server pings it, KeepaliveTimeout how long it waits for the answer
	// before closing the connection. Defaults 2h and 20s.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake and the client preface;
	// default 10s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one write to a connection: a peer that stops
	// reading loses its connection instead of holding a sender. Default 10s.
	WriteTimeout time.Duration
	// Metrics counts connections; nil keeps them unexported.
	Metrics *Metrics

	// Authorize, when set, decides whether a stream of a method that is
	// not in PublicMethods may open: it is called when the stream's
	// headers are complete, before any of its body is read, with a
	// context carrying the request's metadata and peer. It runs on the
	// connection's reading goroutine and must be quick (a cached token
	// check). An error refuses the stream with its gRPC status, and nothing
	// of the stream is buffered. A stream it lets through (or any stream
	// of a method not in PublicMethods, without Authorize) authenticates
	// its connection.
	Authorize func(ctx context.Context, fullMethod string) error
	// PublicMethods are served without Authorize (health checks,
	// reflection); they do not authenticate a connection. On a connection
	// not yet authenticated at most maxUnauthStreams of them run at once,
	// with messages of at most maxUnauthMessage bytes.
	PublicMethods []string
	// UnauthenticatedTimeout closes a connection that has not
	// authenticated this long after its handshake, whatever grpc-timeout
	// its streams carry. Default 10s.
	UnauthenticatedTimeout time.Duration
	// MaxConnections caps the open connections; beyond it a new
	// connection is closed at once. Default 20,000.
	MaxConnections int
	// MaxConnBuffered bounds what the streams of one connection hold
	// together of their clients' messages: incomplete ones, and those
	// RegisterService handlers have not read yet (whose streams get no
	// window back until they are read). Beyond it a stream gets no
	// flow-control window back, but for one stream at a time, which may
	// complete its message: so messages each within MaxRecvMsgSize always
	// go through, in turn, and a connection holds at most MaxConnBuffered,
	// one message and a stream window (64 KiB) per stream (buffers grow by
	// doubling: the rest up to twice that). Default 4 MiB.
	MaxConnBuffered int
}

// Limits on a connection that has not authenticated.
const (
	maxUnauthStreams = 2
	maxUnauthMessage = 16 << 10
)

func (c *Config) defaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = 100
	}
	if c.MaxRecvMsgSize <= 0 {
		c.MaxRecvMsgSize = 4 << 20
	}
	if c.KeepaliveTime <= 0 {
		c.KeepaliveTime = 2 * time.Hour
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = 20 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.TLS != nil {
		c.TLS = tlsWithH2(c.TLS)
	}
	if c.Metrics == nil {
		c.Metrics, _ = NewMetrics(nil) // nothing to register: cannot fail
	}
	if c.UnauthenticatedTimeout <= 0 {
		c.UnauthenticatedTimeout = 10 * time.Second
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 20000
	}
	if c.MaxConnBuffered <= 0 {
		c.MaxConnBuffered = 4 << 20
	}
}

// StreamHandler opens the server side of a stream of a method registered
// with HandleStream. It runs on the connection's reading goroutine and must
// not block; the events it returns receive the stream's messages.
type StreamHandler func(st *Stream) StreamEvents

// StreamEvents receives what a client sends on one stream. Both methods run
// on the connection's reading goroutine and must not block: in particular
// they must not call Stream.Send, which may wait for a flow-control update
// that only the reading goroutine can read. When the client's grpc-timeout
// passes, End runs on a timer's goroutine instead, possibly while Message
// runs.
type StreamEvents interface {
	// Message is called with each message, in order. msg is valid only
	// during the call. A non-nil error ends the stream with its status
	// (and End follows with it).
	Message(msg []byte) error
	// End is called at most once: with io.EOF when the client has sent its
	// last message (the stream is still open for sending, and the handler
	// must Close it), or with the reason the stream is already gone (the
	// client cancelled it, its deadline passed, a message was too large or
	// malformed or refused by Message, or the connection closed). It is not
	// called for a stream the handler closed itself.
	End(err error)
}

// method is what serves one full method name.
type method struct {
	impl   any
	unary  *grpc.MethodDesc
	stream *grpc.StreamDesc
	events StreamHandler
}

// Server is a gRPC server. Register everything before Serve.
type Server struct {
	cfg      Config
	public   map[string]bool
	methods  map[string]*method
	services map[string]grpc.ServiceInfo

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	stopped   bool
	draining  bool
	connsDone *sync.Cond // signalled when a connection ends
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// NewServer returns a Server.
func NewServer(cfg Config) *Server {
	cfg.defaults()
	s := &Server{
		cfg: cfg, public: map[string]bool{}, methods: map[string]*method{}, services: map[string]grpc.ServiceInfo{},
		listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{},
	}
	s.connsDone = sync.NewCond(&s.mu)
	for _, m := range cfg.PublicMethods {
		s.public[m] = true
	}
	return s
}

// RegisterService registers a generated service description and its
// implementation, as grpc.Server does. Methods already given to
// HandleStream keep their stream handler.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	info := grpc.ServiceInfo{Metadata: desc.Metadata}
	for i := range desc.Methods {
		md := &desc.Methods[i]
		s.add("/"+desc.ServiceName+"/"+md.MethodName, &method{impl: impl, unary: md})
		info.Methods = append(info.Methods, grpc.MethodInfo{Name: md.MethodName})
	}
	for i := range desc.Streams {
		sd := &desc.Streams[i]
		s.add("/"+desc.ServiceName+"/"+sd.StreamName, &method{impl: impl, stream: sd})
		info.Methods = append(info.Methods, grpc.MethodInfo{Name: sd.StreamName, IsClientStream: sd.ClientStreams, IsServerStream: sd.ServerStreams})
	}
	s.services[desc.ServiceName] = info
}

func (s *Server) add(name string, m *method) {
	if old, ok := s.methods[name]; ok && old.events != nil {
		old.impl, old.unary, old.stream = m.impl, m.unary, m.stream
		return
	}
	s.methods[name] = m
}

// HandleStream serves the streams of fullMethod ("/package.Service/Method")
// with h instead of a goroutine per stream. Register the service too, so
// that reflection lists it.
func (s *Server) HandleStream(fullMethod string, h StreamHandler) {
	if m, ok := s.methods[fullMethod]; ok {
		m.events = h
		return
	}
	s.methods[fullMethod] = &method{events: h}
}

// GetServiceInfo lists the registered services, for gRPC reflection.
func (s *Server) GetServiceInfo() map[string]grpc.ServiceInfo {
	return s.services
}

// Serve accepts connections on lis until Stop or GracefulStop, and then
// returns ErrServerStopped.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.stopped || s.draining {
		s.mu.Unlock()
		lis.Close()
		return ErrServerStopped
	}
	s.listeners[lis] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, lis)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := lis.Accept()
		if err != nil {
			s.mu.Lock()
			done := s.stopped || s.draining
			s.mu.Unlock()
			if done {
				return ErrServerStopped
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.cfg.Logger.Warn("accepting a connection", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accepting connections: %w", err)
		}
		delay = 0
		s.mu.Lock()
		if s.stopped || s.draining {
			s.mu.Unlock()
			nc.Close()
			return ErrServerStopped
		}
		if len(s.conns) >= s.cfg.MaxConnections {
			s.mu.Unlock()
			// Counted before the close, so whoever sees the close sees
			// the count.
			s.cfg.Metrics.limits.WithLabelValues(LimitConnections).Inc()
			nc.Close()
			continue
		}
		c := newConn(s, nc)
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go c.serve()
	}
}

// isTemporary reports accept errors worth waiting out, such as running out
// of file descriptors.
func isTemporary(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "too many open files") || strings.Contains(msg, "resource temporarily unavailable")
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.connsDone.Broadcast()
	s.mu.Unlock()
}

// Stop closes every listener and connection at once; open streams end as
// cancelled for their handlers.
func (s *Server) Stop() {
	for _, c := range s.shutdown(func() { s.stopped = true }) {
		c.close(errServerStopped)
	}
	s.waitConns()
}

// GoAway closes the listeners and tells every client to go away (HTTP/2
// GOAWAY): no new streams, the open ones go on. A connection closes once
// its last stream ends. It does not wait; GracefulStop does.
func (s *Server) GoAway() {
	for _, c := range s.shutdown(func() { s.draining = true }) {
		c.drain()
	}
}

// shutdown marks the server (mark runs under its lock), closes the
// listeners and returns the open connections.
func (s *Server) shutdown(mark func()) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	mark()
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// waitConns waits until every connection has ended.
func (s *Server) waitConns() {
	s.mu.Lock()
	for len(s.conns) > 0 {
		s.connsDone.Wait()
	}
	s.mu.Unlock()
}

// GracefulStop is GoAway, then waits until every stream has ended and every
// connection closed. Handlers of long-lived streams must end them, or Stop
// must follow.
func (s *Server) GracefulStop() {
	s.GoAway()
	s.waitConns()
}
