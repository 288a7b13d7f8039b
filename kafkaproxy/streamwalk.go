package kafkaproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/pipemesh/pipemesh/protocol"
)

// streamWalk counts a Produce request or Fetch response that streams
// through cut-through, without holding it whole and without pulling its
// record bytes through user space.
//
// The proxy forwards a large frame as a head (already written on) and a
// rest that protocol.Reader.CopyRest hands to an io.Writer: first what its
// buffer holds (Write), then the socket itself (ReadFrom). streamWalk is
// that writer. It forwards every byte at once, as CopyRest would, while a
// pull parser walks the frame: the small structural fields (topic names,
// partition ids, record lengths, batch headers) are read through a small
// window, and the record bytes between batch headers, when a batch is
// large, are spliced from socket to socket by the kernel (io.Copy between
// TCP connections), never entering the proxy. Small batches are read
// through the window, since a splice per kilobyte would cost more than it
// saves.
//
// The protocol package walks whole frames (WalkProduceRequest,
// WalkFetchResponse); this is the same walk over a stream, and the tests
// hold the two to the same counts.
type streamWalk struct {
	key, version int16

	dst io.Writer
	lr  *io.LimitedReader // the socket, limited to the frame's rest; nil until ReadFrom
	buf *[]byte           // the window: bytes already forwarded, not yet parsed
	off int
	n   int // bytes read from lr so far (ReadFrom's count)

	err    error // first failure: parse or I/O
	ioErr  bool
	active bool

	// emit receives each partition's counts; name is valid only during
	// the call.
	emit func(name []byte, id [16]byte, code int16, s protocol.BatchStats)
	name []byte
}

// spliceMin is the smallest skip the walker splices; shorter runs go
// through the window. readAhead is how much more than a field the walker
// reads at once, so that the headers of small batches take one read.
const (
	spliceMin = 16 << 10
	readAhead = 4 << 10
)

// windowBytes is the window's capacity: the head (streamHeadBytes) and
// what the reader had buffered past it (readBufBytes), plus room to read.
const windowBytes = streamHeadBytes + readBufBytes + 32<<10

var windows = sync.Pool{New: func() any { b := make([]byte, 0, windowBytes); return &b }}

var errTruncated = errors.New("frame ends inside a field")

// start begins a walk of the frame whose body head is head.
func (w *streamWalk) start(key, version int16, head []byte) {
	w.key, w.version = key, version
	w.buf = windows.Get().(*[]byte)
	*w.buf = append((*w.buf)[:0], head...)
	w.off, w.n, w.err, w.ioErr, w.lr, w.dst, w.active = 0, 0, nil, false, nil, nil, true
}

// Write forwards bytes the reader had buffered and keeps them for the walk.
func (w *streamWalk) Write(b []byte) (int, error) {
	n, err := w.dst.Write(b)
	if len(*w.buf)+n <= cap(*w.buf) {
		*w.buf = append(*w.buf, b[:n]...)
	} else if w.err == nil {
		w.err = fmt.Errorf("%w: window overflow", protocol.ErrMalformed) // cannot happen with the sizes above
	}
	return n, err
}

// ReadFrom walks the rest of the frame as it arrives from r, forwarding
// all of it. It returns how much it read from r, as io.Copy would.
func (w *streamWalk) ReadFrom(r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		lr = &io.LimitedReader{R: r, N: 1<<63 - 1}
	}
	w.lr = lr
	err := w.forwardRest()
	return int64(w.n), err
}

// forwardRest walks what it can and then forwards whatever is left
// unparsed, so that a walk that fails (or a frame with trailing bytes)
// never holds up or loses a byte.
func (w *streamWalk) forwardRest() error {
	if w.err == nil {
		w.walk()
	}
	if w.ioErr {
		return w.err
	}
	if w.lr != nil && w.lr.N > 0 {
		n, err := io.Copy(w.dst, w.lr)
		w.n += int(n)
		if err != nil {
			w.ioErr = true
			w.err = err
			return err
		}
	}
	return nil
}

// walked is called by the observe stage once the frame is through; if no
// ReadFrom came (the rest was all buffered), the walk runs over the window.
func (w *streamWalk) walked() {
	if w.lr == nil && w.err == nil {
		w.walk()
	}
}

func (w *streamWalk) release() {
	if w.buf != nil {
		windows.Put(w.buf)
	}
	w.buf, w.dst, w.lr, w.active = nil, nil, nil, false
}

func (w *streamWalk) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// fill makes at least k unparsed bytes available in the window, reading
// (and forwarding) from the socket as needed.
func (w *streamWalk) fill(k int) bool {
	if w.err != nil {
		return false
	}
	for len(*w.buf)-w.off < k {
		if w.lr == nil || w.lr.N == 0 {
			w.fail(fmt.Errorf("%w: %w", protocol.ErrMalformed, errTruncated))
			return false
		}
		b := *w.buf
		if cap(b)-len(b) < k || w.off > cap(b)/2 {
			// Compact: parsed bytes are no longer needed.
			m := copy(b, b[w.off:])
			b, w.off = b[:m], 0
		}
		if cap(b)-w.off < k {
			w.fail(fmt.Errorf("%w: a %d-byte field", protocol.ErrMalformed, k))
			return false
		}
		// Read what is needed and a little more (batch headers of small
		// batches come together), never the whole window: what is not
		// read here can be spliced.
		want := min(cap(b), len(b)+max(k-(len(b)-w.off), readAhead))
		nr, err := w.lr.Read(b[len(b):want])
		if nr > 0 {
			w.n += nr
			if _, werr := w.dst.Write(b[len(b) : len(b)+nr]); werr != nil {
				w.ioErr, w.err = true, werr
				return false
			}
			b = b[:len(b)+nr]
		}
		*w.buf = b
		if err != nil && err != io.EOF {
			w.ioErr, w.err = true, err
			return false
		}
		if nr == 0 && err == io.EOF {
			w.fail(fmt.Errorf("%w: %w", protocol.ErrMalformed, errTruncated))
			return false
		}
	}
	return true
}

func (w *streamWalk) peek(k int) []byte {
	if !w.fill(k) {
		return nil
	}
	return (*w.buf)[w.off : w.off+k]
}

func (w *streamWalk) take(k int) []byte {
	b := w.peek(k)
	if b != nil {
		w.off += k
	}
	return b
}

// skip passes k bytes: out of the window first, then spliced when the run
// is long, or through the window when short.
func (w *streamWalk) skip(k int) {
	if w.err != nil {
		return
	}
	if k < 0 {
		w.fail(fmt.Errorf("%w: negative length", protocol.ErrMalformed))
		return
	}
	m := min(k, len(*w.buf)-w.off)
	w.off += m
	k -= m
	if k == 0 {
		return
	}
	if k >= spliceMin && w.lr != nil {
		if int64(k) > w.lr.N {
			w.fail(fmt.Errorf("%w: %w", protocol.ErrMalformed, errTruncated))
			return
		}
		n, err := io.Copy(w.dst, &io.LimitedReader{R: w.lr.R, N: int64(k)})
		w.lr.N -= n
		w.n += int(n)
		if err == nil && n < int64(k) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			w.ioErr, w.err = true, err
		}
		return
	}
	for k > 0 && w.err == nil {
		step := min(k, cap(*w.buf)/2)
		if w.take(step) == nil {
			return
		}
		k -= step
	}
}

func (w *streamWalk) int16() int16 {
	if b := w.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (w *streamWalk) int32() int32 {
	if b := w.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (w *streamWalk) uvarint() uint64 {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		b := w.take(1)
		if b == nil {
			return 0
		}
		v |= uint64(b[0]&0x7f) << shift
		if b[0] < 0x80 {
			return v
		}
	}
	w.fail(fmt.Errorf("%w: varint too long", protocol.ErrMalformed))
	return 0
}

func (w *streamWalk) arrayLen(flexible bool) int {
	if flexible {
		return int(w.uvarint()) - 1
	}
	return int(w.int32())
}

// bytesLen reads a (nullable) bytes length: compact in flexible versions.
func (w *streamWalk) bytesLen(flexible bool) int {
	if flexible {
		return int(w.uvarint()) - 1
	}
	return int(w.int32())
}

func (w *streamWalk) skipTags() {
	for n := w.uvarint(); n > 0 && w.err == nil; n-- {
		w.uvarint()
		w.skip(int(w.uvarint()))
	}
}

// topic reads a topic name (string or compact string) or id, copying the
// name into name (the window moves).
func (w *streamWalk) topic(flexible bool, name []byte) ([]byte, [16]byte) {
	var id [16]byte
	if w.version >= 13 {
		if b := w.take(16); b != nil {
			copy(id[:], b)
		}
		return nil, id
	}
	var n int
	if flexible {
		n = int(w.uvarint()) - 1
	} else {
		n = int(w.int16())
	}
	if n < 0 || n > 32767 {
		w.fail(fmt.Errorf("%w: topic name length %d", protocol.ErrMalformed, n))
		return nil, id
	}
	b := w.take(n)
	return append(name[:0], b...), id
}

// records counts the record batches of one partition (l bytes, -1 null).
func (w *streamWalk) records(l int) protocol.BatchStats {
	var s protocol.BatchStats
	for l > 0 && w.err == nil {
		h := w.peek(min(l, protocol.BatchHeaderBytes))
		if h == nil {
			return s
		}
		size := 0
		if len(h) >= 12 {
			size = 12 + int(int32(binary.BigEndian.Uint32(h[8:])))
		}
		if len(h) < 18 || size > l {
			s.Partial = l // a trailing partial batch (Fetch), not counted
			w.skip(l)
			return s
		}
		bh, err := protocol.ParseBatchHeader(h)
		if err != nil {
			w.fail(err)
			return s
		}
		s.Batches++
		s.Bytes += int64(size)
		if bh.Magic == 2 && bh.Control() {
			s.Control++
		} else {
			s.Records += int64(bh.Records)
		}
		w.skip(size)
		l -= size
	}
	return s
}

// walk parses the frame, calling emit for every partition.
func (w *streamWalk) walk() {
	switch w.key {
	case protocol.ProduceKey:
		w.walkProduce()
	case protocol.FetchKey:
		w.walkFetch()
	}
	if w.err == nil && (len(*w.buf) > w.off || (w.lr != nil && w.lr.N > 0)) {
		w.fail(fmt.Errorf("%w: bytes after the last field", protocol.ErrMalformed))
	}
}

func (w *streamWalk) walkProduce() {
	flexible := w.version >= 9
	if flexible {
		w.skip(max(int(w.uvarint())-1, 0)) // transactional id
	} else {
		w.skip(max(int(w.int16()), 0))
	}
	w.skip(2 + 4) // acks, timeout
	for nt := w.arrayLen(flexible); nt > 0 && w.err == nil; nt-- {
		var id [16]byte
		w.name, id = w.topic(flexible, w.name)
		for np := w.arrayLen(flexible); np > 0 && w.err == nil; np-- {
			w.skip(4) // partition
			s := w.records(w.bytesLen(flexible))
			if flexible {
				w.skipTags()
			}
			if w.err == nil {
				w.emit(w.name, id, 0, s)
			}
		}
		if flexible {
			w.skipTags()
		}
	}
	if flexible {
		w.skipTags()
	}
}

func (w *streamWalk) walkFetch() {
	flexible := w.version >= 12
	w.skip(4) // throttle
	if w.version >= 7 {
		w.skip(2 + 4) // error, session id
	}
	for nt := w.arrayLen(flexible); nt > 0 && w.err == nil; nt-- {
		var id [16]byte
		w.name, id = w.topic(flexible, w.name)
		for np := w.arrayLen(flexible); np > 0 && w.err == nil; np-- {
			w.skip(4) // partition
			code := w.int16()
			w.skip(8 + 8) // high watermark, last stable offset
			if w.version >= 5 {
				w.skip(8) // log start offset
			}
			for na := w.arrayLen(flexible); na > 0 && w.err == nil; na-- {
				w.skip(8 + 8) // aborted transaction
				if flexible {
					w.skipTags()
				}
			}
			if w.version >= 11 {
				w.skip(4) // preferred read replica
			}
			s := w.records(w.bytesLen(flexible))
			if flexible {
				w.skipTags()
			}
			if w.err == nil {
				w.emit(w.name, id, code, s)
			}
		}
		if flexible {
			w.skipTags()
		}
	}
	if flexible {
		w.skipTags()
	}
}
