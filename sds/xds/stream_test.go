package xds

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

// holdingStream is a transport stream that counts what the protocol holds
// (as grpclite.Stream does) and records how it was closed.
type holdingStream struct {
	mu     sync.Mutex
	held   int
	closed chan error
}

var (
	_ Stream = (*holdingStream)(nil)
	_ holder = (*holdingStream)(nil)
)

func (s *holdingStream) Context() context.Context { return context.Background() }

func (s *holdingStream) SendEncoded(appendMsg func(b []byte) ([]byte, error)) error {
	_, err := appendMsg(nil)
	return err
}

func (s *holdingStream) Close(err error) { s.closed <- err }

func (s *holdingStream) Hold(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held += n
}

func (s *holdingStream) Release(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held -= n
}

func (s *holdingStream) holding() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// gateOpener opens streams once the test opens its gate.
type gateOpener struct {
	entered chan struct{}
	gate    chan struct{}
}

func (o *gateOpener) Open(context.Context, API, *corev3.Node, Control) (Handler, error) {
	close(o.entered)
	<-o.gate
	return nopHandler{}, nil
}

// nopHandler serves nothing.
type nopHandler struct{}

func (nopHandler) NodeID() string                                  { return "node" }
func (nopHandler) Subscribe(_, _ []string)                         {}
func (nopHandler) Resource(string) (Resource, Availability, error) { return Resource{}, Unknown, nil }
func (nopHandler) Failed(error)                                    {}
func (nopHandler) Sent([]string)                                   {}
func (nopHandler) Held(Tag)                                        {}
func (nopHandler) Requested()                                      {}
func (nopHandler) Acked(string, *rpcstatus.Status)                 {}
func (nopHandler) Woken() error                                    { return nil }
func (nopHandler) Closed()                                         {}

// TestEventsHoldQueuedRequests: the requests a stream has queued and not
// handled yet are held at its transport (which holds the stream's
// flow-control window back meanwhile), and released once handled.
func TestEventsHoldQueuedRequests(t *testing.T) {
	tr := &holdingStream{closed: make(chan error, 1)}
	o := &gateOpener{entered: make(chan struct{}), gate: make(chan struct{})}
	e := NewEvents(SotW, tr, o)
	request := func(names ...string) []byte {
		b, err := proto.Marshal(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "node"}, TypeUrl: TypeSecret, ResourceNames: names})
		require.NoError(t, err)
		return b
	}
	first, second, third := request(), request("a"), request("a", "b")
	require.NoError(t, e.Message(first))
	select {
	case <-o.entered: // the stream's goroutine waits in Open
	case <-time.After(5 * time.Second):
		t.Fatal("Open was not called")
	}
	require.NoError(t, e.Message(second))
	require.NoError(t, e.Message(third))
	require.Equal(t, len(first)+len(second)+len(third), tr.holding(), "every queued request is held")

	close(o.gate)
	require.Eventually(t, func() bool { return tr.holding() == 0 }, 5*time.Second, time.Millisecond, "handled requests are released")
	e.End(io.EOF)
	select {
	case err := <-tr.closed:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the stream was not closed")
	}
}
