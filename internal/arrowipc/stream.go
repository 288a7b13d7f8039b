package arrowipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// continuation starts every encapsulated message of the IPC streaming format
// since Arrow 0.15; a zero length after it marks the end of the stream.
const continuation = 0xFFFFFFFF

// pad8 is n rounded up to a multiple of 8, the alignment of IPC metadata.
func pad8(n int) int { return (n + 7) &^ 7 }

// AppendPrefix appends the encapsulation prefix for a metadata flatbuffer of
// metaLen bytes: the continuation marker and the padded length. The caller
// then writes the metadata, Padding(metaLen) zero bytes and the body.
func AppendPrefix(dst []byte, metaLen int) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, continuation)
	return binary.LittleEndian.AppendUint32(dst, uint32(pad8(metaLen)))
}

// Padding is the number of zero bytes that follow metadata of metaLen bytes.
func Padding(metaLen int) int { return pad8(metaLen) - metaLen }

// AppendMessage appends meta as one encapsulated message without a body, as
// FlightInfo.schema wants the schema.
func AppendMessage(dst, meta []byte) []byte {
	dst = AppendPrefix(dst, len(meta))
	dst = append(dst, meta...)
	for range Padding(len(meta)) {
		dst = append(dst, 0)
	}
	return dst
}

// EndOfStream is the marker that closes an IPC stream.
var EndOfStream = []byte{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0}

// Reader reads encapsulated messages of an IPC stream. Its buffers are reused:
// what Next returns is valid until the following call.
type Reader struct {
	r       io.Reader
	maxMeta int
	maxBody int64
	prefix  [8]byte
	meta    []byte
	body    []byte
}

// NewReader reads r, refusing metadata over maxMeta bytes and bodies over
// maxBody bytes (bounded memory for untrusted files).
func NewReader(r io.Reader, maxMeta int, maxBody int64) *Reader {
	return &Reader{r: r, maxMeta: maxMeta, maxBody: maxBody}
}

// ErrTruncated is wrapped when a stream ends inside a message.
var ErrTruncated = errors.New("truncated Arrow IPC stream")

// Next returns the next message's metadata (padding trimmed to what the
// flatbuffer needs is not possible, so it is returned padded), its parsed
// header and its body. At the end-of-stream marker, or a clean end of input
// between messages, it returns io.EOF.
func (r *Reader) Next() (meta []byte, h Header, body []byte, err error) {
	if _, err := io.ReadFull(r.r, r.prefix[:4]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, h, nil, io.EOF
		}
		return nil, h, nil, fmt.Errorf("%w: %w", ErrTruncated, err)
	}
	n := binary.LittleEndian.Uint32(r.prefix[:4])
	if n == continuation {
		if _, err := io.ReadFull(r.r, r.prefix[4:8]); err != nil {
			return nil, h, nil, fmt.Errorf("%w: %w", ErrTruncated, err)
		}
		n = binary.LittleEndian.Uint32(r.prefix[4:8])
	} // else: the pre-0.15 format, the length comes first.
	if n == 0 {
		return nil, h, nil, io.EOF
	}
	if int64(n) > int64(r.maxMeta) {
		return nil, h, nil, fmt.Errorf("%w: metadata of %d bytes is over the limit of %d", ErrMalformed, n, r.maxMeta)
	}
	r.meta = grow(r.meta, int(n))
	if _, err := io.ReadFull(r.r, r.meta); err != nil {
		return nil, h, nil, fmt.Errorf("%w: %w", ErrTruncated, err)
	}
	if h, err = ParseHeader(r.meta); err != nil {
		return nil, h, nil, err
	}
	if h.BodyLength > r.maxBody {
		return nil, h, nil, fmt.Errorf("%w: body of %d bytes is over the limit of %d", ErrMalformed, h.BodyLength, r.maxBody)
	}
	r.body = grow(r.body, int(h.BodyLength))
	if _, err := io.ReadFull(r.r, r.body); err != nil {
		return nil, h, nil, fmt.Errorf("%w: %w", ErrTruncated, err)
	}
	return r.meta, h, r.body, nil
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
