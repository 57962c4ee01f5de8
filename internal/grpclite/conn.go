package grpclite

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

var (
	errServerStopped    = status.Error(codes.Unavailable, "server stopped")
	errConnClosed       = status.Error(codes.Unavailable, "connection closed")
	errKeepaliveTimeout = errors.New("keepalive ping not answered")
	errWriteTimeout     = errors.New("the client stopped reading: write timed out")
	errUnauthenticated  = errors.New("no stream authenticated the connection in time")
)

// connError is an HTTP/2 connection error: the connection is closed after
// a GOAWAY carrying code.
type connError struct {
	code uint32
	msg  string
}

func (e *connError) Error() string { return fmt.Sprintf("http2 error %#x: %s", e.code, e.msg) }

func protocolError(format string, args ...any) error {
	return &connError{errCodeProtocol, fmt.Sprintf(format, args...)}
}

// conn is one client connection. Its goroutine (serve) reads and handles
// frames; any goroutine may write, one write at a time under wmu.
type conn struct {
	srv *Server
	nc  net.Conn
	ctx context.Context // carries the peer; parent of every stream's

	// Used by the reading goroutine only.
	r           *frameReader
	dec         *hpack.Decoder
	fields      []hpack.HeaderField
	fieldsSize  uint32
	block       []byte // a header block awaiting CONTINUATION frames
	blockStream uint32
	blockEnd    bool // the HEADERS frame of block ended the stream
	maxStreamID uint32
	recvUnacked uint32 // connection-level data not yet given back
	recvWindow  int64  // what the client may still send on the connection
	calm        calmBudget
	lastRead    atomic.Int64

	mu          sync.Mutex
	cond        sync.Cond // on mu: a send window grew or a stream ended
	streams     map[uint32]*Stream
	sendWindow  int64
	peerWindow  int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame   int   // the client's SETTINGS_MAX_FRAME_SIZE
	closed      bool
	closeErr    error
	started     bool // the handshake and the preface are done
	draining    bool
	drained     bool // draining, and the last stream ended
	pingPending bool
	keepalive   *time.Timer
	// authenticated: a stream passed Authorize (see Config); until then
	// authTimer closes the connection at UnauthenticatedTimeout.
	authenticated bool
	authTimer     *time.Timer
	// reset are the streams the server reset while the client was still
	// sending, most recent last: DATA still in flight on them is dropped,
	// while DATA on any other closed stream is a STREAM_CLOSED error.
	reset  [16]uint32
	nreset int
	// What the streams hold of the client's messages (see
	// mayReceiveLocked): held counts their incomplete messages and the
	// messages their handlers keep unhandled (Stream.Hold), unread the
	// latter. stalled streams were denied window until held shrinks;
	// leader is the one stream that may complete its message while held
	// is past MaxConnBuffered.
	held, unread int
	stalled      int
	leader       *Stream

	wmu sync.Mutex
}

func newConn(s *Server, nc net.Conn) *conn {
	if s.cfg.TLS != nil {
		// Wrapped before anyone else can write to it: a GOAWAY of a
		// graceful stop must not go out in clear text.
		nc = tls.Server(nc, s.cfg.TLS)
	}
	c := &conn{
		srv: s, nc: nc, r: newFrameReader(nc), streams: map[uint32]*Stream{},
		sendWindow: defaultWindow, peerWindow: defaultWindow, peerFrame: defaultFrameSize, recvWindow: defaultWindow,
	}
	c.cond.L = &c.mu
	return c
}

// serve runs the connection until it closes.
func (c *conn) serve() {
	defer c.srv.removeConn(c)
	metrics := c.srv.cfg.Metrics
	metrics.conns.Inc()
	defer metrics.conns.Dec()
	err := c.start()
	started := err == nil
	if started {
		err = c.frames()
	}
	c.mu.Lock()
	if c.drained {
		err = errServerStopped // however the client then went
	}
	c.mu.Unlock()
	c.r.release()
	var ce *connError
	if errors.As(err, &ce) {
		c.srv.cfg.Logger.Debug("closing connection", "peer", c.nc.RemoteAddr().String(), "err", err)
		buf := getBuf()
		*buf = appendGoAway(*buf, c.lastStreamID(), ce.code, ce.msg)
		if c.write(*buf) == nil {
			c.lingerAfterGoAway()
		}
		putBuf(buf)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = errConnClosed
	}
	c.close(err)
	// The streams end here, on the reading goroutine, however the
	// connection closed: their events never run concurrently.
	c.mu.Lock()
	err = c.closeErr
	metrics.closed.WithLabelValues(closeReason(err, started)).Inc()
	streams := make([]*Stream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	c.mu.Unlock()
	if status.Code(err) == codes.Unknown {
		err = status.Error(codes.Unavailable, err.Error())
	}
	for _, st := range streams {
		st.abort(err)
	}
}

// lingerAfterGoAway lets the client read the GOAWAY that explains why its
// connection ends: closed with unread data from the client still queued, a
// socket is reset, and a reset may destroy the GOAWAY before the client
// reads it. So the server stops writing, then reads and drops what the
// client still sends, for at most a second.
func (c *conn) lingerAfterGoAway() {
	if !c.closeWrite() {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	var sink [4096]byte
	for {
		if _, err := c.nc.Read(sink[:]); err != nil {
			return
		}
	}
}

// closeWrite ends the server's side of the connection (TCP FIN, or TLS
// close_notify and FIN), reporting whether it could.
func (c *conn) closeWrite() bool {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	return ok && cw.CloseWrite() == nil
}

func (c *conn) lastStreamID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxStreamID
}

// start runs the TLS handshake if any, reads the client preface and sends
// the server's settings.
func (c *conn) start() error {
	cfg := &c.srv.cfg
	_ = c.nc.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
	p := &peer.Peer{Addr: c.nc.RemoteAddr(), LocalAddr: c.nc.LocalAddr()}
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		state := tc.ConnectionState()
		if state.NegotiatedProtocol != "h2" {
			// Not an HTTP/2 client: nothing of HTTP/2 (no GOAWAY, which
			// would come before the SETTINGS) is written; the handshake
			// failed.
			return errors.New("TLS without ALPN h2: not an HTTP/2 client")
		}
		p.AuthInfo = credentials.TLSInfo{State: state, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
	}
	c.ctx = peer.NewContext(context.Background(), p)

	preface, err := c.r.peek(len(clientPreface))
	if err != nil {
		return fmt.Errorf("reading the client preface: %w", err)
	}
	if string(preface) != clientPreface {
		return errors.New("not an HTTP/2 client preface (is the client speaking HTTP/1 or TLS?)")
	}
	c.r.consume(len(clientPreface))
	_ = c.nc.SetDeadline(time.Time{})
	buf := getBuf()
	b := appendFrameHeader(*buf, 3*6, frameSettings, 0, 0)
	b = binary.BigEndian.AppendUint16(b, settingMaxConcurrentStreams)
	b = binary.BigEndian.AppendUint32(b, cfg.MaxConcurrentStreams)
	b = binary.BigEndian.AppendUint16(b, settingMaxHeaderListSize)
	b = binary.BigEndian.AppendUint32(b, maxHeaderBlock)
	b = binary.BigEndian.AppendUint16(b, settingHeaderTableSize)
	b = binary.BigEndian.AppendUint32(b, 4096)
	*buf = b
	err = c.write(b)
	putBuf(buf)
	if err != nil {
		return err
	}
	c.dec = hpack.NewDecoder(4096, nil)
	c.dec.SetMaxStringLength(maxHeaderBlock)
	c.dec.SetEmitFunc(func(f hpack.HeaderField) {
		// The decoded size counts, not the compressed one: a block of
		// one-byte references to a large table entry decodes to far more
		// than it weighs. Fields beyond the limit are decoded (the HPACK
		// table must stay in step) but not kept.
		c.fieldsSize += f.Size()
		if c.fieldsSize <= maxHeaderBlock {
			c.fields = append(c.fields, f)
		}
	})
	c.lastRead.Store(time.Now().UnixNano())
	c.mu.Lock()
	if !c.closed {
		c.keepalive = time.AfterFunc(cfg.KeepaliveTime, c.keepaliveTick)
		c.authTimer = time.AfterFunc(cfg.UnauthenticatedTimeout, c.authTimeout)
	}
	c.started = true
	c.mu.Unlock()
	return nil
}

// authenticate marks the connection authenticated: its deadline goes.
func (c *conn) authenticate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authenticated {
		return
	}
	c.authenticated = true
	if c.authTimer != nil {
		c.authTimer.Stop()
		c.authTimer = nil
	}
}

// authTimeout closes a connection that has not authenticated in time: a
// client that never sends a credential must not hold a connection, and
// what its streams buffer, for long.
func (c *conn) authTimeout() {
	c.mu.Lock()
	if c.authenticated || c.closed {
		c.mu.Unlock()
		return
	}
	last := c.maxStreamID
	c.mu.Unlock()
	buf := getBuf()
	*buf = appendGoAway(*buf, last, errCodeNo, "no authenticated stream")
	_ = c.write(*buf)
	putBuf(buf)
	c.close(errUnauthenticated)
}

// frames reads and handles frames until the connection ends. It is what an
// idle connection's goroutine waits in, so that it waits with a shallow
// stack: the waiting starts here, not under the frame handlers.
func (c *conn) frames() error {
	for {
		if c.r.idle() {
			if err := c.r.fillIdle(); err != nil {
				return err
			}
		}
		if err := c.readFrame(); err != nil {
			return err
		}
	}
}

func tlsWithH2(cfg *tls.Config) *tls.Config {
	for _, p := range cfg.NextProtos {
		if p == "h2" {
			return cfg
		}
	}
	cfg = cfg.Clone()
	cfg.NextProtos = append([]string{"h2"}, cfg.NextProtos...)
	return cfg
}

// readFrame reads one frame into a pooled buffer and handles it.
func (c *conn) readFrame() error {
	h, err := c.r.peek(frameHeaderLen)
	if err != nil {
		return err
	}
	c.lastRead.Store(time.Now().UnixNano())
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags := h[3], h[4]
	id := binary.BigEndian.Uint32(h[5:]) & 0x7fffffff
	if length > defaultFrameSize {
		return &connError{errCodeFrameSize, fmt.Sprintf("frame of %d bytes", length)}
	}
	frame, err := c.r.peek(frameHeaderLen + length)
	if err != nil {
		return err
	}
	defer c.r.consume(frameHeaderLen + length)
	payload := frame[frameHeaderLen:]
	if c.block != nil && (typ != frameContinuation || id != c.blockStream) {
		return protocolError("expected CONTINUATION of stream %d", c.blockStream)
	}
	if typ == frameRSTStream || (typ == framePing || typ == frameSettings) && flags&flagAck == 0 {
		if !c.calm.take(time.Now()) {
			return &connError{errCodeEnhanceYourCalm, "too many resets, pings or settings"}
		}
	}
	switch typ {
	case frameData:
		return c.onData(id, flags, payload)
	case frameHeaders:
		return c.onHeaders(id, flags, payload)
	case framePriority:
		if length != 5 {
			return &connError{errCodeFrameSize, "PRIORITY frame size"}
		}
		if id == 0 {
			return protocolError("PRIORITY on stream 0")
		}
		if binary.BigEndian.Uint32(payload)&0x7fffffff == id {
			return c.resetStream(id, errCodeProtocol, "a stream cannot depend on itself")
		}
	case frameRSTStream:
		if length != 4 {
			return &connError{errCodeFrameSize, "RST_STREAM frame size"}
		}
		if id == 0 {
			return protocolError("RST_STREAM on stream 0")
		}
		if c.idle(id) {
			return protocolError("RST_STREAM on idle stream %d", id)
		}
		c.onReset(id, binary.BigEndian.Uint32(payload))
	case frameSettings:
		return c.onSettings(id, flags, payload)
	case framePushPromise:
		return protocolError("a client cannot push")
	case framePing:
		if length != 8 {
			return &connError{errCodeFrameSize, "PING frame size"}
		}
		if id != 0 {
			return protocolError("PING on a stream")
		}
		return c.onPing(flags, payload)
	case frameGoAway:
		// The client will open no more streams; those open go on until it
		// closes the connection.
		if id != 0 {
			return protocolError("GOAWAY on a stream")
		}
	case frameWindowUpdate:
		if length != 4 {
			return &connError{errCodeFrameSize, "WINDOW_UPDATE frame size"}
		}
		if id != 0 && c.idle(id) {
			return protocolError("WINDOW_UPDATE on idle stream %d", id)
		}
		return c.onWindowUpdate(id, binary.BigEndian.Uint32(payload)&0x7fffffff)
	case frameContinuation:
		if c.block == nil {
			return protocolError("CONTINUATION without HEADERS")
		}
		if len(c.block)+len(payload) > maxHeaderBlock {
			return &connError{errCodeEnhanceYourCalm, "header block too large"}
		}
		c.block = append(c.block, payload...)
		if flags&flagEndHeaders != 0 {
			block, end := c.block, c.blockEnd
			c.block = nil
			return c.onHeaderBlock(id, block, end)
		}
	}
	return nil // frames of unknown types are ignored
}

// idle reports whether stream id was never opened by the client (RFC 9113
// section 5.1: only HEADERS and PRIORITY may name an idle stream).
func (c *conn) idle(id uint32) bool {
	if c.block != nil && id == c.blockStream {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return id > c.maxStreamID
}

// resetStream ends stream id with an RST_STREAM of code (a stream error),
// telling its handler why.
func (c *conn) resetStream(id, code uint32, why string) error {
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil {
		st.abort(status.Error(codes.Internal, why))
	}
	return c.writeReset(id, code)
}

// calmBudget bounds the frames a client may send that cost the server work
// and move nothing forward: stream resets (the "rapid reset" attack opens
// and cancels streams as fast as it can), pings and settings. A client may
// send a burst of calmBurst and calmRate per second after that; beyond, its
// connection is closed with ENHANCE_YOUR_CALM. Envoy and gRPC clients send
// a handful per minute.
type calmBudget struct {
	tokens float64
	last   time.Time
}

const (
	calmBurst = 1000
	calmRate  = 100
)

func (b *calmBudget) take(now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = calmBurst
	} else {
		b.tokens = min(calmBurst, b.tokens+now.Sub(b.last).Seconds()*calmRate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// unpad strips the padding of a DATA or HEADERS payload.
func unpad(flags byte, p []byte) ([]byte, error) {
	if flags&flagPadded == 0 {
		return p, nil
	}
	if len(p) == 0 || int(p[0]) >= len(p) {
		return nil, protocolError("padding longer than the frame")
	}
	return p[1 : len(p)-int(p[0])], nil
}

func (c *conn) onHeaders(id uint32, flags byte, p []byte) error {
	if id == 0 {
		return protocolError("HEADERS on stream 0")
	}
	p, err := unpad(flags, p)
	if err != nil {
		return err
	}
	selfDependent := false
	if flags&flagPriority != 0 {
		if len(p) < 5 {
			return &connError{errCodeFrameSize, "HEADERS priority"}
		}
		selfDependent = binary.BigEndian.Uint32(p)&0x7fffffff == id
		p = p[5:]
	}
	if selfDependent {
		// Decoded all the same: the HPACK table must stay in step.
		if err := c.decodeBlock(p); err != nil {
			return err
		}
		c.fields = nil
		if id > c.maxStreamID {
			c.mu.Lock()
			c.maxStreamID = id
			c.mu.Unlock()
		}
		return c.resetStream(id, errCodeProtocol, "a stream cannot depend on itself")
	}
	end := flags&flagEndStream != 0
	if flags&flagEndHeaders == 0 {
		c.block = append(make([]byte, 0, 2*len(p)), p...)
		c.blockStream, c.blockEnd = id, end
		return nil
	}
	return c.onHeaderBlock(id, p, end)
}

// decodeBlock decodes a header block into c.fields (the first
// maxHeaderBlock bytes of fields; c.fieldsSize counts them all).
func (c *conn) decodeBlock(block []byte) error {
	c.fields, c.fieldsSize = c.fields[:0], 0
	if _, err := c.dec.Write(block); err != nil {
		return &connError{errCodeCompression, err.Error()}
	}
	if err := c.dec.Close(); err != nil {
		return &connError{errCodeCompression, err.Error()}
	}
	return nil
}

// onHeaderBlock decodes a complete header block: a new stream, or the
// trailers of an open one.
func (c *conn) onHeaderBlock(id uint32, block []byte, endStream bool) error {
	if err := c.decodeBlock(block); err != nil {
		return err
	}
	fields, tooLarge := c.fields, c.fieldsSize > maxHeaderBlock
	c.fields = nil // the stream may keep them through its metadata

	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil || id <= c.maxStreamID {
		if st == nil {
			// RFC 9113 section 5.1.1: a new stream's id must be greater
			// than every earlier one; and HEADERS on the stream that just
			// closed is a STREAM_CLOSED connection error (section 5.1).
			if id < c.maxStreamID {
				return protocolError("stream id %d is not greater than %d", id, c.maxStreamID)
			}
			return &connError{errCodeStreamClosed, fmt.Sprintf("HEADERS on closed stream %d", id)}
		}
		// Trailers of a request: they must end it, and carry no
		// pseudo-header.
		if !endStream {
			return protocolError("second HEADERS without END_STREAM on stream %d", id)
		}
		if st.halfClosed {
			st.abort(status.Error(codes.Internal, "HEADERS after the end of the request"))
			return c.writeReset(id, errCodeStreamClosed)
		}
		for _, f := range fields {
			if strings.HasPrefix(f.Name, ":") || !validFieldName(f.Name) {
				st.abort(status.Error(codes.Internal, "malformed trailers"))
				return c.writeReset(id, errCodeProtocol)
			}
		}
		c.halfClose(st)
		return nil
	}
	if id%2 == 0 {
		return protocolError("client stream id %d is even", id)
	}
	c.mu.Lock()
	c.maxStreamID = id
	refused := c.draining || len(c.streams) >= int(c.srv.cfg.MaxConcurrentStreams)
	c.mu.Unlock()
	if refused {
		return c.writeReset(id, errCodeRefusedStream)
	}
	if tooLarge {
		return c.writeTrailersOnly(id, endStream, codes.ResourceExhausted, "request headers larger than 64 KiB")
	}
	return c.open(id, fields, endStream)
}

// validFieldName reports whether name is a lowercase HTTP/2 field name
// (RFC 9113 section 8.2.1), pseudo-header names aside.
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch >= 'A' && ch <= 'Z' || ch <= ' ' || ch >= 0x7f || ch == ':' && i > 0 {
			return false
		}
	}
	return true
}

// connectionSpecific are the fields HTTP/2 forbids (RFC 9113 section
// 8.2.2).
var connectionSpecific = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
}

// open starts stream id of the request in fields.
func (c *conn) open(id uint32, fields []hpack.HeaderField, endStream bool) error {
	var (
		path, method, scheme, contentType, timeout string
		md                                         = metadata.MD{}
		regular                                    bool // a regular field was seen
		seen                                       = map[string]bool{}
		contentLength                              = int64(-1)
	)
	malformed := func() error { return c.writeReset(id, errCodeProtocol) }
	for _, f := range fields {
		if strings.HasPrefix(f.Name, ":") {
			// Pseudo-headers: each once, all before the regular fields,
			// and only a request's (RFC 9113 section 8.3).
			if regular || seen[f.Name] {
				return malformed()
			}
			seen[f.Name] = true
		} else {
			regular = true
			if !validFieldName(f.Name) || connectionSpecific[f.Name] {
				return malformed()
			}
		}
		switch f.Name {
		case ":path":
			path = f.Value
		case ":method":
			method = f.Value
		case ":scheme":
			scheme = f.Value
		case ":authority":
			md[":authority"] = []string{f.Value}
		case "content-type":
			contentType = f.Value
		case "grpc-timeout":
			timeout = f.Value
		case "content-length":
			n, err := strconv.ParseInt(f.Value, 10, 64)
			if err != nil || n < 0 || contentLength >= 0 {
				return malformed()
			}
			contentLength = n
		case "te":
			if f.Value != "trailers" {
				return malformed()
			}
		case "grpc-encoding", "grpc-accept-encoding":
		default:
			if strings.HasPrefix(f.Name, ":") {
				return malformed() // :status, :protocol or unknown
			}
			v := f.Value
			if strings.HasSuffix(f.Name, "-bin") {
				b, err := decodeBin(v)
				if err != nil {
					return c.writeTrailersOnly(id, endStream, codes.Internal, "malformed binary metadata "+f.Name)
				}
				v = string(b)
			}
			md[f.Name] = append(md[f.Name], v)
		}
	}
	if method == "" || path == "" || scheme == "" {
		return malformed()
	}
	if method != "POST" {
		return c.writeHTTPStatus(id, endStream, "405", "allow", "POST")
	}
	if contentType != "application/grpc" && !strings.HasPrefix(contentType, "application/grpc+") && !strings.HasPrefix(contentType, "application/grpc;") {
		return c.writeHTTPStatus(id, endStream, "415")
	}
	m := c.srv.methods[path]
	if m == nil || (m.events == nil && m.unary == nil && m.stream == nil) {
		return c.writeTrailersOnly(id, endStream, codes.Unimplemented, "unknown method "+path)
	}
	maxMsg := 0 // the server's MaxRecvMsgSize
	if c.srv.public[path] {
		c.mu.Lock()
		authenticated, open := c.authenticated, len(c.streams)
		c.mu.Unlock()
		if !authenticated {
			if open >= maxUnauthStreams {
				c.srv.cfg.Metrics.limits.WithLabelValues(LimitUnauthenticatedStreams).Inc()
				return c.writeReset(id, errCodeRefusedStream)
			}
			maxMsg = maxUnauthMessage
		}
	} else {
		if az := c.srv.cfg.Authorize; az != nil {
			if err := az(metadata.NewIncomingContext(c.ctx, md), path); err != nil {
				c.srv.cfg.Metrics.limits.WithLabelValues(LimitUnauthorized).Inc()
				s := status.Convert(err)
				return c.writeTrailersOnly(id, endStream, s.Code(), s.Message())
			}
		}
		c.authenticate()
	}

	ctx, cancel := context.WithCancel(metadata.NewIncomingContext(c.ctx, md))
	if timeout != "" {
		d, err := parseTimeout(timeout)
		if err != nil {
			cancel()
			return c.writeTrailersOnly(id, endStream, codes.Internal, "malformed grpc-timeout")
		}
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithTimeout(ctx, d)
		cancelParent := cancel
		cancel = func() { cancelDeadline(); cancelParent() }
	}
	if endStream && contentLength > 0 {
		cancel()
		return malformed() // content-length says a body follows
	}
	st := &Stream{c: c, id: id, method: path, halfClosed: endStream, maxMsg: maxMsg, recvWindow: defaultWindow, contentLength: contentLength}
	st.ctx = grpc.NewContextWithServerTransportStream(ctx, st)
	st.cancel = cancel
	c.mu.Lock()
	st.sendWindow = c.peerWindow
	c.mu.Unlock()
	// The handler opens before the stream is registered, so that nothing
	// but the handler can reach it meanwhile; it may close it at once.
	if m.events != nil {
		st.events = m.events(st)
	} else {
		st.gen = newGenericStream(st)
	}
	c.mu.Lock()
	if c.closed || st.done {
		c.mu.Unlock()
		cancel()
		return nil
	}
	c.streams[id] = st
	c.mu.Unlock()
	if st.gen != nil {
		go st.gen.run(m)
	}
	if timeout != "" {
		context.AfterFunc(ctx, func() {
			if ctx.Err() == context.DeadlineExceeded {
				st.fail(status.Error(codes.DeadlineExceeded, "deadline exceeded"))
			}
		})
	}
	if endStream {
		st.deliverEnd(io.EOF)
	}
	return nil
}

func decodeBin(v string) ([]byte, error) {
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// parseTimeout parses a grpc-timeout value: at most 8 digits and a unit.
func parseTimeout(s string) (time.Duration, error) {
	if len(s) < 2 || len(s) > 9 {
		return 0, errors.New("bad length")
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, err
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, errors.New("bad unit")
	}
	if n > uint64(math.MaxInt64/unit) {
		return math.MaxInt64, nil // hours beyond what a Duration holds: no deadline to speak of
	}
	return time.Duration(n) * unit, nil
}

func (c *conn) onData(id uint32, flags byte, p []byte) error {
	if id == 0 {
		return protocolError("DATA on stream 0")
	}
	// Flow control counts the whole payload, padding included. The
	// connection's window is given back as data arrives: what the server
	// holds is bounded by its streams' windows, which come back only as
	// mayReceiveLocked allows. A client that sends beyond a window it was
	// given would have the server buffer without bound: that is a
	// connection error.
	if int64(len(p)) > c.recvWindow {
		return &connError{errCodeFlowControl, "DATA beyond the connection's flow-control window"}
	}
	c.recvWindow -= int64(len(p))
	c.recvUnacked += uint32(len(p))
	var out []byte
	if c.recvUnacked >= windowUpdateAt {
		out = appendWindowUpdate(out, 0, c.recvUnacked)
		c.recvWindow += int64(c.recvUnacked)
		c.recvUnacked = 0
	}
	if err := c.writeIf(out); err != nil {
		return err
	}
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st == nil {
		if id > c.maxStreamID {
			return protocolError("DATA on idle stream %d", id)
		}
		if c.resetHere(id) {
			return nil // in flight when the server reset the stream
		}
		return c.writeReset(id, errCodeStreamClosed)
	}
	if st.halfClosed {
		st.abort(status.Error(codes.Internal, "DATA after the end of the request"))
		return c.writeReset(id, errCodeStreamClosed)
	}
	c.mu.Lock()
	beyond := int64(len(p)) > st.recvWindow
	st.recvWindow -= int64(len(p))
	st.recvUnacked += uint32(len(p))
	c.mu.Unlock()
	if beyond {
		return &connError{errCodeFlowControl, fmt.Sprintf("DATA beyond the flow-control window of stream %d", id)}
	}
	data, err := unpad(flags, p)
	if err != nil {
		return err
	}
	if st.contentLength >= 0 {
		st.received += int64(len(data))
		if st.received > st.contentLength || flags&flagEndStream != 0 && st.received != st.contentLength {
			st.abort(status.Error(codes.Internal, "the body does not match content-length"))
			return c.writeReset(id, errCodeProtocol)
		}
	}
	if flags&flagEndStream != 0 {
		// Recorded before the data is handed on: a handler that answers
		// the last message at once must not reset a stream the client
		// has ended already (RFC 9113 section 8.1).
		c.mu.Lock()
		st.halfClosed = true
		c.mu.Unlock()
	}
	if err := st.receive(data); err != nil {
		st.fail(err)
		return nil
	}
	if flags&flagEndStream != 0 {
		c.halfClose(st)
		return nil
	}
	c.mu.Lock()
	out = c.grantLocked(nil, st)
	c.mu.Unlock()
	return c.writeIf(out)
}

// mayReceiveLocked reports whether the client may send st more now, that
// is whether st gets its window back. This is what bounds what a
// connection holds, and what keeps it from deadlocking:
//
//   - A stream whose handler has messages still to handle (Stream.Hold: a
//     RegisterService handler's unread messages) waits until it has
//     handled them, as in grpc-go.
//   - Otherwise a stream may receive while its connection holds at most
//     MaxConnBuffered, or while it holds nothing itself.
//   - Beyond that, one stream at a time, the leader, may go on until its
//     message completes, so that messages larger than the bound, or many
//     at once, still go through in turn; a well-behaved client finishes
//     each message it starts. A new leader is chosen only while handlers
//     have left at most MaxConnBuffered unread, since their reading is
//     what frees the rest.
//
// So a connection holds at most MaxConnBuffered, a message of
// MaxRecvMsgSize (its leader's) and a stream window per stream: what its
// streams were allowed before they were stopped.
func (c *conn) mayReceiveLocked(st *Stream) bool {
	limit := c.srv.cfg.MaxConnBuffered
	switch {
	case st.unread > 0:
		return false
	case st.partial == 0 || c.held <= limit || c.leader == st:
		return true
	case c.leader == nil && c.unread <= limit:
		c.leader = st
		return true
	}
	return false
}

// grantLocked appends the WINDOW_UPDATE st is due, if any: in batches of
// windowUpdateAt as data arrives while mayReceiveLocked allows it, and
// what it is owed when it may receive again after a stall.
func (c *conn) grantLocked(b []byte, st *Stream) []byte {
	if st.done || st.halfClosed || st.recvUnacked == 0 {
		return b
	}
	if !c.mayReceiveLocked(st) {
		if !st.stalled {
			st.stalled = true
			c.stalled++
			if st.unread == 0 {
				c.srv.cfg.Metrics.limits.WithLabelValues(LimitConnBuffered).Inc()
			}
		}
		return b
	}
	if st.stalled {
		st.stalled = false
		c.stalled--
	}
	// Below the threshold the client still has most of its window: a
	// WINDOW_UPDATE now would cost a write per request (a held SDS request
	// is released after every one) and unblock nothing.
	if st.recvUnacked < windowUpdateAt {
		return b
	}
	b = appendWindowUpdate(b, st.id, st.recvUnacked)
	st.recvWindow += int64(st.recvUnacked)
	st.recvUnacked = 0
	return b
}

// unstallLocked appends the WINDOW_UPDATEs of stalled streams that may
// receive again. It runs whenever held or unread shrinks, or a leader's
// turn ends.
func (c *conn) unstallLocked(b []byte) []byte {
	if c.stalled == 0 || c.closed {
		return b
	}
	for _, st := range c.streams {
		if st.stalled {
			b = c.grantLocked(b, st)
		}
	}
	return b
}

// setPartialLocked records that st holds n bytes (the capacity of its
// buffer) of an incomplete message; completed, the leader's message ends
// its turn. It appends the WINDOW_UPDATEs this frees.
func (c *conn) setPartialLocked(st *Stream, n int, completed bool) []byte {
	freed := n < st.partial
	c.held += n - st.partial
	st.partial = n
	if c.leader == st && (completed || n == 0) {
		c.leader = nil
		freed = true
	}
	if !freed {
		return nil
	}
	return c.unstallLocked(nil)
}

// releaseLocked forgets what an ended stream held, and appends the
// WINDOW_UPDATEs this frees.
func (c *conn) releaseLocked(st *Stream) []byte {
	c.held -= st.partial + st.unread
	c.unread -= st.unread
	st.partial, st.unread, st.rbuf = 0, 0, nil
	if st.stalled {
		st.stalled = false
		c.stalled--
	}
	if c.leader == st {
		c.leader = nil
	}
	return c.unstallLocked(nil)
}

// halfClose marks the end of what the client sends on st.
func (c *conn) halfClose(st *Stream) {
	c.mu.Lock()
	st.halfClosed = true
	if st.stalled {
		st.stalled = false // it needs no more window
		c.stalled--
	}
	partial := st.partial > 0
	c.mu.Unlock()
	if partial {
		st.fail(status.Error(codes.Internal, "stream ended inside a message"))
		return
	}
	st.deliverEnd(io.EOF)
}

func (c *conn) onReset(id uint32, code uint32) {
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil {
		st.abort(status.Errorf(codes.Canceled, "stream reset by the client (code %#x)", code))
	}
}

func (c *conn) onSettings(id uint32, flags byte, p []byte) error {
	if id != 0 {
		return protocolError("SETTINGS on a stream")
	}
	if flags&flagAck != 0 {
		if len(p) != 0 {
			return &connError{errCodeFrameSize, "SETTINGS ACK with a payload"}
		}
		return nil
	}
	if len(p)%6 != 0 {
		return &connError{errCodeFrameSize, "SETTINGS frame size"}
	}
	for ; len(p) > 0; p = p[6:] {
		v := binary.BigEndian.Uint32(p[2:])
		switch binary.BigEndian.Uint16(p) {
		case settingEnablePush:
			if v > 1 {
				return protocolError("ENABLE_PUSH of %d", v)
			}
		case settingInitialWindowSize:
			if v > maxWindow {
				return &connError{errCodeFlowControl, "initial window size too large"}
			}
			c.mu.Lock()
			delta := int64(v) - c.peerWindow
			c.peerWindow = int64(v)
			for _, st := range c.streams {
				if st.sendWindow+delta > maxWindow {
					c.mu.Unlock()
					return &connError{errCodeFlowControl, "a stream's window overflows"}
				}
				st.sendWindow += delta
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		case settingMaxFrameSize:
			if v < defaultFrameSize || v > maxFrameSizeLimit {
				return protocolError("max frame size %d", v)
			}
			c.mu.Lock()
			c.peerFrame = int(v)
			c.mu.Unlock()
		}
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendFrameHeader(*buf, 0, frameSettings, flagAck, 0)
	return c.write(*buf)
}

func (c *conn) onPing(flags byte, p []byte) error {
	if flags&flagAck != 0 {
		c.mu.Lock()
		if c.pingPending && c.keepalive != nil {
			c.pingPending = false
			c.keepalive.Reset(c.srv.cfg.KeepaliveTime)
		}
		c.mu.Unlock()
		return nil
	}
	buf := getBuf()
	defer putBuf(buf)
	b := appendFrameHeader(*buf, 8, framePing, flagAck, 0)
	*buf = append(b, p...)
	return c.write(*buf)
}

func (c *conn) onWindowUpdate(id, n uint32) error {
	if n == 0 {
		if id == 0 {
			return protocolError("WINDOW_UPDATE of 0")
		}
		c.mu.Lock()
		st := c.streams[id]
		c.mu.Unlock()
		if st != nil {
			st.abort(status.Error(codes.Internal, "WINDOW_UPDATE of 0"))
		}
		return c.writeReset(id, errCodeProtocol)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 {
		if c.sendWindow+int64(n) > maxWindow {
			return &connError{errCodeFlowControl, "connection window overflow"}
		}
		c.sendWindow += int64(n)
	} else if st := c.streams[id]; st != nil {
		if st.sendWindow+int64(n) > maxWindow {
			c.mu.Unlock()
			err := c.resetStream(id, errCodeFlowControl, "stream window overflow")
			c.mu.Lock()
			return err
		}
		st.sendWindow += int64(n)
	}
	c.cond.Broadcast()
	return nil
}

// keepaliveTick pings a connection that has been silent for KeepaliveTime
// and closes it when the previous ping went unanswered.
func (c *conn) keepaliveTick() {
	cfg := &c.srv.cfg
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.pingPending {
		c.mu.Unlock()
		c.close(errKeepaliveTimeout)
		return
	}
	if idle := time.Since(time.Unix(0, c.lastRead.Load())); idle < cfg.KeepaliveTime {
		c.keepalive.Reset(cfg.KeepaliveTime - idle)
		c.mu.Unlock()
		return
	}
	c.pingPending = true
	c.keepalive.Reset(cfg.KeepaliveTimeout)
	c.mu.Unlock()
	buf := getBuf()
	defer putBuf(buf)
	b := appendFrameHeader(*buf, 8, framePing, 0, 0)
	*buf = append(b, "meshsds!"...)
	_ = c.write(*buf)
}

// drain sends GOAWAY and closes the connection once its streams end.
func (c *conn) drain() {
	c.mu.Lock()
	if c.closed || c.draining {
		c.mu.Unlock()
		return
	}
	c.draining = true
	last, empty, started := c.maxStreamID, len(c.streams) == 0, c.started
	c.mu.Unlock()
	if !started {
		// Still in its handshake: a GOAWAY must not come before the
		// server's SETTINGS. It has no streams to lose.
		c.close(errServerStopped)
		return
	}
	buf := getBuf()
	*buf = appendGoAway(*buf, last, errCodeNo, "server shutting down")
	_ = c.write(*buf)
	putBuf(buf)
	if empty {
		c.finishDrain()
	}
}

// finishDrain ends a draining connection whose last stream ended. Closed
// at once with the client's data unread, the socket would be reset and the
// client could lose the last trailers and the GOAWAY; so the server stops
// writing, and the reading goroutine reads on until the client closes, for
// at most a second.
func (c *conn) finishDrain() {
	c.mu.Lock()
	c.drained = true
	if c.keepalive != nil {
		c.keepalive.Stop() // nothing more is written
	}
	c.mu.Unlock()
	if !c.closeWrite() {
		c.close(errServerStopped)
		return
	}
	if c.nc.SetReadDeadline(time.Now().Add(time.Second)) != nil {
		c.close(errServerStopped)
	}
}

// close closes the connection (once) and records why; the reading
// goroutine then ends its streams.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.closeErr = true, err
	if c.keepalive != nil {
		c.keepalive.Stop()
	}
	if c.authTimer != nil {
		c.authTimer.Stop()
	}
	for _, st := range c.streams {
		st.cancel() // a handler waiting on the context stops now
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	// The reading goroutine ends the streams. A TLS connection is closed
	// underneath: its close_notify could wait seconds on a client that
	// does not read.
	if tc, ok := c.nc.(*tls.Conn); ok {
		tc.NetConn().Close()
	} else {
		c.nc.Close()
	}
	if !errors.Is(err, errConnClosed) && !errors.Is(err, errServerStopped) {
		c.srv.cfg.Logger.Debug("connection closed", "peer", c.nc.RemoteAddr().String(), "err", err)
	}
}

// resetHere reports whether the server reset stream id (recently) while
// the client was still sending.
func (c *conn) resetHere(id uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range min(c.nreset, len(c.reset)) {
		if c.reset[i] == id {
			return true
		}
	}
	return false
}

// noteResetLocked remembers that the server reset stream id while the
// client was still sending.
func (c *conn) noteResetLocked(id uint32) {
	c.reset[c.nreset%len(c.reset)] = id
	c.nreset++
}

// streamEndedLocked forgets a stream and what it held, and reports whether
// it was the last of a draining connection, which then closes. It returns
// the WINDOW_UPDATEs of the streams that may receive again now.
func (c *conn) streamEndedLocked(st *Stream) (updates []byte, closeNow bool) {
	delete(c.streams, st.id)
	updates = c.releaseLocked(st)
	c.cond.Broadcast()
	return updates, c.draining && len(c.streams) == 0
}

// write writes b whole, or closes the connection.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	_, err := c.nc.Write(b)
	c.wmu.Unlock()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errWriteTimeout
		}
		c.close(fmt.Errorf("writing: %w", err))
		return errConnClosed
	}
	return nil
}

func (c *conn) writeIf(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return c.write(b)
}

func (c *conn) writeReset(id, code uint32) error {
	c.mu.Lock()
	c.noteResetLocked(id)
	c.mu.Unlock()
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendRSTStream(*buf, id, code)
	return c.write(*buf)
}

// writeTrailersOnly refuses a stream that never opened with a status. A
// client still sending (clientDone false) is told to stop with
// RST_STREAM NO_ERROR (RFC 9113 section 8.1).
func (c *conn) writeTrailersOnly(id uint32, clientDone bool, code codes.Code, msg string) error {
	buf := getBuf()
	defer putBuf(buf)
	block := responseHeaders(nil)
	block = appendStatusFields(block, uint32(code), msg)
	if code == codes.Unimplemented {
		block = appendField(block, "grpc-accept-encoding", "identity")
	}
	b := appendHeaders(*buf, id, block, true, c.frameSize())
	if !clientDone {
		b = appendRSTStream(b, id, errCodeNo)
		c.mu.Lock()
		c.noteResetLocked(id)
		c.mu.Unlock()
	}
	*buf = b
	return c.write(*buf)
}

// frameSize is the largest frame the client accepts.
func (c *conn) frameSize() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerFrame
}

// writeHTTPStatus answers a request that is not gRPC with an HTTP status
// and the fields of kv (name, value pairs), as grpc-go does.
func (c *conn) writeHTTPStatus(id uint32, clientDone bool, code string, kv ...string) error {
	buf := getBuf()
	defer putBuf(buf)
	block := appendField(nil, ":status", code)
	for i := 0; i+1 < len(kv); i += 2 {
		block = appendField(block, kv[i], kv[i+1])
	}
	b := appendHeaders(*buf, id, block, true, defaultFrameSize)
	if !clientDone {
		b = appendRSTStream(b, id, errCodeNo)
		c.mu.Lock()
		c.noteResetLocked(id)
		c.mu.Unlock()
	}
	*buf = b
	return c.write(*buf)
}

// responseHeaders appends the fields of a gRPC response's HEADERS.
func responseHeaders(b []byte) []byte {
	b = append(b, statusOK)
	return appendField(b, "content-type", "application/grpc")
}
