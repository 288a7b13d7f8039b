package flightproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// defaultMaxHeld caps the descriptor and IPC header bytes a msgScanner holds
// for one message. Real headers are a few hundred bytes (a few hundred KiB
// for tables of many thousand columns); a message past the cap is reported
// malformed rather than buffered.
const defaultMaxHeld = 1 << 20

// grpcPrefixLen is the gRPC message prefix: a compressed flag and a 4-byte
// big-endian length (PROTOCOL-HTTP2.md, Length-Prefixed-Message).
const grpcPrefixLen = 5

// Errors a msgScanner reports beside errBadFlightData's. Static so that a
// peer sending them repeatedly costs no allocation.
var (
	errCompressedMessage = errors.New("gRPC-compressed FlightData message: IPC header not readable without decompressing")
	errBadGRPCFlag       = errors.New("gRPC message with a compressed flag other than 0 or 1")
	errTruncatedVarint   = fmt.Errorf("%w: truncated varint", errBadFlightData)
	errLongVarint        = fmt.Errorf("%w: varint over 64 bits", errBadFlightData)
	errFieldPastEnd      = fmt.Errorf("%w: field runs past the end", errBadFlightData)
)

// scanState is where a msgScanner is inside a FlightData message.
type scanState uint8

const (
	scanTag     scanState = iota // reading a field's tag (or at a field boundary)
	scanVarint                   // reading a varint field's value, to skip it
	scanLen                      // reading a length-delimited field's length
	scanSkip                     // skipping a field's bytes
	scanHold                     // copying descriptor or data_header bytes into held
	scanDiscard                  // after an error: skipping to the message's end
)

// span is a field's place in msgScanner.held.
type span struct{ start, end int }

// of is the span's bytes, nil when empty (as parseFlightData leaves a
// missing field).
func (sp span) of(b []byte) []byte {
	if sp.end == sp.start {
		return nil
	}
	return b[sp.start:sp.end:sp.end]
}

// msgScanner counts Flight messages in the payloads of a gRPC stream's
// HTTP/2 DATA frames without reassembling them. It walks the gRPC framing
// and each FlightData's protobuf fields as bytes arrive, holds only the
// descriptor and the IPC header (data_header), and skips data_body and
// unknown fields unread. At each message's end it calls onMessage, which
// sees what parseFlightData would return for the whole message.
//
// Memory is bounded by maxHeld per scanner, reused from message to message,
// so the steady state does not allocate. Bad input never panics: a message
// that does not parse, or that is gRPC-compressed, is reported with an error
// and the scanner goes on at the next message, whose place the gRPC length
// prefix still gives. Not safe for concurrent use; one per stream direction.
type msgScanner struct {
	// onMessage receives each whole message: n is its length without the
	// gRPC prefix (what edge.count counts), v what the proxy reads of it,
	// err why it could not be read (v is then empty). v's slices alias the
	// scanner's buffer and are valid only during the call.
	onMessage func(n int, v flightDataView, err error)
	// maxHeld caps the descriptor and data_header bytes of one message;
	// 0 means defaultMaxHeld.
	maxHeld int

	// gRPC framing.
	prefix  [grpcPrefixLen]byte
	nprefix int  // prefix bytes read of the next message
	inMsg   bool // past the prefix of the current message
	msgLen  int  // length of the current message
	left    int  // bytes of the current message not yet fed

	// Protobuf fields of the current message.
	state     scanState
	varint    uint64 // varint read so far
	shift     uint   // its bits read so far
	field     uint64 // number of the length-delimited field being read
	fieldLeft int    // bytes of the current field still to skip or hold
	err       error  // the message's first error; the rest of it is discarded

	held       []byte // descriptor and data_header bytes, reused
	descriptor span
	header     span
	bodyLen    int
}

// feed scans the next bytes of the stream: any piece, from one byte to
// many messages. p is not kept.
func (s *msgScanner) feed(p []byte) {
	for len(p) > 0 {
		if !s.inMsg {
			k := copy(s.prefix[s.nprefix:], p)
			s.nprefix += k
			p = p[k:]
			if s.nprefix < grpcPrefixLen {
				return
			}
			s.begin()
			if s.left == 0 {
				s.end()
			}
			continue
		}
		k := min(len(p), s.left)
		s.scan(p[:k])
		p = p[k:]
		if s.left == 0 {
			s.end()
		}
	}
}

// midMessage reports whether the bytes fed so far end inside a message
// (its prefix included): at the end of a stream, a truncated last message.
func (s *msgScanner) midMessage() bool { return s.inMsg || s.nprefix > 0 }

// begin starts the message whose prefix has been read.
func (s *msgScanner) begin() {
	s.nprefix = 0
	s.inMsg = true
	s.msgLen = int(binary.BigEndian.Uint32(s.prefix[1:]))
	s.left = s.msgLen
	switch s.prefix[0] {
	case 0:
	case 1:
		// A Flight client or server that turned on gRPC compression
		// (grpc.UseCompressor): the bytes are gzip or similar.
		s.fail(errCompressedMessage)
	default:
		s.fail(errBadGRPCFlag)
	}
}

// end reports the current message and makes ready for the next.
func (s *msgScanner) end() {
	err := s.err
	if err == nil && (s.state != scanTag || s.shift != 0) {
		// A tag or value varint cut by the message's end; fields with a
		// length were checked against it when their length was read.
		err = errTruncatedVarint
	}
	var v flightDataView
	if err == nil {
		v.descriptor = s.descriptor.of(s.held)
		v.header = s.header.of(s.held)
		v.bodyLen = s.bodyLen
	}
	n := s.msgLen
	s.inMsg = false
	s.state, s.varint, s.shift, s.fieldLeft, s.err = scanTag, 0, 0, 0, nil
	s.held = s.held[:0]
	s.descriptor, s.header, s.bodyLen = span{}, span{}, 0
	if s.onMessage != nil {
		s.onMessage(n, v, err)
	}
}

// fail records the message's first error; the rest of it is skipped.
func (s *msgScanner) fail(err error) {
	if s.err == nil {
		s.err = err
	}
	s.state = scanDiscard
}

// scan walks bytes of the current message; q lies within it.
func (s *msgScanner) scan(q []byte) {
	for len(q) > 0 {
		switch s.state {
		case scanSkip:
			// data_body lands here: megabytes passed over unread.
			k := min(len(q), s.fieldLeft)
			q = q[k:]
			s.left -= k
			s.fieldLeft -= k
			if s.fieldLeft == 0 {
				s.state = scanTag
			}
		case scanHold:
			k := min(len(q), s.fieldLeft)
			s.held = append(s.held, q[:k]...)
			q = q[k:]
			s.left -= k
			s.fieldLeft -= k
			if s.fieldLeft == 0 {
				s.state = scanTag
			}
		case scanDiscard:
			s.left -= len(q)
			return
		default: // scanTag, scanVarint, scanLen: one varint byte
			b := q[0]
			q = q[1:]
			s.left--
			s.varint |= uint64(b&0x7f) << s.shift
			if b >= 0x80 {
				// Ten bytes at most, as parseFlightData reads them.
				if s.shift += 7; s.shift >= 64 {
					s.fail(errLongVarint)
				}
				continue
			}
			v := s.varint
			s.varint, s.shift = 0, 0
			s.varintDone(v)
		}
	}
}

// varintDone acts on a complete varint, by what it was: a tag, the value of
// a varint field, or a field's length. The wire-type rules are
// parseFlightData's.
func (s *msgScanner) varintDone(v uint64) {
	switch s.state {
	case scanVarint:
		s.state = scanTag
	case scanTag:
		num, typ := v>>3, v&7
		switch typ {
		case 0: // no FlightData field is a varint: skipped for forward compatibility
			s.state = scanVarint
		case 1:
			s.skipFixed(8)
		case 5:
			s.skipFixed(4)
		case 2:
			s.field = num
			s.state = scanLen
		default:
			s.fail(fmt.Errorf("%w: wire type %d of field %d", errBadFlightData, typ, num))
		}
	case scanLen:
		if v > uint64(s.msgLen) {
			s.fail(fmt.Errorf("%w: field %d of %d bytes in a %d-byte message", errBadFlightData, s.field, v, s.msgLen))
			return
		}
		if v > uint64(s.left) {
			s.fail(errFieldPastEnd)
			return
		}
		n := int(v)
		s.fieldLeft = n
		s.state = scanSkip
		switch s.field {
		case fdDescriptor, fdDataHeader:
			if limit := s.maxHeldOrDefault(); len(s.held)+n > limit {
				s.fail(fmt.Errorf("%w: descriptor and data_header over %d bytes, not held", errBadFlightData, limit))
				return
			}
			// A repeated field: the last one wins, as in parseFlightData.
			sp := span{start: len(s.held), end: len(s.held) + n}
			if s.field == fdDescriptor {
				s.descriptor = sp
			} else {
				s.header = sp
			}
			s.state = scanHold
		case fdDataBody:
			s.bodyLen = n
		}
		if n == 0 {
			s.state = scanTag
		}
	}
}

func (s *msgScanner) skipFixed(n int) {
	if n > s.left {
		s.fail(errFieldPastEnd)
		return
	}
	s.fieldLeft = n
	s.state = scanSkip
}

func (s *msgScanner) maxHeldOrDefault() int {
	if s.maxHeld > 0 {
		return s.maxHeld
	}
	return defaultMaxHeld
}
