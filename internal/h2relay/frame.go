// Package h2relay is an HTTP/2 intermediary for gRPC: it terminates a
// client's HTTP/2 connection and relays every stream to a backend HTTP/2
// server (the proxy's gRPC handlers), frame by frame. A backend handler may
// splice a stream: from then on the stream's DATA goes straight between the
// client connection and an upstream HTTP/2 connection the relay dials, as
// the DATA payloads that arrived, without reassembling gRPC messages. That
// splice is the proxy's fast path for Flight DoGet and DoPut: one copy in
// the kernel each way and none in user space while windows are open.
//
// Flow control is terminated at the relay on every connection: a peer's
// window is credited only once the relay delivered what it sent, so a slow
// receiver slows its sender and the relay holds at most one window per
// stream and connection.
package h2relay

import (
	"encoding/binary"
	"errors"
	"fmt"
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

	settingHeaderTableSize   = 0x1
	settingEnablePush        = 0x2
	settingMaxConcurrent     = 0x3
	settingInitialWindowSize = 0x4
	settingMaxFrameSize      = 0x5
	settingMaxHeaderListSize = 0x6

	// Error codes (RFC 9113 section 7).
	errCodeNo            = 0x0
	errCodeProtocol      = 0x1
	errCodeInternal      = 0x2
	errCodeFlowControl   = 0x3
	errCodeStreamClosed  = 0x5
	errCodeFrameSize     = 0x6
	errCodeRefusedStream = 0x7
	errCodeCancel        = 0x8

	frameHeaderLen  = 9
	defaultMaxFrame = 16384
	defaultWindow   = 65535
	maxWindow       = 1<<31 - 1
	// maxHeaderBlock bounds one header block (HEADERS plus CONTINUATION):
	// gRPC metadata is small; this keeps a hostile peer from growing it.
	maxHeaderBlock = 1 << 20
)

const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frameHeader is the 9-byte header every frame starts with.
type frameHeader struct {
	length   uint32
	typ      byte
	flags    byte
	streamID uint32
}

func parseFrameHeader(b []byte) frameHeader {
	return frameHeader{
		length:   uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:      b[3],
		flags:    b[4],
		streamID: binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1),
	}
}

func appendFrameHeader(b []byte, length int, typ, flags byte, streamID uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), typ, flags,
		byte(streamID>>24), byte(streamID>>16), byte(streamID>>8), byte(streamID))
}

// connError is a connection error: the relay sends GOAWAY with code and
// closes the connection.
type connError struct {
	code uint32
	msg  string
}

func (e *connError) Error() string {
	return fmt.Sprintf("http2 connection error %d: %s", e.code, e.msg)
}

func protoErr(format string, args ...any) error {
	return &connError{code: errCodeProtocol, msg: fmt.Sprintf(format, args...)}
}

// ErrClosed reports a use of a connection or stream after it closed.
var ErrClosed = errors.New("h2relay: connection closed")

// trimPadding removes the padding of a padded DATA or HEADERS payload.
func trimPadding(fh frameHeader, p []byte) ([]byte, error) {
	if fh.flags&flagPadded == 0 {
		return p, nil
	}
	if len(p) < 1 {
		return nil, protoErr("padded frame without pad length")
	}
	pad := int(p[0])
	p = p[1:]
	if pad > len(p) {
		return nil, protoErr("padding of %d bytes longer than the frame", pad)
	}
	return p[:len(p)-pad], nil
}

// Each connection's read buffer starts small, so idle connections cost
// little, and doubles while reads fill it, up to maxReadBuffer: large
// reads mean few syscalls, and DATA payloads go on from it without a copy.
const (
	minReadBuffer = 64 << 10
	maxReadBuffer = 1 << 20
)
