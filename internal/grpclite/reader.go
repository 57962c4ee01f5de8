package grpclite

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// Read buffers: small ones for the frames of every day (requests, ACKs,
// window updates), large ones for frames up to the largest size we accept.
// During a storm thousands of connections read at once: small buffers keep
// the garbage it leaves small.
const (
	smallReadBuf = 4 << 10
	largeReadBuf = 2*defaultFrameSize + 2*frameHeaderLen
)

var (
	smallReadBufs = sync.Pool{New: func() any { b := make([]byte, smallReadBuf); return &b }}
	largeReadBufs = sync.Pool{New: func() any { b := make([]byte, largeReadBuf); return &b }}
)

func putReadBuf(b *[]byte) {
	if len(*b) == largeReadBuf {
		largeReadBufs.Put(b)
		return
	}
	smallReadBufs.Put(b)
}

// frameReader reads a connection's bytes for its frames. An idle
// connection holds no read buffer: on a plain socket the reader waits for
// data with the runtime's poller and then reads whatever has arrived,
// often several frames, in one system call into a pooled buffer, which it
// gives back once everything in it is handled. Over TLS it first reads a
// few bytes into a small array of its own.
type frameReader struct {
	nc  net.Conn
	raw syscall.RawConn // nil when nc is not a plain socket

	buf        *[]byte // pooled; nil while nothing is unconsumed
	start, end int     // unconsumed bytes are (*buf)[start:end]
	small      [16]byte
}

func newFrameReader(nc net.Conn) *frameReader {
	r := &frameReader{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	return r
}

// peek returns the next n unconsumed bytes, reading until there are that
// many. They stay valid until the next peek or consume.
func (r *frameReader) peek(n int) ([]byte, error) {
	for r.end-r.start < n {
		if err := r.fill(n); err != nil {
			return nil, err
		}
	}
	return (*r.buf)[r.start : r.start+n], nil
}

// consume drops n peeked bytes; the buffer goes back to the pool when
// nothing is left in it.
func (r *frameReader) consume(n int) {
	r.start += n
	if r.start == r.end && r.buf != nil {
		putReadBuf(r.buf)
		r.buf, r.start, r.end = nil, 0, 0
	}
}

// fill reads more, making room for n unconsumed bytes.
func (r *frameReader) fill(n int) error {
	if n > largeReadBuf {
		return errors.New("frame larger than the read buffer")
	}
	if r.buf == nil {
		return r.fillIdle()
	}
	b := *r.buf
	if n > len(b) {
		// A frame larger than the small buffer: move to a large one.
		large := largeReadBufs.Get().(*[]byte)
		r.end = copy(*large, b[r.start:r.end])
		r.start = 0
		putReadBuf(r.buf)
		r.buf = large
		b = *large
	}
	if len(b)-r.start < n {
		// Move what is left to the front to make room.
		r.end = copy(b, b[r.start:r.end])
		r.start = 0
	}
	m, err := r.read(b[r.end:])
	r.end += m
	return err
}

// fillIdle waits for data while holding no buffer, then reads it.
func (r *frameReader) fillIdle() error {
	if r.raw == nil {
		m, err := r.nc.Read(r.small[:])
		if m > 0 {
			r.buf = smallReadBufs.Get().(*[]byte)
			r.start, r.end = 0, copy(*r.buf, r.small[:m])
		}
		if m == 0 && err == nil {
			return nil
		}
		return err
	}
	var (
		got  *[]byte
		m    int
		rerr error
	)
	err := r.raw.Read(func(fd uintptr) bool {
		b := smallReadBufs.Get().(*[]byte)
		m, rerr = readFD(fd, *b)
		if errors.Is(rerr, syscall.EAGAIN) {
			smallReadBufs.Put(b)
			return false // wait until readable, with no buffer held
		}
		got = b
		return true
	})
	if err == nil {
		err = rerr
	}
	if got != nil && m > 0 {
		r.buf, r.start, r.end = got, 0, m
		return nil
	}
	if got != nil {
		smallReadBufs.Put(got)
	}
	if err == nil {
		err = io.EOF
	}
	return err
}

// read reads into p, which is part of the held buffer.
func (r *frameReader) read(p []byte) (int, error) {
	if r.raw == nil {
		return r.nc.Read(p)
	}
	var (
		m    int
		rerr error
	)
	err := r.raw.Read(func(fd uintptr) bool {
		m, rerr = readFD(fd, p)
		return !errors.Is(rerr, syscall.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err == nil && m == 0 {
		err = io.EOF
	}
	return m, err
}

// readFD reads from a non-blocking socket, retrying interruptions.
func readFD(fd uintptr, p []byte) (int, error) {
	for {
		m, err := syscall.Read(int(fd), p)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if m < 0 {
			m = 0
		}
		return m, err
	}
}

// idle reports whether nothing read is left unconsumed.
func (r *frameReader) idle() bool { return r.buf == nil }

// release gives the buffer back when the connection ends.
func (r *frameReader) release() {
	if r.buf != nil {
		putReadBuf(r.buf)
		r.buf = nil
	}
}
