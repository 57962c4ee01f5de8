package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The h2 client speaks gRPC as the bytes on the wire define it: HTTP/2
// streams of length-prefixed protobuf messages, status in the trailers, on
// net/http's own HTTP/2 client connections. It is what the load generator
// uses by default, because a simulated fleet of ten thousand grpc-go
// ClientConns (each with a resolver, a balancer, channelz traces and their
// goroutines) costs about as much CPU as the server it measures, on the same
// two cores. Envoy does not use grpc-go either. Config.Client selects grpc-go
// instead, for comparison.

// h2Transport makes the connections, plain-text HTTP/2 only; its pool is
// not used.
var h2Transport = func() *http.Transport {
	t := &http.Transport{DisableCompression: true, Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}()

// h2Conn is one data plane's connection.
type h2Conn struct {
	cc    *http.ClientConn
	addr  string
	token string
}

func dialH2(ctx context.Context, addr, token string) (*h2Conn, error) {
	cc, err := h2Transport.NewClientConn(ctx, "http", addr)
	if err != nil {
		return nil, err
	}
	return &h2Conn{cc: cc, addr: addr, token: token}, nil
}

func (c *h2Conn) Close() error { return c.cc.Close() }

// h2Stream is a bidirectional gRPC stream of Req and Resp messages.
type h2Stream[Req, Resp proto.Message] struct {
	ctx  context.Context
	conn *h2Conn
	path string
	body *msgBody

	open sync.Once
	resp *http.Response
	err  error
	buf  []byte
}

// newH2Stream prepares a stream of method (e.g.
// "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"). It is
// opened by the first Recv, which must come after the first Send: a gRPC
// server answers the request headers only with its first message.
func newH2Stream[Req, Resp proto.Message](ctx context.Context, conn *h2Conn, method string) *h2Stream[Req, Resp] {
	return &h2Stream[Req, Resp]{ctx: ctx, conn: conn, path: method, body: &msgBody{ch: make(chan []byte, 4), done: ctx.Done()}}
}

// Send queues m on the stream.
func (s *h2Stream[Req, Resp]) Send(m Req) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	frame := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(b)))
	copy(frame[5:], b)
	select {
	case s.body.ch <- frame:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// Recv returns the next message; at the end of the stream, the status the
// server ended it with as a gRPC status error (io.EOF for OK).
func (s *h2Stream[Req, Resp]) Recv() (Resp, error) {
	var zero Resp
	s.open.Do(func() {
		req := &http.Request{
			Method: http.MethodPost,
			URL:    &url.URL{Scheme: "http", Host: s.conn.addr, Path: s.path},
			Host:   s.conn.addr,
			Header: http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}},
			Body:   s.body,
		}
		if s.conn.token != "" {
			req.Header.Set("Authorization", "Bearer "+s.conn.token)
		}
		req = req.WithContext(s.ctx)
		s.resp, s.err = s.conn.cc.RoundTrip(req)
		if s.err == nil {
			if st := grpcStatus(s.resp.Header); st != nil { // trailers only
				s.resp.Body.Close()
				s.err = st
			}
		}
	})
	if s.err != nil {
		return zero, s.err
	}
	var hdr [5]byte
	if _, err := io.ReadFull(s.resp.Body, hdr[:]); err != nil {
		return zero, s.end(err)
	}
	if hdr[0] != 0 {
		return zero, s.fail(errors.New("compressed message"))
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > 4<<20 {
		return zero, s.fail(fmt.Errorf("message of %d bytes", n))
	}
	if cap(s.buf) < int(n) {
		s.buf = make([]byte, n)
	}
	if _, err := io.ReadFull(s.resp.Body, s.buf[:n]); err != nil {
		return zero, s.end(err)
	}
	m := zero.ProtoReflect().New().Interface().(Resp)
	if err := proto.Unmarshal(s.buf[:n], m); err != nil {
		return zero, s.fail(err)
	}
	return m, nil
}

// end turns the end of the response body into the stream's status.
func (s *h2Stream[Req, Resp]) end(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		s.resp.Body.Close()
		if st := grpcStatus(s.resp.Trailer); st != nil {
			s.err = st
		} else {
			s.err = io.EOF
		}
		return s.err
	}
	return s.fail(err)
}

func (s *h2Stream[Req, Resp]) fail(err error) error {
	s.resp.Body.Close()
	s.err = err
	return err
}

// grpcStatus is the status in h, nil when there is none; OK is io.EOF.
func grpcStatus(h http.Header) error {
	v := h.Get("Grpc-Status")
	if v == "" {
		return nil
	}
	code, err := strconv.Atoi(v)
	if err != nil {
		return status.Errorf(codes.Internal, "malformed grpc-status %q", v)
	}
	if code == 0 {
		return io.EOF
	}
	msg, _ := url.PathUnescape(h.Get("Grpc-Message"))
	return status.Error(codes.Code(code), msg)
}

// msgBody is a request body fed message by message.
type msgBody struct {
	ch   chan []byte
	cur  []byte
	done <-chan struct{}
}

func (b *msgBody) Read(p []byte) (int, error) {
	for len(b.cur) == 0 {
		select {
		case m := <-b.ch:
			b.cur = m
		case <-b.done:
			return 0, io.EOF
		}
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	return n, nil
}

func (b *msgBody) Close() error { return nil }
