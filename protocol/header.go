package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"
)

// ErrMalformed is wrapped by every decoding error in this package.
var ErrMalformed = errors.New("malformed kafka message")

// RequestHeader is the part of a request frame every stage may need. It holds
// slices into the frame and does not allocate.
type RequestHeader struct {
	Key           int16
	Version       int16
	CorrelationID int32
	// ClientID aliases the frame; copy it to keep it. Nil when the client
	// sent a null client id.
	ClientID []byte
	// BodyOffset is where the request body starts in the frame. It is -1
	// when the key or version is unknown to kmsg, because then whether a
	// tagged-field section follows the client id cannot be known; such
	// requests are passed through without looking at their body.
	BodyOffset int
}

// ParseRequestHeader reads the request header (v1, or v2 for flexible
// requests) at the start of frame.
func ParseRequestHeader(frame []byte) (RequestHeader, error) {
	var h RequestHeader
	if len(frame) < 10 {
		return h, fmt.Errorf("%w: request of %d bytes is shorter than the smallest request header (10 bytes)", ErrMalformed, len(frame))
	}
	h.Key = int16(binary.BigEndian.Uint16(frame[0:]))
	h.Version = int16(binary.BigEndian.Uint16(frame[2:]))
	h.CorrelationID = int32(binary.BigEndian.Uint32(frame[4:]))
	n := int(int16(binary.BigEndian.Uint16(frame[8:])))
	off := 10
	switch {
	case n < -1:
		return h, fmt.Errorf("%w: client id length %d", ErrMalformed, n)
	case n >= 0:
		if len(frame) < off+n {
			return h, fmt.Errorf("%w: client id of %d bytes overruns a %d-byte request", ErrMalformed, n, len(frame))
		}
		h.ClientID = frame[off : off+n : off+n]
		off += n
	}
	h.BodyOffset = -1
	if !Known(h.Key, h.Version) {
		return h, nil
	}
	if IsFlexible(h.Key, h.Version) {
		b := kbin.Reader{Src: frame[off:]}
		skipTags(&b)
		if !b.Ok() {
			return h, fmt.Errorf("%w: request header tagged fields of %s v%d", ErrMalformed, KeyName(h.Key), h.Version)
		}
		off = len(frame) - len(b.Src)
	}
	h.BodyOffset = off
	return h, nil
}

// ResponseBodyOffset returns where the body of a response frame starts: after
// the correlation id, and after the header's tagged fields when flexible.
func ResponseBodyOffset(frame []byte, flexible bool) (int, error) {
	if len(frame) < 4 {
		return 0, fmt.Errorf("%w: response of %d bytes has no correlation id", ErrMalformed, len(frame))
	}
	if !flexible {
		return 4, nil
	}
	b := kbin.Reader{Src: frame[4:]}
	skipTags(&b)
	if !b.Ok() {
		return 0, fmt.Errorf("%w: response header tagged fields", ErrMalformed)
	}
	return len(frame) - len(b.Src), nil
}

// ResponseCorrelationID returns the correlation id at the start of a response
// frame; callers check the frame is at least 4 bytes long.
func ResponseCorrelationID(frame []byte) int32 {
	return int32(binary.BigEndian.Uint32(frame))
}

// skipTags skips a tagged-field section: a count, then per field a tag and a
// length-prefixed value.
func skipTags(b *kbin.Reader) {
	for n := b.Uvarint(); n > 0 && b.Ok(); n-- {
		b.Uvarint()
		b.Span(int(b.Uvarint()))
	}
}

// KeyName returns kmsg's name for an API key, or "Unknown(N)".
func KeyName(key int16) string {
	if key >= 0 && int(key) < maxKnownKey {
		if n := keyNames[key]; n != "" {
			return n
		}
	}
	return fmt.Sprintf("Unknown(%d)", key)
}
