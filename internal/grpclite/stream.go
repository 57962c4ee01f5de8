package grpclite

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Stream is the server side of one gRPC call.
type Stream struct {
	c      *conn
	id     uint32
	method string
	ctx    context.Context
	cancel context.CancelFunc

	// Used by the connection's reading goroutine only.
	// contentLength is the request's content-length, -1 without; received
	// counts the body against it.
	contentLength, received int64
	maxMsg                  int // the largest message accepted; 0: MaxRecvMsgSize
	events                  StreamEvents
	gen                     *genericStream
	ended                   atomic.Bool // End was delivered
	compressed              atomic.Bool // a compressed message was refused

	// Under c.mu.
	sendWindow int64
	halfClosed bool // the client sent END_STREAM
	done       bool // ended: closed here, reset, or the connection closed
	// What the stream holds of the client's messages, and its receive flow
	// control (see conn.mayReceiveLocked). rbuf is a message that spans
	// DATA frames; the reading goroutine takes it out while it adds to it.
	rbuf        []byte
	partial     int    // cap(rbuf), counted in c.held
	unread      int    // kept unhandled by its handler (Hold), counted in c.held
	recvWindow  int64  // what the client may still send on the stream
	recvUnacked uint32 // received, window not given back yet
	stalled     bool   // denied window until its connection holds less

	// wmu orders the stream's writes: its headers, messages and trailers.
	wmu         sync.Mutex
	headersSent bool
	header      metadata.MD // under wmu
	trailer     metadata.MD // under wmu
}

// Context is the stream's context: the client's metadata and peer. It is
// cancelled when the stream ends.
func (st *Stream) Context() context.Context { return st.ctx }

// Method is the full method name, as grpc.ServerTransportStream has it.
func (st *Stream) Method() string { return st.method }

// SetHeader adds metadata to the response headers not sent yet.
func (st *Stream) SetHeader(md metadata.MD) error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	if st.headersSent {
		return status.Error(codes.Internal, "headers already sent")
	}
	st.header = metadata.Join(st.header, md)
	return nil
}

// SendHeader sends the response headers with md.
func (st *Stream) SendHeader(md metadata.MD) error {
	if err := st.SetHeader(md); err != nil {
		return err
	}
	return st.write(nil, false)
}

// SetTrailer adds metadata to the trailers.
func (st *Stream) SetTrailer(md metadata.MD) error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	st.trailer = metadata.Join(st.trailer, md)
	return nil
}

var _ grpc.ServerTransportStream = (*Stream)(nil)

// Send marshals m and sends it. It waits while the client's flow-control
// window is full, until the stream or connection ends. Calls must not
// overlap, and must not come from StreamEvents methods.
func (st *Stream) Send(m proto.Message) error {
	return st.SendEncoded(func(b []byte) ([]byte, error) {
		return proto.MarshalOptions{}.MarshalAppend(b, m)
	})
}

// SendEncoded sends the message appendMsg appends to b, already in
// protobuf wire form: for callers that encode a hot message by hand. It is
// Send otherwise; nothing is sent when appendMsg fails.
func (st *Stream) SendEncoded(appendMsg func(b []byte) ([]byte, error)) error {
	buf := getBuf()
	defer putBuf(buf)
	b, err := appendMsg(append((*buf)[:0], 0, 0, 0, 0, 0))
	if err != nil {
		return status.Errorf(codes.Internal, "encoding the response: %v", err)
	}
	*buf = b
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5))
	return st.write(b, true)
}

// write sends the headers if they are not sent yet, then msg (a gRPC
// length-prefixed message) in DATA frames as the windows allow.
func (st *Stream) write(msg []byte, isMsg bool) error {
	c := st.c
	st.wmu.Lock()
	defer st.wmu.Unlock()
	out := getBuf()
	defer putBuf(out)
	b := (*out)[:0]
	// The headers count as sent only once a write carrying them went out:
	// a stream ended meanwhile must still get them, with its trailers.
	withHeaders := !st.headersSent
	if withHeaders {
		block := responseHeaders(nil)
		block = appendMD(block, st.header)
		b = appendHeaders(b, st.id, block, false, c.frameSize())
	}
	flush := func() error {
		*out = b
		err := c.write(b)
		if err == nil && withHeaders {
			st.headersSent, withHeaders = true, false
		}
		b = b[:0]
		return err
	}
	if !isMsg {
		return flush()
	}
	c.mu.Lock()
	for len(msg) > 0 {
		for !st.done && !c.closed && (st.sendWindow <= 0 || c.sendWindow <= 0) {
			if len(b) > 0 {
				// Flush what is ready before waiting: the client may be
				// waiting for it to grant more.
				c.mu.Unlock()
				if err := flush(); err != nil {
					return err
				}
				c.mu.Lock()
				continue
			}
			c.cond.Wait()
		}
		if st.done || c.closed {
			c.mu.Unlock()
			return st.endedErr()
		}
		n := int64(len(msg))
		n = min(n, st.sendWindow, c.sendWindow, int64(c.peerFrame))
		st.sendWindow -= n
		c.sendWindow -= n
		b = appendFrameHeader(b, int(n), frameData, 0, st.id)
		b = append(b, msg[:n]...)
		msg = msg[n:]
	}
	c.mu.Unlock()
	return flush()
}

// endedErr is what a send on an ended stream returns.
func (st *Stream) endedErr() error {
	if err := context.Cause(st.ctx); err != nil && status.Code(err) != codes.Unknown {
		return err
	}
	return status.Error(codes.Canceled, "stream ended")
}

// Close ends the stream with err's status (OK for nil), sending the
// trailers, and resets it if the client is still sending. It may be called
// from any goroutine, more than once; only the first call counts.
func (st *Stream) Close(err error) { st.end(err) }

// end is Close, reporting whether this call ended the stream.
func (st *Stream) end(err error) bool {
	c := st.c
	c.mu.Lock()
	if st.done {
		c.mu.Unlock()
		return false
	}
	st.done = true
	halfClosed := st.halfClosed
	updates, closeConn := c.streamEndedLocked(st)
	if !halfClosed {
		c.noteResetLocked(st.id)
	}
	c.mu.Unlock()
	// Cancelled before the status goes out: whoever learns from the client
	// that the stream ended must find it ended here too.
	st.cancel()
	_ = c.writeIf(updates)

	s := status.Convert(err)
	st.wmu.Lock()
	out := getBuf()
	var block []byte
	if !st.headersSent {
		block = responseHeaders(block)
		block = appendMD(block, st.header)
		st.headersSent = true
	}
	block = appendStatusFields(block, uint32(s.Code()), s.Message())
	if st.compressed.Load() {
		block = appendField(block, "grpc-accept-encoding", "identity")
	}
	if p := s.Proto(); len(p.GetDetails()) > 0 {
		if details, err := proto.Marshal(p); err == nil {
			block = appendField(block, "grpc-status-details-bin", base64.RawStdEncoding.EncodeToString(details))
		}
	}
	block = appendMD(block, st.trailer)
	b := appendHeaders((*out)[:0], st.id, block, true, c.frameSize())
	if !halfClosed {
		b = appendRSTStream(b, st.id, errCodeNo)
	}
	*out = b
	_ = c.write(b)
	putBuf(out)
	st.wmu.Unlock()
	if st.gen != nil {
		// A handler still waiting for a message learns the stream is over.
		st.gen.end(status.Error(codes.Canceled, "stream ended"))
	}
	if closeConn {
		c.finishDrain()
	}
	return true
}

// fail ends a stream with err on the transport's initiative (its deadline
// passed, a message was too large or malformed, or the handler's Message
// refused one) and tells the handler, which did not close it itself.
func (st *Stream) fail(err error) {
	if st.end(err) {
		st.deliverEnd(err)
	}
}

// abort ends a stream the client or the connection ended: nothing is
// written, and the handler learns why. It runs on the reading goroutine.
func (st *Stream) abort(err error) {
	c := st.c
	c.mu.Lock()
	if st.done {
		c.mu.Unlock()
		return
	}
	st.done = true
	updates, closeConn := c.streamEndedLocked(st)
	c.mu.Unlock()
	st.cancel()
	_ = c.writeIf(updates)
	st.deliverEnd(err)
	if closeConn {
		c.finishDrain()
	}
}

func (st *Stream) deliverEnd(err error) {
	if st.ended.Swap(true) {
		return
	}
	switch {
	case st.events != nil:
		st.events.End(err)
	case st.gen != nil:
		st.gen.end(err)
	}
}

// receive takes the data of a DATA frame and hands on each complete
// message. An incomplete one is kept in rbuf, which grows with what
// arrives (doubling, but never beyond the message's announced size): what
// a stream holds is what its client sent, not what it announced.
func (st *Stream) receive(data []byte) error {
	c := st.c
	maxSize := c.srv.cfg.MaxRecvMsgSize
	if st.maxMsg > 0 {
		maxSize = st.maxMsg
	}
	c.mu.Lock()
	buf, done := st.rbuf, st.done
	st.rbuf = nil
	c.mu.Unlock()
	if done {
		return nil
	}
	if len(buf) > 0 {
		need := len(buf) + len(data)
		if need > cap(buf) {
			size := max(need, 2*cap(buf))
			if len(buf) >= 5 {
				size = min(size, max(need, 5+int(binary.BigEndian.Uint32(buf[1:5]))))
			}
			buf = append(make([]byte, 0, size), buf...)
		}
		buf = append(buf, data...)
		data = buf
	}
	var err error
	completed := false
	for len(data) >= 5 {
		if data[0] != 0 {
			st.compressed.Store(true) // the trailers say what is accepted
			err = status.Error(codes.Unimplemented, "compressed messages are not supported")
			break
		}
		n := binary.BigEndian.Uint32(data[1:5])
		if int64(n) > int64(maxSize) {
			if st.maxMsg > 0 {
				c.srv.cfg.Metrics.limits.WithLabelValues(LimitUnauthenticatedMessage).Inc()
			}
			err = status.Errorf(codes.ResourceExhausted, "message of %d bytes exceeds the limit of %d", n, maxSize)
			break
		}
		if len(data) < 5+int(n) {
			break
		}
		if err = st.deliver(data[5 : 5+n]); err != nil {
			break
		}
		completed = true
		data = data[5+n:]
	}
	var rest []byte
	switch {
	case err != nil || len(data) == 0:
	case len(buf) > 0 && &data[0] == &buf[0]:
		rest = buf // the incomplete message is at the start of buf already
	default:
		rest = append(make([]byte, 0, len(data)), data...)
	}
	c.mu.Lock()
	var updates []byte
	if !st.done {
		st.rbuf = rest
		updates = c.setPartialLocked(st, cap(rest), completed)
	}
	c.mu.Unlock()
	_ = c.writeIf(updates)
	return err
}

func (st *Stream) deliver(msg []byte) error {
	st.c.mu.Lock()
	done := st.done
	st.c.mu.Unlock()
	if done {
		return nil
	}
	switch {
	case st.events != nil:
		return st.events.Message(msg)
	case st.gen != nil:
		// Held, with its framing (empty messages cost a queue entry),
		// until the handler reads it.
		st.Hold(5 + len(msg))
		st.gen.push(msg)
	}
	return nil
}

// Hold counts n bytes of messages that the stream's handler keeps after
// StreamEvents.Message returned (queued, not yet handled) toward its
// connection's MaxConnBuffered, and holds the stream's flow-control window
// back until Release has given them all back, as for the messages of a
// RegisterService handler, which grpc-go gives window for only as they
// are read: a client that does not wait for answers cannot make the
// handler queue more than was in flight. Call it from Message; Release
// from any goroutine. Both do nothing once the stream has ended, which
// releases what it held.
func (st *Stream) Hold(n int) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.done || n <= 0 {
		return
	}
	st.unread += n
	c.unread += n
	c.held += n
}

// Release gives back n bytes counted by Hold, and the window this frees.
func (st *Stream) Release(n int) {
	c := st.c
	c.mu.Lock()
	n = min(n, st.unread)
	if st.done || n <= 0 {
		c.mu.Unlock()
		return
	}
	st.unread -= n
	c.unread -= n
	c.held -= n
	updates := c.grantLocked(nil, st)
	updates = c.unstallLocked(updates)
	c.mu.Unlock()
	_ = c.writeIf(updates)
}

// appendMD appends metadata as header fields; binary values are base64.
func appendMD(b []byte, md metadata.MD) []byte {
	for k, vs := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			b = appendField(b, k, v)
		}
	}
	return b
}

// genericStream runs a method of a registered service in a goroutine of
// its own, as grpc-go does: it is the grpc.ServerStream the generated
// handlers expect.
type genericStream struct {
	st *Stream

	mu    sync.Mutex
	cond  sync.Cond
	queue [][]byte // what the handler has not read: at most a window's worth and a message (Stream.deliver)
	ended error    // io.EOF after the last message
}

func newGenericStream(st *Stream) *genericStream {
	g := &genericStream{st: st}
	g.cond.L = &g.mu
	return g
}

func (g *genericStream) run(m *method) {
	st := g.st
	var err error
	defer func() {
		if r := recover(); r != nil {
			st.c.srv.cfg.Logger.Error("handler panicked", "method", st.method, "panic", fmt.Sprint(r))
			err = status.Error(codes.Internal, "handler panicked")
		}
		st.Close(err)
	}()
	if m.unary != nil {
		var resp any
		resp, err = m.unary.Handler(m.impl, st.ctx, g.RecvMsg, nil)
		if err == nil {
			err = g.SendMsg(resp)
		}
		return
	}
	err = m.stream.Handler(m.impl, g)
}

func (g *genericStream) push(msg []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended != nil {
		return // the stream ended meanwhile
	}
	g.queue = append(g.queue, append([]byte(nil), msg...))
	g.cond.Signal()
}

// end tells the handler that no message follows: after those queued when
// err is io.EOF, at once otherwise (the stream is gone).
func (g *genericStream) end(err error) {
	g.mu.Lock()
	if g.ended == nil {
		g.ended = err
	}
	if !errors.Is(err, io.EOF) {
		g.queue = nil
	}
	g.cond.Broadcast()
	g.mu.Unlock()
}

// SetHeader implements grpc.ServerStream.
func (g *genericStream) SetHeader(md metadata.MD) error { return g.st.SetHeader(md) }

// SendHeader implements grpc.ServerStream.
func (g *genericStream) SendHeader(md metadata.MD) error { return g.st.SendHeader(md) }

// SetTrailer implements grpc.ServerStream.
func (g *genericStream) SetTrailer(md metadata.MD) { _ = g.st.SetTrailer(md) }

// Context implements grpc.ServerStream.
func (g *genericStream) Context() context.Context { return g.st.ctx }

// SendMsg implements grpc.ServerStream.
func (g *genericStream) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "cannot marshal %T", m)
	}
	return g.st.Send(pm)
}

// RecvMsg implements grpc.ServerStream: io.EOF after the client's last
// message.
func (g *genericStream) RecvMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "cannot unmarshal into %T", m)
	}
	g.mu.Lock()
	for len(g.queue) == 0 && g.ended == nil {
		g.cond.Wait()
	}
	if len(g.queue) == 0 {
		err := g.ended
		g.mu.Unlock()
		return err
	}
	msg := g.queue[0]
	g.queue[0] = nil
	g.queue = g.queue[1:]
	g.mu.Unlock()
	g.st.Release(5 + len(msg))
	if err := proto.Unmarshal(msg, pm); err != nil {
		return status.Errorf(codes.Internal, "unmarshalling the request: %v", err)
	}
	return nil
}
