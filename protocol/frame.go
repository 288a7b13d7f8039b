package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
)

// DefaultMaxFrameBytes is the largest frame a Reader accepts unless told
// otherwise: 100 MiB, the same as a Kafka broker's socket.request.max.bytes.
const DefaultMaxFrameBytes = 100 << 20

// ErrFrameTooLarge is wrapped by Reader.Next when a frame's size prefix is
// above the configured maximum. The frame is not read.
var ErrFrameTooLarge = errors.New("frame larger than the configured maximum")

// ErrNotKafka is wrapped by Reader.Next when the stream starts like another
// protocol (a TLS handshake, HTTP) instead of a Kafka frame. It is told
// before the size is believed, whatever the configured maximum.
var ErrNotKafka = errors.New("not the Kafka protocol")

// ErrNegativeFrameSize is wrapped by Reader.Next when a size prefix is
// negative, which no Kafka peer sends.
var ErrNegativeFrameSize = errors.New("negative frame size")

// keepBufBytes is the largest frame buffer a Reader keeps between frames.
// Larger frames borrow a buffer from a pool shared by all readers and give it
// back with Release (or at the next Next), so an idle connection that once
// saw a 50 MiB fetch does not hold 50 MiB, and a stream of large produce
// batches does not allocate one buffer per frame.
const keepBufBytes = 1 << 20

// bigPools holds large frame buffers by size class: class i has capacity
// 1<<i bytes.
var bigPools [32]sync.Pool

func getBig(n int) *[]byte {
	class := bits.Len(uint(n - 1))
	if v := bigPools[class].Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 1<<class)
	return &b
}

func putBig(b *[]byte) { bigPools[bits.Len(uint(cap(*b)-1))].Put(b) }

// Reader reads length-prefixed Kafka frames from a stream. It reuses one
// buffer, so the slice Next returns is valid only until the next call.
type Reader struct {
	src   io.Reader // under br; read directly only by CopyRest
	rest  int       // bytes of the current frame not yet read (NextHead)
	br    *bufio.Reader
	max   int32
	sz    [4]byte // the size prefix; a field so that reading it does not allocate
	buf   []byte
	big   *[]byte // pooled buffer of the last frame, when it was large
	frame []byte
}

// NewReader returns a Reader over r that refuses frames above maxBytes
// (DefaultMaxFrameBytes when maxBytes <= 0). bufSize is the size of the read
// buffer; larger buffers mean fewer syscalls for small pipelined frames.
func NewReader(r io.Reader, maxBytes int32, bufSize int) *Reader {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxFrameBytes
	}
	return &Reader{src: r, br: bufio.NewReaderSize(r, bufSize), max: maxBytes, buf: make([]byte, 0, 4096)}
}

// Next reads one frame and returns its body (without the 4-byte size). The
// size is checked against the maximum before anything is allocated. io.EOF is
// returned unwrapped when the stream ends cleanly between frames; a stream
// that ends inside a frame gives io.ErrUnexpectedEOF. Frame returns the same
// frame with its size prefix, ready to be written on.
func (r *Reader) Next() ([]byte, error) {
	return r.next(0)
}

// NextHead is Next for a caller that streams large frames through: it reads
// the frame's size and at most max bytes of its body (the head), leaving the
// rest in the stream for CopyRest. Frame then returns the size prefix and the
// head. A frame no larger than max is read whole, as by Next.
func (r *Reader) NextHead(max int) ([]byte, error) {
	return r.next(max)
}

// Rest is how many bytes of the frame NextHead returned are still unread.
func (r *Reader) Rest() int { return r.rest }

// CopyRest copies the unread rest of the current frame to w: first what is
// buffered, then straight from the underlying stream, so that when both are
// TCP connections the kernel moves the bytes (splice) without copying them
// through user space.
func (r *Reader) CopyRest(w io.Writer) error {
	if r.rest == 0 {
		return nil
	}
	if n := min(r.br.Buffered(), r.rest); n > 0 {
		b, _ := r.br.Peek(n)
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("writing frame: %w", err)
		}
		r.br.Discard(n)
		r.rest -= n
	}
	if r.rest > 0 {
		n, err := io.Copy(w, &io.LimitedReader{R: r.src, N: int64(r.rest)})
		r.rest -= int(n)
		if err == nil && r.rest > 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("streaming frame (%d bytes left): %w", r.rest, err)
		}
	}
	return nil
}

// PeekSize waits for the next frame's size prefix and returns it without
// consuming anything, so a caller can account for the memory a frame will
// take before Next allocates it.
func (r *Reader) PeekSize() (int32, error) {
	if r.rest > 0 {
		return 0, fmt.Errorf("peeking a frame while %d bytes of the last one are unread; call CopyRest first", r.rest)
	}
	b, err := r.br.Peek(4)
	if err != nil {
		return 0, err
	}
	return int32(binary.BigEndian.Uint32(b)), nil
}

// ReadRest reads the unread rest of the frame NextHead returned, so that the
// whole frame is in memory: it returns the whole body, and Frame returns the
// whole frame. A stage that must see all of a large frame (to rewrite it)
// calls it; the buffer is pooled as Next's are.
func (r *Reader) ReadRest() ([]byte, error) {
	if r.rest == 0 {
		if r.frame == nil {
			return nil, nil
		}
		return r.frame[4:], nil
	}
	total := len(r.frame) + r.rest
	var buf []byte
	var big *[]byte
	if total <= keepBufBytes {
		buf = make([]byte, total)
	} else {
		big = getBig(total)
		buf = (*big)[:total]
	}
	head := copy(buf, r.frame)
	if _, err := io.ReadFull(r.br, buf[head:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if big != nil {
			putBig(big)
		}
		r.Release()
		r.frame, r.rest = nil, 0
		return nil, fmt.Errorf("reading the rest of a %d-byte frame: %w", total-4, err)
	}
	r.Release()
	if big != nil {
		r.big = big
	} else {
		r.buf = buf
	}
	r.frame, r.rest = buf, 0
	return buf[4:], nil
}

func (r *Reader) next(head int) ([]byte, error) {
	r.Release()
	r.frame = nil
	if r.rest > 0 {
		return nil, fmt.Errorf("reading a frame while %d bytes of the last one are unread; call CopyRest first", r.rest)
	}
	if _, err := io.ReadFull(r.br, r.sz[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("reading frame size: %w", err)
		}
		r.frame = nil
		return nil, err
	}
	sz := r.sz
	n := int32(binary.BigEndian.Uint32(sz[:]))
	if what := otherProtocol(sz); what != "" {
		return nil, fmt.Errorf("%w: the stream starts like %s", ErrNotKafka, what)
	}
	switch {
	case n < 0:
		return nil, fmt.Errorf("%w: size prefix %d", ErrNegativeFrameSize, n)
	case n > r.max:
		return nil, fmt.Errorf("%w: %d bytes, maximum %d", ErrFrameTooLarge, n, r.max)
	}
	total := int(n) + 4
	if head > 0 && int(n) > head {
		total = head + 4
		r.rest = int(n) - head
	}
	var buf []byte
	if total <= cap(r.buf) {
		buf = r.buf[:total]
	} else if total <= keepBufBytes {
		buf = make([]byte, total)
		r.buf = buf
	} else {
		r.big = getBig(total)
		buf = (*r.big)[:total]
	}
	copy(buf, sz[:])
	if _, err := io.ReadFull(r.br, buf[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		r.frame, r.rest = nil, 0
		return nil, fmt.Errorf("reading %d-byte frame: %w", n, err)
	}
	r.frame = buf
	return buf[4:], nil
}

// Frame returns the frame Next last returned, size prefix included.
func (r *Reader) Frame() []byte { return r.frame }

// Release returns a large frame's buffer to the pool once the caller is done
// with the frame; the frame must not be used after. Next calls it too.
func (r *Reader) Release() {
	if r.big != nil {
		putBig(r.big)
		r.big, r.frame = nil, nil
	}
}

// HasFrame reports whether a whole frame is already buffered, so that Next
// will not block. A writer batching what it forwards flushes when this is
// false: nothing more will come without waiting on the network.
func (r *Reader) HasFrame() bool {
	if r.rest > 0 || r.br.Buffered() < 4 {
		return false // Peek would block
	}
	b, err := r.br.Peek(4)
	if err != nil {
		return false
	}
	n := int(int32(binary.BigEndian.Uint32(b)))
	return n >= 0 && r.br.Buffered() >= n+4
}

// otherProtocol names the protocol a stream speaks when its first four bytes
// are a TLS handshake record or an HTTP method rather than a Kafka size.
func otherProtocol(sz [4]byte) string {
	switch {
	case sz[0] == 0x16 && sz[1] == 0x03 && sz[2] <= 0x04:
		return "a TLS handshake: the client uses TLS but this listener is plaintext"
	}
	switch string(sz[:]) {
	case "GET ", "POST", "PUT ", "HEAD", "PRI ", "DELE", "OPTI", "PATC", "CONN":
		return fmt.Sprintf("HTTP (%q): an HTTP client is connected to the Kafka port", string(sz[:]))
	}
	return ""
}

// AppendFrame appends body to dst with its 4-byte size prefix.
func AppendFrame(dst, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}
