package xds

import (
	"context"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// Stream is one gRPC stream as the protocol uses it, whatever the
// transport. The protocol calls it from one goroutine at a time per stream.
type Stream interface {
	// Context carries the client's metadata and peer, and ends with the
	// stream.
	Context() context.Context
	// SendEncoded sends one message, which appendMsg appends to b. It may
	// wait for flow control; it fails once the stream is gone.
	SendEncoded(appendMsg func(b []byte) ([]byte, error)) error
	// Close ends the stream with err's gRPC status, OK when nil. Later
	// calls do nothing.
	Close(err error)
}

// Control is how the server acts on an open stream from outside the
// protocol: both methods may be called from any goroutine, never block, and
// do nothing once the stream has ended.
type Control interface {
	// Wake tells the stream that a resource it subscribes to may have
	// changed; the stream asks its Handler again and pushes what changed.
	Wake()
	// Close ends the stream with err (a status error), as when its
	// credential expires or the server shuts down.
	Close(err error)
}

// Opener opens the server side of streams. Open is called once per stream,
// with the node of its first request, on the stream's work goroutine (it may
// block, e.g. until the serving state is ready; ctx ends with the stream);
// many streams open at once. It authenticates the stream and returns the
// Handler the stream uses until it ends, or a status error that refuses it.
// ctl stays valid for the stream's life.
type Opener interface {
	Open(ctx context.Context, api API, node *corev3.Node, ctl Control) (Handler, error)
}

// Handler is the server's side of one open stream: it serves resources from
// the serving state and is told what the protocol did. The stream calls it
// from one goroutine at a time; Wake and Close of the stream's Control may
// run concurrently with it.
type Handler interface {
	// NodeID is the node id the stream was opened as; a request naming
	// another ends the stream.
	NodeID() string
	// Subscribe is told the names the stream subscribes to now, sorted
	// (unknown names included), and which of them are new; the Handler
	// keeps neither slice.
	Subscribe(names, added []string)
	Resourcer
	// Failed is told of a failure that is not the client's (a certificate
	// could not be issued or serialized): the stream stays up and asks
	// again on the next wake-up.
	Failed(err error)
	// Sent is told that a response carrying names was written.
	Sent(names []string)
	// Held is told what the data plane holds now: the merged tags of the
	// response it ACKed, or of what it announced holding when it
	// connected.
	Held(t Tag)
	// Requested is told each request after the first; Acked each ACK
	// (nack nil) or NACK of the latest response, with the version the
	// data plane reported.
	Requested()
	Acked(version string, nack *rpcstatus.Status)
	// Woken is called before a push caused by a wake-up; an error ends
	// the stream with it (a revoked credential).
	Woken() error
	// Closed is told that the stream ended, once.
	Closed()
}

// Resourcer reads resources from the serving state.
type Resourcer interface {
	// Resource returns the current resource called name and whether it can
	// be served. It may wait for work such as issuing a certificate.
	Resource(name string) (r Resource, a Availability, err error)
}

// Availability says whether a resource can be served now.
type Availability uint8

// Availabilities.
const (
	// Unknown is a name that is never answered.
	Unknown Availability = iota
	// Pending is a name that is served, but not yet (a mesh without a CA
	// yet): a state-of-the-world response waits for it, so that it is
	// never partial.
	Pending
	// Available can be sent.
	Available
)

// Tag is what an ACK of a resource confirms to the serving state, in slots
// the state chooses (the trust bundle's version, the signing CA's version):
// the tags of a response merge slot by slot, a later non-empty value winning.
// The protocol never looks inside.
type Tag [2]string

// With merges o into t.
func (t Tag) With(o Tag) Tag {
	for i, v := range o {
		if v != "" {
			t[i] = v
		}
	}
	return t
}

// Resource is one resource as a stream serves it now.
type Resource struct {
	Version string
	Tag     Tag
	// Any is the serialized resource when it is built already (shared by
	// every stream); otherwise Body builds it, only when it is sent.
	Any  *anypb.Any
	Body Body
}

// Body builds a resource on demand.
type Body interface {
	Build(name string) (*anypb.Any, error)
}

// Build returns the serialized resource called name.
func (r *Resource) Build(name string) (*anypb.Any, error) {
	if r.Any != nil {
		return r.Any, nil
	}
	return r.Body.Build(name)
}
