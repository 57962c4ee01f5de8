package sds

import (
	"errors"
	"io"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/internal/grpclite"
)

// gRPC methods served as event streams.
const (
	methodSotW     = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
	methodDelta    = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"
	methodADS      = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	methodADSDelta = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

// maxPending and maxPendingBytes bound the requests a stream may have
// queued and not yet handled: Envoy sends one and waits for the answer. The
// transport gives flow-control window back as soon as a request arrives, so
// this is what bounds a client that sends and never reads.
const (
	maxPending      = 16
	maxPendingBytes = 1 << 20
)

// beginFunc starts a stream of one API with its first request: it
// authenticates and opens the stream (st.open), answers, and returns how
// the stream handles each later request and a cache wake-up.
type beginFunc func(s *Server, st *stream, first []byte) (handle func(req []byte) error, push func() error, err error)

// stream is one SDS or ADS stream. The connection delivers its requests as
// events, which are only queued; the work (authenticating, answering,
// pushing on cache wake-ups, closing at token expiry) runs in a goroutine
// that exists only while there is work, one at a time per stream. An idle
// stream costs no goroutine, which is most of what a data plane costs.
type stream struct {
	s     *Server
	api   string
	gs    *grpclite.Stream
	begin beginFunc

	mu           sync.Mutex
	pending      [][]byte
	pendingBytes int
	woken        bool
	expired      bool
	end          error // why the client side ended (io.EOF: it is done sending)
	stop         error // why the server ends the stream (CloseStreams)
	running      bool
	done         bool

	// Owned by the running goroutine.
	requests prometheus.Counter
	id       *Identity
	w        *watcher
	info     *streamInfo
	unwatch  func()
	expiry   *time.Timer
	handle   func([]byte) error
	push     func() error
}

var _ grpclite.StreamEvents = (*stream)(nil)

// handler returns the grpclite handler of api's streams.
func (s *Server) handler(api string, begin beginFunc) grpclite.StreamHandler {
	return func(gs *grpclite.Stream) grpclite.StreamEvents {
		return &stream{s: s, api: api, gs: gs, begin: begin}
	}
}

// Message queues a request.
func (st *stream) Message(msg []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return nil
	}
	if len(st.pending) >= maxPending || st.pendingBytes+len(msg) > maxPendingBytes {
		return status.Error(codes.ResourceExhausted, "too many requests waiting for an answer")
	}
	st.pending = append(st.pending, append([]byte(nil), msg...))
	st.pendingBytes += len(msg)
	st.kickLocked()
	return nil
}

// End records that the client side ended.
func (st *stream) End(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.end == nil {
		st.end = err
	}
	st.kickLocked()
}

// wake is the cache telling the stream to look again.
func (st *stream) wake() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.woken = true
	st.kickLocked()
}

// close ends the stream with err from outside.
func (st *stream) close(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stop = err
	st.kickLocked()
}

func (st *stream) expire() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.expired = true
	st.kickLocked()
}

// kickLocked starts the stream's goroutine unless it runs already; a
// running one picks up the new work before it ends.
func (st *stream) kickLocked() {
	if st.running || st.done {
		return
	}
	st.running = true
	go st.run()
}

// run works until nothing is left, and ends the stream when it must end.
func (st *stream) run() {
	for {
		st.mu.Lock()
		reqs, woken, expired, end, stop := st.pending, st.woken, st.expired, st.end, st.stop
		st.pending, st.pendingBytes, st.woken = nil, 0, false
		if len(reqs) == 0 && !woken && !expired && end == nil && stop == nil {
			st.running = false
			st.mu.Unlock()
			return
		}
		st.mu.Unlock()
		if stop != nil {
			st.finish(stop)
			return
		}
		if end != nil && !errors.Is(end, io.EOF) {
			st.finish(end) // gone: its queued requests need no answer
			return
		}
		if err := st.step(reqs, woken, expired); err != nil {
			st.finish(err)
			return
		}
		if end != nil {
			if errors.Is(end, io.EOF) {
				end = nil // the client is done: the stream ends well
			}
			st.finish(end)
			return
		}
	}
}

// step handles queued requests, then a wake-up.
func (st *stream) step(reqs [][]byte, woken, expired bool) error {
	s := st.s
	if expired {
		s.metrics.authFailures.WithLabelValues("expired").Inc()
		s.log.Info("closing stream: its dataplane token expired", keyMesh, st.id.Mesh, keyDataplane, st.id.Name)
		return status.Error(codes.Unauthenticated, "dataplane token expired")
	}
	for _, req := range reqs {
		if st.handle == nil {
			s.metrics.requests.WithLabelValues(st.api).Inc()
			handle, push, err := st.begin(s, st, req)
			if err != nil {
				return err
			}
			st.handle, st.push = handle, push
			continue
		}
		st.requests.Inc()
		if err := st.handle(req); err != nil {
			return err
		}
	}
	if woken && st.push != nil {
		if s.cache.revoked(st.id) {
			return s.revokedErr(st.id)
		}
		return st.push()
	}
	return nil
}

// open authenticates the stream by its first request's node, waits until
// the cache is ready, and registers the stream.
func (st *stream) open(node *corev3.Node) error {
	s := st.s
	ctx := st.gs.Context()
	id, err := s.authenticate(ctx, node, st.api)
	if err != nil {
		return err
	}
	select {
	case <-s.cache.Ready():
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.shutdown:
		return s.closingErr()
	}
	if s.cache.revoked(id) {
		s.metrics.authFailures.WithLabelValues("revoked").Inc()
		return status.Error(codes.PermissionDenied, "dataplane token revoked")
	}
	info, err := s.track(id, st.api, st.close)
	if err != nil {
		return err
	}
	st.id, st.info = id, info
	st.requests = s.metrics.requests.WithLabelValues(st.api) // looked up once, counted per ACK
	st.w, st.unwatch = s.cache.watch(id, st.wake)
	s.metrics.activeStreams.WithLabelValues(st.api).Inc()
	// An expired token must not keep a stream, which would otherwise be
	// handed renewed certificates for ever.
	if !id.Expires.IsZero() {
		st.expiry = time.AfterFunc(id.Expires.Sub(s.now()), st.expire)
	}
	return nil
}

// finish ends the stream with err (OK for nil) and unregisters it.
func (st *stream) finish(err error) {
	st.mu.Lock()
	st.done, st.running = true, false
	st.pending = nil
	st.mu.Unlock()
	if st.expiry != nil {
		st.expiry.Stop()
	}
	if st.unwatch != nil {
		st.unwatch()
		st.s.untrack(st.info)
		st.s.metrics.activeStreams.WithLabelValues(st.api).Dec()
	}
	st.gs.Close(err)
}
