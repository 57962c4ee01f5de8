package grpclite

import (
	"encoding/binary"
	"strconv"
	"sync"
)

// HTTP/2 frame types and flags (RFC 9113 section 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// HTTP/2 error codes (RFC 9113 section 7).
const (
	errCodeNo                 = 0x0
	errCodeProtocol           = 0x1
	errCodeInternal           = 0x2
	errCodeFlowControl        = 0x3
	errCodeStreamClosed       = 0x5
	errCodeFrameSize          = 0x6
	errCodeRefusedStream      = 0x7
	errCodeCancel             = 0x8
	errCodeCompression        = 0x9
	errCodeEnhanceYourCalm    = 0xb
	errCodeInadequateSecurity = 0xc
)

// HTTP/2 settings (RFC 9113 section 6.5.2).
const (
	settingHeaderTableSize      = 0x1
	settingEnablePush           = 0x2
	settingMaxConcurrentStreams = 0x3
	settingInitialWindowSize    = 0x4
	settingMaxFrameSize         = 0x5
	settingMaxHeaderListSize    = 0x6
)

const (
	clientPreface     = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	frameHeaderLen    = 9
	defaultWindow     = 65535
	defaultFrameSize  = 16384
	maxFrameSizeLimit = 1<<24 - 1
	maxWindow         = 1<<31 - 1
	// maxHeaderBlock bounds a request's header block across its
	// CONTINUATION frames, which are read whole.
	maxHeaderBlock = 64 << 10
	// windowUpdateAt is how much received data is acknowledged at once.
	windowUpdateAt = defaultWindow / 4
)

// appendFrameHeader appends the 9-byte header of a frame.
func appendFrameHeader(b []byte, length int, typ, flags byte, streamID uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), typ, flags,
		byte(streamID>>24)&0x7f, byte(streamID>>16), byte(streamID>>8), byte(streamID))
}

func appendWindowUpdate(b []byte, streamID uint32, n uint32) []byte {
	b = appendFrameHeader(b, 4, frameWindowUpdate, 0, streamID)
	return binary.BigEndian.AppendUint32(b, n)
}

func appendRSTStream(b []byte, streamID, code uint32) []byte {
	b = appendFrameHeader(b, 4, frameRSTStream, 0, streamID)
	return binary.BigEndian.AppendUint32(b, code)
}

func appendGoAway(b []byte, lastStreamID, code uint32, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), frameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lastStreamID)
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, debug...)
}

// tableSizeZero is an HPACK dynamic table size update to 0 (RFC 7541
// section 6.3). Every header block starts with it: the server never uses
// the dynamic table, and so honours at once any SETTINGS_HEADER_TABLE_SIZE
// a client sends, down to 0, which its decoder may require to be signalled
// in the first block after the change (section 4.2).
const tableSizeZero = 0x20

// appendHeaders appends a HEADERS frame holding block (after a table size
// update), followed by CONTINUATION frames when it is larger than maxFrame.
func appendHeaders(b []byte, streamID uint32, block []byte, endStream bool, maxFrame int) []byte {
	typ, flags := byte(frameHeaders), byte(0)
	if endStream {
		flags |= flagEndStream
	}
	prefix := 1 // the table size update, in the first frame
	for {
		n := min(len(block)+prefix, maxFrame)
		if n == len(block)+prefix {
			flags |= flagEndHeaders
		}
		b = appendFrameHeader(b, n, typ, flags, streamID)
		if prefix == 1 {
			b = append(b, tableSizeZero)
		}
		b = append(b, block[:n-prefix]...)
		block = block[n-prefix:]
		prefix = 0
		if len(block) == 0 && flags&flagEndHeaders != 0 {
			return b
		}
		typ, flags = frameContinuation, 0
	}
}

// The response headers are encoded without HPACK's dynamic table, so a
// connection keeps no encoder state: ":status: 200" is entry 8 of the
// static table, everything else a literal field without indexing.
const statusOK = 0x88

func appendHPACKInt(b []byte, prefixBits uint, first byte, v uint64) []byte {
	limit := uint64(1)<<prefixBits - 1
	if v < limit {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(limit))
	v -= limit
	for v >= 128 {
		b = append(b, byte(v&0x7f|0x80))
		v >>= 7
	}
	return append(b, byte(v))
}

func appendHPACKString(b []byte, s string) []byte {
	b = appendHPACKInt(b, 7, 0, uint64(len(s)))
	return append(b, s...)
}

// appendField appends a literal header field without indexing and with a
// literal name (RFC 7541 section 6.2.2).
func appendField(b []byte, name, value string) []byte {
	b = append(b, 0)
	b = appendHPACKString(b, name)
	return appendHPACKString(b, value)
}

// appendStatusFields appends grpc-status and, for an error, grpc-message,
// percent-encoded as gRPC's HTTP/2 protocol asks and cut to a sane length.
func appendStatusFields(b []byte, code uint32, msg string) []byte {
	b = appendField(b, "grpc-status", strconv.FormatUint(uint64(code), 10))
	if msg == "" {
		return b
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	return appendField(b, "grpc-message", encodeGRPCMessage(msg))
}

// encodeGRPCMessage percent-encodes the bytes outside printable ASCII and
// the percent sign itself.
func encodeGRPCMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg) && clean; i++ {
		clean = msg[i] >= ' ' && msg[i] <= '~' && msg[i] != '%'
	}
	if clean {
		return msg
	}
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(msg)+16)
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			out = append(out, c)
			continue
		}
		out = append(out, '%', hex[c>>4], hex[c&0xf])
	}
	return string(out)
}

// bufPool holds the buffers frames are built and read in, so that an idle
// connection holds none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // an outsized message: let it go
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}
