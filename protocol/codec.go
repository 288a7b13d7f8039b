package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// ErrTooLarge is wrapped when a record batch would decompress to more than
// the configured cap. A small compressed batch can expand a thousandfold (a
// decompression bomb); the cap is checked while decoding, before the output
// is grown past it.
var ErrTooLarge = errors.New("decompressed records larger than the cap")

// ErrUnknownCodec is wrapped for a codec number Kafka does not define.
var ErrUnknownCodec = errors.New("unknown compression codec")

// ParseCodec reads a codec name as Kafka's compression.type writes it.
func ParseCodec(s string) (Codec, error) {
	for c := CodecNone; c <= CodecZstd; c++ {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("%w %q: want none, gzip, snappy, lz4 or zstd", ErrUnknownCodec, s)
}

// xerialMagic starts a snappy stream in the xerial framing that snappy-java
// (older Java clients) writes: the magic, then an int32 version and an int32
// compatible version, then blocks, each an int32 length and a raw snappy
// block.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

const xerialHeaderBytes = 16

// Codecs compresses and decompresses record batch payloads with every codec
// Kafka defines. It is safe for concurrent use: zstd encoders (one per
// level) and the zstd decoder are shared, since their EncodeAll and
// DecodeAll may be called concurrently; gzip and lz4 writers and readers are
// pooled, so steady-state work allocates little.
type Codecs struct {
	max int

	zdec     *zstd.Decoder
	zencMu   sync.Mutex
	zenc     map[zstd.EncoderLevel]*zstd.Encoder
	gzipW    sync.Map // level -> *sync.Pool of *gzip.Writer
	gzipR    sync.Pool
	lz4W     sync.Map // level -> *sync.Pool of *lz4.Writer
	lz4R     sync.Pool
	readBufs sync.Pool // *bytes.Reader
}

// NewCodecs returns Codecs that refuse to decompress more than
// maxDecompressed bytes of records from one batch.
func NewCodecs(maxDecompressed int) (*Codecs, error) {
	if maxDecompressed <= 0 {
		return nil, fmt.Errorf("protocol: decompression cap %d must be positive", maxDecompressed)
	}
	zdec, err := zstd.NewReader(nil,
		zstd.WithDecoderMaxMemory(uint64(maxDecompressed)),
		zstd.WithDecoderMaxWindow(max(uint64(maxDecompressed), zstd.MinWindowSize)))
	if err != nil {
		return nil, fmt.Errorf("protocol: zstd decoder: %w", err)
	}
	return &Codecs{max: maxDecompressed, zdec: zdec, zenc: make(map[zstd.EncoderLevel]*zstd.Encoder)}, nil
}

// Max is the decompression cap.
func (c *Codecs) Max() int { return c.max }

// Decompress appends the decompressed form of src (compressed with codec) to
// dst. It fails with ErrTooLarge past the cap and with a wrapped codec error
// on input that does not decode; it never panics on any input.
func (c *Codecs) Decompress(dst []byte, codec Codec, src []byte) ([]byte, error) {
	switch codec {
	case CodecNone:
		if len(src) > c.max {
			return dst, fmt.Errorf("%w: %d bytes, cap %d", ErrTooLarge, len(src), c.max)
		}
		return append(dst, src...), nil
	case CodecGzip:
		r, _ := c.gzipR.Get().(*gzip.Reader)
		br := c.reader(src)
		defer c.readBufs.Put(br)
		var err error
		if r == nil {
			r, err = gzip.NewReader(br)
		} else {
			err = r.Reset(br)
		}
		if err != nil {
			return dst, fmt.Errorf("gzip: %w", err)
		}
		defer c.gzipR.Put(r)
		return c.readAll(dst, r, "gzip")
	case CodecSnappy:
		if len(src) >= xerialHeaderBytes && bytes.HasPrefix(src, xerialMagic) {
			return c.unxerial(dst, src[xerialHeaderBytes:])
		}
		return c.unsnappy(dst, src, c.max)
	case CodecLZ4:
		r, _ := c.lz4R.Get().(*lz4.Reader)
		br := c.reader(src)
		defer c.readBufs.Put(br)
		if r == nil {
			r = lz4.NewReader(br)
		} else {
			r.Reset(br)
		}
		defer c.lz4R.Put(r)
		return c.readAll(dst, r, "lz4")
	case CodecZstd:
		start := len(dst)
		out, err := c.zdec.DecodeAll(src, dst)
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
				return dst, fmt.Errorf("%w: zstd: %v", ErrTooLarge, err)
			}
			return dst, fmt.Errorf("zstd: %w", err)
		}
		if len(out)-start > c.max {
			return dst, fmt.Errorf("%w: zstd, cap %d", ErrTooLarge, c.max)
		}
		return out, nil
	}
	return dst, fmt.Errorf("%w %d", ErrUnknownCodec, codec)
}

func (c *Codecs) reader(src []byte) *bytes.Reader {
	br, _ := c.readBufs.Get().(*bytes.Reader)
	if br == nil {
		return bytes.NewReader(src)
	}
	br.Reset(src)
	return br
}

// readAll appends r to dst, failing once more than the cap has come out.
func (c *Codecs) readAll(dst []byte, r io.Reader, name string) ([]byte, error) {
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst)-start > c.max {
			return dst[:start], fmt.Errorf("%w: %s, cap %d", ErrTooLarge, name, c.max)
		}
		if errors.Is(err, io.EOF) {
			return dst, nil
		}
		if err != nil {
			return dst[:start], fmt.Errorf("%s: %w", name, err)
		}
	}
}

// unsnappy decodes one raw snappy block, checking its declared length
// against limit before allocating.
func (c *Codecs) unsnappy(dst, src []byte, limit int) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	if err != nil {
		return dst, fmt.Errorf("snappy: %w", err)
	}
	if n > limit {
		return dst, fmt.Errorf("%w: snappy block of %d bytes, cap %d", ErrTooLarge, n, c.max)
	}
	start := len(dst)
	dst = grow(dst, n)
	if _, err := s2.Decode(dst[start:start+n], src); err != nil {
		return dst[:start], fmt.Errorf("snappy: %w", err)
	}
	return dst[:start+n], nil
}

// unxerial decodes the blocks of a xerial-framed snappy stream.
func (c *Codecs) unxerial(dst, src []byte) ([]byte, error) {
	start := len(dst)
	for len(src) > 0 {
		if len(src) < 4 {
			return dst[:start], errors.New("snappy: xerial block length cut off")
		}
		n := int(int32(binary.BigEndian.Uint32(src)))
		src = src[4:]
		if n < 0 || n > len(src) {
			return dst[:start], fmt.Errorf("snappy: xerial block of %d bytes, %d left", n, len(src))
		}
		var err error
		dst, err = c.unsnappy(dst, src[:n], c.max-(len(dst)-start))
		if err != nil {
			return dst[:start], err
		}
		src = src[n:]
	}
	return dst, nil
}

// grow returns dst with room for n more bytes.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst[:len(dst)+n]
	}
	out := make([]byte, len(dst)+n, len(dst)+n+len(dst)/4)
	copy(out, dst)
	return out
}

// Compress appends src compressed with codec at level to dst. level is the
// codec's own scale, as Kafka's compression.<codec>.level: zstd -7 to 22,
// gzip 1 to 9, lz4 1 to 17 (0 means fast); 0 picks the codec's default.
// Snappy has no levels and writes a raw block, as current clients do.
func (c *Codecs) Compress(dst []byte, codec Codec, level int, src []byte) ([]byte, error) {
	switch codec {
	case CodecNone:
		return append(dst, src...), nil
	case CodecGzip:
		if level == 0 {
			level = gzip.DefaultCompression
		}
		pool := poolFor(&c.gzipW, level)
		w, _ := pool.Get().(*gzip.Writer)
		out := &appender{b: dst}
		if w == nil {
			var err error
			if w, err = gzip.NewWriterLevel(out, level); err != nil {
				return dst, fmt.Errorf("gzip level %d: %w", level, err)
			}
		} else {
			w.Reset(out)
		}
		defer pool.Put(w)
		if _, err := w.Write(src); err != nil {
			return dst, fmt.Errorf("gzip: %w", err)
		}
		if err := w.Close(); err != nil {
			return dst, fmt.Errorf("gzip: %w", err)
		}
		return out.b, nil
	case CodecSnappy:
		start := len(dst)
		dst = grow(dst, s2.MaxEncodedLen(len(src)))
		enc := s2.EncodeSnappy(dst[start:], src)
		return dst[:start+len(enc)], nil
	case CodecLZ4:
		pool := poolFor(&c.lz4W, level)
		w, _ := pool.Get().(*lz4.Writer)
		out := &appender{b: dst}
		if w == nil {
			w = lz4.NewWriter(out)
			opts := []lz4.Option{lz4.BlockSizeOption(lz4.Block64Kb)}
			if level > 0 {
				opts = append(opts, lz4.CompressionLevelOption(lz4.CompressionLevel(1<<(8+min(level, 9)))))
			}
			if err := w.Apply(opts...); err != nil {
				return dst, fmt.Errorf("lz4 level %d: %w", level, err)
			}
		} else {
			w.Reset(out)
		}
		defer pool.Put(w)
		if _, err := w.Write(src); err != nil {
			return dst, fmt.Errorf("lz4: %w", err)
		}
		if err := w.Close(); err != nil {
			return dst, fmt.Errorf("lz4: %w", err)
		}
		return out.b, nil
	case CodecZstd:
		enc, err := c.zstdEncoder(level)
		if err != nil {
			return dst, err
		}
		return enc.EncodeAll(src, dst), nil
	}
	return dst, fmt.Errorf("%w %d", ErrUnknownCodec, codec)
}

// zstdEncoder returns the shared encoder for a Kafka zstd level.
func (c *Codecs) zstdEncoder(level int) (*zstd.Encoder, error) {
	l := zstd.SpeedDefault
	if level != 0 {
		l = zstd.EncoderLevelFromZstd(level)
	}
	c.zencMu.Lock()
	defer c.zencMu.Unlock()
	if e := c.zenc[l]; e != nil {
		return e, nil
	}
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(l), zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("zstd level %d: %w", level, err)
	}
	c.zenc[l] = e
	return e, nil
}

func poolFor(m *sync.Map, level int) *sync.Pool {
	if p, ok := m.Load(level); ok {
		return p.(*sync.Pool)
	}
	p, _ := m.LoadOrStore(level, new(sync.Pool))
	return p.(*sync.Pool)
}

// appender is an io.Writer that appends to a slice.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

var _ io.Writer = (*appender)(nil)
