package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxFrameBytes is the largest frame a Reader accepts unless told
// otherwise: 100 MiB, the same as a Kafka broker's socket.request.max.bytes.
const DefaultMaxFrameBytes = 100 << 20

// ErrFrameTooLarge is wrapped by Reader.Next when a frame's size prefix is
// above the configured maximum. The frame is not read.
var ErrFrameTooLarge = errors.New("frame larger than the configured maximum")

// ErrNegativeFrameSize is wrapped by Reader.Next when a size prefix is
// negative, which no Kafka peer sends.
var ErrNegativeFrameSize = errors.New("negative frame size")

// keepBufBytes is the largest frame buffer a Reader keeps between frames.
// Larger frames get a buffer of their own that is dropped once the next frame
// is read, so an idle connection that once saw a 50 MiB fetch does not hold
// 50 MiB.
const keepBufBytes = 1 << 20

// Reader reads length-prefixed Kafka frames from a stream. It reuses one
// buffer, so the slice Next returns is valid only until the next call.
type Reader struct {
	br    *bufio.Reader
	max   int32
	buf   []byte
	frame []byte
}

// NewReader returns a Reader over r that refuses frames above maxBytes
// (DefaultMaxFrameBytes when maxBytes <= 0). bufSize is the size of the read
// buffer; larger buffers mean fewer syscalls for small pipelined frames.
func NewReader(r io.Reader, maxBytes int32, bufSize int) *Reader {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxFrameBytes
	}
	return &Reader{br: bufio.NewReaderSize(r, bufSize), max: maxBytes, buf: make([]byte, 0, 4096)}
}

// Next reads one frame and returns its body (without the 4-byte size). The
// size is checked against the maximum before anything is allocated. io.EOF is
// returned unwrapped when the stream ends cleanly between frames; a stream
// that ends inside a frame gives io.ErrUnexpectedEOF. Frame returns the same
// frame with its size prefix, ready to be written on.
func (r *Reader) Next() ([]byte, error) {
	var sz [4]byte
	if _, err := io.ReadFull(r.br, sz[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("reading frame size: %w", err)
		}
		r.frame = nil
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(sz[:]))
	switch {
	case n < 0:
		return nil, fmt.Errorf("%w: size prefix %d", ErrNegativeFrameSize, n)
	case n > r.max:
		return nil, fmt.Errorf("%w: %d bytes, maximum %d%s", ErrFrameTooLarge, n, r.max, sizeHint(sz))
	}
	total := int(n) + 4
	var buf []byte
	if total <= cap(r.buf) {
		buf = r.buf[:total]
	} else {
		buf = make([]byte, total)
		if total <= keepBufBytes {
			r.buf = buf
		}
	}
	copy(buf, sz[:])
	if _, err := io.ReadFull(r.br, buf[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		r.frame = nil
		return nil, fmt.Errorf("reading %d-byte frame: %w", n, err)
	}
	r.frame = buf
	return buf[4:], nil
}

// Frame returns the frame Next last returned, size prefix included.
func (r *Reader) Frame() []byte { return r.frame }

// HasFrame reports whether a whole frame is already buffered, so that Next
// will not block. A writer batching what it forwards flushes when this is
// false: nothing more will come without waiting on the network.
func (r *Reader) HasFrame() bool {
	if r.br.Buffered() < 4 {
		return false // Peek would block
	}
	b, err := r.br.Peek(4)
	if err != nil {
		return false
	}
	n := int(int32(binary.BigEndian.Uint32(b)))
	return n >= 0 && r.br.Buffered() >= n+4
}

// sizeHint names the usual culprit when a size prefix is absurd: a client
// that is not speaking Kafka on this port.
func sizeHint(sz [4]byte) string {
	switch {
	case sz[0] == 0x16 && sz[1] == 0x03:
		return " (this looks like a TLS handshake: the client uses TLS but this listener is plaintext)"
	case isUpperASCII(sz[0]) && isUpperASCII(sz[1]) && isUpperASCII(sz[2]):
		return fmt.Sprintf(" (this looks like text %q: is an HTTP or other non-Kafka client connected to the Kafka port?)", string(sz[:]))
	}
	return ""
}

func isUpperASCII(b byte) bool { return b >= 'A' && b <= 'Z' }

// AppendFrame appends body to dst with its 4-byte size prefix.
func AppendFrame(dst, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}
