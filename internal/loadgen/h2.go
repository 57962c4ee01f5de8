package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The h2 client speaks gRPC as the bytes on the wire define it: HTTP/2
// streams of length-prefixed protobuf messages, status in the trailers. It
// is what the load generator uses by default, because it has to simulate
// ten thousand Envoys on the same two cores as the server it measures: one
// goroutine per connection reads its frames and answers each response
// right there (an ACK is one small write), where grpc-go or net/http keep
// several goroutines per connection and per stream and cost about as much
// CPU as the server. Envoy does not use either. Config.Client selects
// grpc-go instead, for comparison.

const (
	// h2Window is the flow-control window the client grants, per stream
	// and per connection: secrets are small, and the simulated Envoys read
	// everything at once.
	h2Window = 1 << 20
	// h2MaxMessage bounds a response.
	h2MaxMessage = 4 << 20
)

// h2Conn is one data plane's connection.
type h2Conn struct {
	nc        net.Conn
	authority string
	token     string

	// Used by the reading goroutine only.
	fr       *http2.Framer
	unacked  uint32
	readDone chan struct{}

	wmu  sync.Mutex // orders writes
	bw   *bufio.Writer
	wfr  *http2.Framer
	hbuf bytes.Buffer // under wmu, with henc
	henc *hpack.Encoder

	mu         sync.Mutex
	streams    map[uint32]*h2Stream
	nextID     uint32
	sendWindow int64
	peerWindow int64
	maxFrame   uint32
	err        error // set when the connection ended
}

// h2Stream is one gRPC call on an h2Conn. Its callbacks run on the
// connection's reading goroutine, one at a time.
type h2Stream struct {
	c  *h2Conn
	id uint32
	// onMessage receives each message; valid only during the call.
	onMessage func(msg []byte)
	// onEnd is called once, with the call's status (nil for OK).
	onEnd func(err error)

	rbuf       []byte
	unacked    uint32
	gotHeaders bool
	// Under c.mu.
	sendWindow int64
	pending    [][]byte // DATA waiting for window
	ended      bool
}

// dialH2 connects to addr with HTTP/2 prior knowledge.
func dialH2(ctx context.Context, addr, token string) (*h2Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &h2Conn{
		nc: nc, authority: addr, token: token, readDone: make(chan struct{}),
		streams: map[uint32]*h2Stream{}, nextID: 1,
		sendWindow: 65535, peerWindow: 65535, maxFrame: 16384,
	}
	c.bw = bufio.NewWriterSize(nc, 4096)
	c.wfr = http2.NewFramer(c.bw, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(nil, bufio.NewReaderSize(nc, 4096))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 64 << 10
	err = c.writeLocked(func() error {
		if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
		if err := c.wfr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2Window}); err != nil {
			return err
		}
		return c.wfr.WriteWindowUpdate(0, h2Window-65535)
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// writeLocked runs f under the write lock and flushes.
func (c *h2Conn) writeLocked(f func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := f(); err != nil {
		return err
	}
	return c.bw.Flush()
}

// Close closes the connection; its streams end with an error.
func (c *h2Conn) Close() error {
	err := c.nc.Close()
	<-c.readDone
	return err
}

// open starts a call of method ("/package.Service/Method").
func (c *h2Conn) open(method string, onMessage func([]byte), onEnd func(error)) (*h2Stream, error) {
	// Stream ids must reach the server in increasing order: each is taken
	// under the write lock.
	var s *h2Stream
	err := c.writeLocked(func() error {
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return c.err
		}
		s = &h2Stream{c: c, id: c.nextID, onMessage: onMessage, onEnd: onEnd, sendWindow: c.peerWindow}
		c.nextID += 2
		c.streams[s.id] = s
		c.mu.Unlock()
		// Encoded under the write lock, in the order the server decodes:
		// the HPACK table indexes the token, as Envoy's encoder does.
		c.hbuf.Reset()
		for _, f := range [][2]string{
			{":method", "POST"},
			{":scheme", "http"},
			{":path", method},
			{":authority", c.authority},
			{"content-type", "application/grpc"},
			{"te", "trailers"},
		} {
			_ = c.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if c.token != "" {
			_ = c.henc.WriteField(hpack.HeaderField{Name: "authorization", Value: "Bearer " + c.token})
		}
		return c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// send sends m on the stream; it may be called from the stream's callbacks.
// When the server's window is full the message waits for it.
func (s *h2Stream) send(m proto.Message) error {
	b := make([]byte, 5, 5+proto.Size(m))
	b, err := proto.MarshalOptions{}.MarshalAppend(b, m)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5))
	c := s.c
	// Taken and written under the write lock, so that a flush on the
	// reading goroutine cannot put the stream's DATA out of order.
	return c.writeLocked(func() error {
		c.mu.Lock()
		if c.err != nil || s.ended {
			c.mu.Unlock()
			return errors.New("stream ended")
		}
		s.pending = append(s.pending, b)
		c.mu.Unlock()
		return c.writeSendableLocked(s)
	})
}

// takeSendableLocked takes what the windows allow of s's pending data.
func (c *h2Conn) takeSendableLocked(s *h2Stream) [][]byte {
	var out [][]byte
	for len(s.pending) > 0 && s.sendWindow > 0 && c.sendWindow > 0 {
		p := s.pending[0]
		n := min(int64(len(p)), s.sendWindow, c.sendWindow, int64(c.maxFrame))
		out = append(out, p[:n])
		s.sendWindow -= n
		c.sendWindow -= n
		if int(n) == len(p) {
			s.pending = s.pending[1:]
		} else {
			s.pending[0] = p[n:]
		}
	}
	return out
}

// writeSendableLocked writes what the windows allow of s's pending data;
// the write lock must be held.
func (c *h2Conn) writeSendableLocked(s *h2Stream) error {
	c.mu.Lock()
	frames := c.takeSendableLocked(s)
	c.mu.Unlock()
	for _, f := range frames {
		if err := c.wfr.WriteData(s.id, false, f); err != nil {
			return err
		}
	}
	return nil
}

// readLoop reads and handles frames until the connection ends.
func (c *h2Conn) readLoop() {
	defer close(c.readDone)
	err := c.read()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = status.Error(codes.Unavailable, "connection closed")
	}
	c.nc.Close()
	c.mu.Lock()
	c.err = err
	streams := make([]*h2Stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	c.streams = nil
	c.mu.Unlock()
	for _, s := range streams {
		s.end(err)
	}
}

func (c *h2Conn) read() error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			var flush []*h2Stream
			c.mu.Lock()
			_ = f.ForeachSetting(func(s http2.Setting) error {
				switch s.ID {
				case http2.SettingInitialWindowSize:
					delta := int64(s.Val) - c.peerWindow
					c.peerWindow = int64(s.Val)
					for _, st := range c.streams {
						st.sendWindow += delta
						flush = append(flush, st)
					}
				case http2.SettingMaxFrameSize:
					c.maxFrame = s.Val
				}
				return nil
			})
			c.mu.Unlock()
			if err := c.writeLocked(c.wfr.WriteSettingsAck); err != nil {
				return err
			}
			if err := c.flush(flush...); err != nil {
				return err
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := c.writeLocked(func() error { return c.wfr.WritePing(true, f.Data) }); err != nil {
					return err
				}
			}
		case *http2.WindowUpdateFrame:
			var flush []*h2Stream
			c.mu.Lock()
			if f.StreamID == 0 {
				c.sendWindow += int64(f.Increment)
				for _, st := range c.streams {
					flush = append(flush, st)
				}
			} else if st := c.streams[f.StreamID]; st != nil {
				st.sendWindow += int64(f.Increment)
				flush = append(flush, st)
			}
			c.mu.Unlock()
			if err := c.flush(flush...); err != nil {
				return err
			}
		case *http2.MetaHeadersFrame:
			if s := c.stream(f.StreamID); s != nil {
				s.headers(f)
			}
		case *http2.DataFrame:
			if err := c.data(f); err != nil {
				return err
			}
		case *http2.RSTStreamFrame:
			if s := c.stream(f.StreamID); s != nil {
				s.end(status.Errorf(codes.Unavailable, "stream reset by the server: %v", f.ErrCode))
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo {
				return fmt.Errorf("server sent GOAWAY: %v %q", f.ErrCode, f.DebugData())
			}
		}
	}
}

func (c *h2Conn) stream(id uint32) *h2Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[id]
}

// flush sends what the windows now allow of the given streams' data.
func (c *h2Conn) flush(streams ...*h2Stream) error {
	if len(streams) == 0 {
		return nil
	}
	return c.writeLocked(func() error {
		for _, s := range streams {
			if err := c.writeSendableLocked(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// data hands on the messages of a DATA frame and gives the window back.
func (c *h2Conn) data(f *http2.DataFrame) error {
	n := f.Length
	c.unacked += n
	var updates [2]uint32 // connection, stream
	if c.unacked >= h2Window/2 {
		updates[0], c.unacked = c.unacked, 0
	}
	s := c.stream(f.StreamID)
	if s != nil {
		s.unacked += n
		if s.unacked >= h2Window/2 {
			updates[1], s.unacked = s.unacked, 0
		}
	}
	if updates != [2]uint32{} {
		err := c.writeLocked(func() error {
			if updates[0] > 0 {
				if err := c.wfr.WriteWindowUpdate(0, updates[0]); err != nil {
					return err
				}
			}
			if updates[1] > 0 {
				return c.wfr.WriteWindowUpdate(f.StreamID, updates[1])
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if s == nil {
		return nil
	}
	data := f.Data()
	if len(s.rbuf) > 0 {
		s.rbuf = append(s.rbuf, data...)
		data = s.rbuf
	}
	for len(data) >= 5 {
		size := binary.BigEndian.Uint32(data[1:5])
		if data[0] != 0 || size > h2MaxMessage {
			s.end(status.Errorf(codes.Internal, "bad message prefix (compressed %d, %d bytes)", data[0], size))
			return nil
		}
		if len(data) < 5+int(size) {
			break
		}
		s.onMessage(data[5 : 5+size])
		data = data[5+size:]
	}
	s.rbuf = append(s.rbuf[:0], data...)
	return nil
}

// headers handles the response headers, or the trailers and their status.
func (s *h2Stream) headers(f *http2.MetaHeadersFrame) {
	if !s.gotHeaders {
		s.gotHeaders = true
		if st := f.PseudoValue("status"); st != "200" {
			s.end(status.Errorf(codes.Unavailable, "HTTP status %s", st))
			return
		}
	}
	code := ""
	for _, hf := range f.RegularFields() {
		if hf.Name == "grpc-status" {
			code = hf.Value
		}
	}
	if code == "" {
		if f.StreamEnded() {
			s.end(status.Error(codes.Internal, "stream ended without a grpc-status"))
		}
		return
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		s.end(status.Errorf(codes.Internal, "malformed grpc-status %q", code))
		return
	}
	if n == 0 {
		s.end(nil)
		return
	}
	var msg string
	for _, hf := range f.RegularFields() {
		if hf.Name == "grpc-message" {
			msg, _ = url.PathUnescape(hf.Value)
		}
	}
	s.end(status.Error(codes.Code(n), msg))
}

// end ends the stream once.
func (s *h2Stream) end(err error) {
	c := s.c
	c.mu.Lock()
	if s.ended {
		c.mu.Unlock()
		return
	}
	s.ended = true
	if c.streams != nil {
		delete(c.streams, s.id)
	}
	c.mu.Unlock()
	s.onEnd(err)
}
