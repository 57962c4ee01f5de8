package xds

import (
	"errors"
	"io"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxPending and maxPendingBytes bound the requests a stream may have
// queued and not yet handled: Envoy sends one and waits for the answer.
// grpc-go gives flow-control window back as soon as a request arrives, so
// there this is what bounds a client that sends and never reads; grpclite
// holds the stream's window back while it has requests queued (holder).
const (
	maxPending      = 16
	maxPendingBytes = 1 << 20
)

// holder is a transport that counts the requests a stream has queued
// unhandled toward its connection's bound, and holds the stream's
// flow-control window back until they are released (grpclite.Stream):
// Hold is called from Message under Events.mu (it must not call back into
// Events), Release from the stream's work goroutine.
type holder interface {
	Hold(n int)
	Release(n int)
}

// Events is the protocol's side of one stream. The transport delivers what
// the client sends as events (Message, End), which are only queued; the
// work (opening, answering, pushing on wake-ups, closing) runs on a
// goroutine that exists only while there is work, one at a time per
// stream. An idle stream costs no goroutine, which is most of what a data
// plane costs.
//
// Message and End never block and may be called from the transport's
// reading goroutine; Wake and Close (Control) from anywhere.
type Events struct {
	api    API
	tr     Stream
	opener Opener
	sub    subscription

	mu           sync.Mutex
	pending      [][]byte
	pendingBytes int
	woken        bool
	end          error // why the client side ended (io.EOF: it is done sending)
	stop         error // why the server ends the stream (Close)
	running      bool
	done         bool

	// Owned by the running goroutine.
	h Handler
}

var _ Control = (*Events)(nil)

// NewEvents starts the protocol of api on tr; o opens it once its first
// request is in.
func NewEvents(api API, tr Stream, o Opener) *Events {
	e := &Events{api: api, tr: tr, opener: o}
	if api.Incremental() {
		e.sub = &deltaSubscription{}
	} else {
		e.sub = &sotwSubscription{}
	}
	return e
}

// Message queues a request. msg is copied. It fails, ending the stream,
// when too many requests wait for an answer.
func (e *Events) Message(msg []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done {
		return nil
	}
	if len(e.pending) >= maxPending || e.pendingBytes+len(msg) > maxPendingBytes {
		return status.Error(codes.ResourceExhausted, "too many requests waiting for an answer")
	}
	if h, ok := e.tr.(holder); ok {
		// Before run can see the request, whose Release must follow it.
		h.Hold(len(msg))
	}
	e.pending = append(e.pending, append([]byte(nil), msg...))
	e.pendingBytes += len(msg)
	e.kickLocked()
	return nil
}

// End records that the client side ended: io.EOF when it is done sending
// (the stream still answers what it queued), any other error when the
// stream is gone.
func (e *Events) End(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.end == nil {
		e.end = err
	}
	e.kickLocked()
}

// Wake implements Control.
func (e *Events) Wake() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.woken = true
	e.kickLocked()
}

// Close implements Control.
func (e *Events) Close(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stop == nil {
		e.stop = err
	}
	e.kickLocked()
}

// kickLocked starts the stream's goroutine unless it runs already; a
// running one picks up the new work before it ends.
func (e *Events) kickLocked() {
	if e.running || e.done {
		return
	}
	e.running = true
	go e.run()
}

// run works until nothing is left, and ends the stream when it must end.
func (e *Events) run() {
	for {
		e.mu.Lock()
		reqs, held, woken, end, stop := e.pending, e.pendingBytes, e.woken, e.end, e.stop
		e.pending, e.pendingBytes, e.woken = nil, 0, false
		if len(reqs) == 0 && !woken && end == nil && stop == nil {
			e.running = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		if stop != nil {
			e.finish(stop)
			return
		}
		if end != nil && !errors.Is(end, io.EOF) {
			e.finish(end) // gone: its queued requests need no answer
			return
		}
		err := e.step(reqs, woken)
		if h, ok := e.tr.(holder); ok && held > 0 {
			h.Release(held)
		}
		if err != nil {
			e.finish(err)
			return
		}
		if end != nil {
			e.finish(nil) // the client is done sending: the stream ends well
			return
		}
	}
}

// step handles queued requests, then a wake-up.
func (e *Events) step(reqs [][]byte, woken bool) error {
	for _, req := range reqs {
		if e.h == nil {
			if err := e.open(req); err != nil {
				return err
			}
			continue
		}
		e.h.Requested()
		if err := e.sub.handle(e, req); err != nil {
			return err
		}
	}
	if woken && e.h != nil {
		if err := e.h.Woken(); err != nil {
			return err
		}
		return e.sub.push(e)
	}
	return nil
}

// open decodes the first request, opens the stream with its node and
// answers it.
func (e *Events) open(first []byte) error {
	node, err := e.sub.first(first)
	if err != nil {
		return err
	}
	h, err := e.opener.Open(e.tr.Context(), e.api, node, e)
	if err != nil {
		return err
	}
	e.h = h
	return e.sub.handle(e, nil)
}

// finish ends the stream with err (OK for nil).
func (e *Events) finish(err error) {
	e.mu.Lock()
	e.done, e.running = true, false
	e.pending = nil
	e.mu.Unlock()
	if e.h != nil {
		e.h.Closed()
	}
	e.tr.Close(err)
}

// check applies what every request must satisfy: the stream's node, and
// the Secret type (any type on ADS, whose other types are ignored: skip).
func (e *Events) check(node *corev3.Node, typeURL string) (skip bool, err error) {
	if id := node.GetId(); id != "" && id != e.h.NodeID() {
		return false, status.Error(codes.InvalidArgument, "node id cannot change on a stream")
	}
	switch {
	case typeURL == TypeSecret:
		return false, nil
	case e.api.Aggregated():
		return true, nil // another type on ADS: not ours to answer
	case typeURL == "":
		return false, nil
	}
	return false, status.Errorf(codes.InvalidArgument, "meshsds serves only %s, not %q", TypeSecret, typeURL)
}

// CheckType accepts the Secret type, or none on the APIs that are not
// aggregated; it is the check a FetchSecrets request gets.
func CheckType(api API, typeURL string) error {
	if typeURL == TypeSecret || (typeURL == "" && !api.Aggregated()) {
		return nil
	}
	return status.Errorf(codes.InvalidArgument, "meshsds serves only %s, not %q", TypeSecret, typeURL)
}

// subscription is the protocol state of one stream: what it subscribes
// to and what it was sent, for one of the two protocol variants.
type subscription interface {
	// first decodes the stream's first request, keeps it, and returns its
	// node.
	first(raw []byte) (*corev3.Node, error)
	// handle processes a request: raw, or the first one when raw is nil.
	handle(e *Events, raw []byte) error
	// push sends what changed since the last response, if anything.
	push(e *Events) error
}
