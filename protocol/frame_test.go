package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sizePrefix is a raw 4-byte size prefix, which may be negative or absurd.
func sizePrefix(n int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestReaderNext(t *testing.T) {
	small := bytes.Repeat([]byte{0xab}, 10)
	for _, tc := range []struct {
		name   string
		stream []byte
		max    int32
		frames [][]byte // bodies expected before the error
		err    error    // wrapped by the error after the frames
		hint   string   // substring of that error, when set
	}{
		{name: "empty stream is a clean EOF", err: io.EOF},
		{name: "one frame then clean EOF", stream: AppendFrame(nil, small), frames: [][]byte{small}, err: io.EOF},
		{
			name:   "pipelined frames, including an empty one",
			stream: concat(AppendFrame(nil, small), AppendFrame(nil, nil), AppendFrame(nil, []byte("xyz"))),
			frames: [][]byte{small, {}, []byte("xyz")},
			err:    io.EOF,
		},
		{name: "frame of exactly the maximum", max: 10, stream: AppendFrame(nil, small), frames: [][]byte{small}, err: io.EOF},
		{name: "frame one byte over the maximum", max: 9, stream: AppendFrame(nil, small), err: ErrFrameTooLarge},
		{name: "negative size", stream: sizePrefix(-1), err: ErrNegativeFrameSize},
		{name: "most negative size", stream: sizePrefix(-1 << 31), err: ErrNegativeFrameSize},
		{name: "truncated size prefix", stream: []byte{0, 0}, err: io.ErrUnexpectedEOF},
		{name: "truncated size after a frame", stream: concat(AppendFrame(nil, small), []byte{0}), frames: [][]byte{small}, err: io.ErrUnexpectedEOF},
		{name: "truncated body", stream: concat(sizePrefix(10), small[:3]), err: io.ErrUnexpectedEOF},
		{name: "size prefix without a body", stream: sizePrefix(10), err: io.ErrUnexpectedEOF},
		{
			name:   "HTTP request on the Kafka port",
			stream: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			err:    ErrNotKafka,
			hint:   `HTTP ("GET ")`,
		},
		{
			name:   "HTTP POST on the Kafka port",
			stream: []byte("POST / HTTP/1.1\r\n\r\n"),
			err:    ErrNotKafka,
			hint:   "an HTTP client is connected to the Kafka port",
		},
		{
			name:   "TLS ClientHello on a plaintext port",
			stream: []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00},
			err:    ErrNotKafka,
			hint:   "a TLS handshake: the client uses TLS but this listener is plaintext",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte at a time as well as all at once: short reads must
			// not change what is returned.
			for _, src := range []struct {
				name string
				r    func() io.Reader
			}{
				{"whole", func() io.Reader { return bytes.NewReader(tc.stream) }},
				{"one byte per read", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(tc.stream)) }},
			} {
				r := NewReader(src.r(), tc.max, 16)
				for i, want := range tc.frames {
					got, err := r.Next()
					require.NoError(t, err, "%s: frame %d", src.name, i)
					assert.Equal(t, want, got, "%s: frame %d", src.name, i)
					assert.Equal(t, AppendFrame(nil, want), r.Frame(), "%s: Frame is the body with its size prefix", src.name)
				}
				got, err := r.Next()
				assert.Nil(t, got, src.name)
				require.ErrorIs(t, err, tc.err, src.name)
				if tc.err == io.EOF {
					assert.Same(t, io.EOF, err, "%s: a clean end between frames is io.EOF itself, not wrapped", src.name)
				}
				if tc.hint != "" {
					assert.Contains(t, err.Error(), tc.hint, src.name)
				} else {
					assert.NotContains(t, err.Error(), "this looks like", src.name)
				}
			}
		})
	}
}

// endless supplies as many bytes as asked for and counts them.
type endless struct {
	prefix []byte
	reads  int
	served int
}

func (e *endless) Read(p []byte) (int, error) {
	e.reads++
	n := copy(p, e.prefix)
	e.prefix = e.prefix[n:]
	for i := n; i < len(p); i++ {
		p[i] = 'x'
	}
	e.served += len(p)
	return len(p), nil
}

func TestReaderRefusesLargeFrameBeforeAllocating(t *testing.T) {
	const max = 1 << 20
	for _, size := range []int32{max + 1, 64 << 20, 1<<31 - 1} {
		src := &endless{prefix: sizePrefix(size)}
		r := NewReader(src, max, 4096)

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		body, err := r.Next()
		runtime.ReadMemStats(&after)

		require.ErrorIs(t, err, ErrFrameTooLarge)
		assert.Nil(t, body)
		assert.Contains(t, err.Error(), "maximum 1048576")
		// The source would have supplied the whole frame; the reader
		// must not have asked for more than one buffer's worth, nor
		// allocated anything near the frame's size.
		assert.Equal(t, 1, src.reads, "size %d: reads from the source", size)
		assert.LessOrEqual(t, src.served, 4096, "size %d: bytes read from the source", size)
		assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<10), "size %d: bytes allocated refusing the frame", size)
	}
}

func TestReaderReusesBuffer(t *testing.T) {
	a, b := bytes.Repeat([]byte{1}, 100), bytes.Repeat([]byte{2}, 50)
	big := bytes.Repeat([]byte{3}, keepBufBytes+1) // over what a Reader keeps
	c := bytes.Repeat([]byte{4}, 200)
	stream := concat(AppendFrame(nil, a), AppendFrame(nil, b), AppendFrame(nil, big), AppendFrame(nil, c))
	r := NewReader(bytes.NewReader(stream), 0, 64<<10)

	got1, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, a, got1)
	got2, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, b, got2)
	assert.Same(t, &got1[0], &got2[0], "a frame that fits reuses the buffer of the one before")
	assert.Equal(t, bytes.Repeat([]byte{2}, 50), got1[:50], "so the earlier slice is overwritten: callers must not keep it")

	got3, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, big, got3)
	got4, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, c, got4)
	assert.Same(t, &got1[0], &got4[0], "a frame above keepBufBytes gets its own buffer, which is not kept")
	assert.LessOrEqual(t, cap(r.buf), keepBufBytes)

	_, err = r.Next()
	assert.Same(t, io.EOF, err)
	assert.Nil(t, r.Frame(), "Frame is nil once Next fails")
}

func TestReaderDefaultMax(t *testing.T) {
	r := NewReader(bytes.NewReader(sizePrefix(DefaultMaxFrameBytes+1)), 0, 16)
	_, err := r.Next()
	require.ErrorIs(t, err, ErrFrameTooLarge)
	assert.Contains(t, err.Error(), "maximum 104857600")

	r = NewReader(bytes.NewReader(sizePrefix(DefaultMaxFrameBytes)), -5, 16)
	_, err = r.Next()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "a frame of exactly the default maximum is accepted (and here truncated)")
}

func TestReaderHasFrame(t *testing.T) {
	frame := AppendFrame(nil, []byte("hello"))
	for _, tc := range []struct {
		name     string
		buffered []byte // what the first Next leaves in the buffer after one frame
		want     bool
	}{
		{name: "nothing buffered", want: false},
		{name: "part of a size", buffered: frame[:3], want: false},
		{name: "a size only", buffered: frame[:4], want: false},
		{name: "a frame short one byte", buffered: frame[:len(frame)-1], want: false},
		{name: "a whole frame", buffered: frame, want: true},
		{name: "a whole empty frame", buffered: AppendFrame(nil, nil), want: true},
		{name: "a frame and part of the next", buffered: concat(frame, frame[:2]), want: true},
		{name: "a negative size", buffered: sizePrefix(-2), want: false},
		{name: "a frame larger than what is buffered", buffered: concat(sizePrefix(1000), make([]byte, 20)), want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := concat(AppendFrame(nil, []byte("first")), tc.buffered)
			r := NewReader(bytes.NewReader(stream), 0, 64)
			assert.False(t, r.HasFrame(), "nothing is buffered before the first read")
			_, err := r.Next()
			require.NoError(t, err)
			require.Equal(t, len(tc.buffered), r.br.Buffered(), "test setup: the rest of the stream is buffered")
			assert.Equal(t, tc.want, r.HasFrame())
		})
	}
}

// blockingReader returns its data and then blocks, as a quiet socket does.
type blockingReader struct {
	data  []byte
	block chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		<-b.block
		return 0, io.EOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func TestReaderHasFrameNeverBlocks(t *testing.T) {
	src := &blockingReader{data: concat(AppendFrame(nil, []byte("a")), []byte{0, 0}), block: make(chan struct{})}
	defer close(src.block)
	r := NewReader(src, 0, 64)
	_, err := r.Next()
	require.NoError(t, err)
	assert.False(t, r.HasFrame(), "half a size prefix is buffered and the source would block")
}

func TestAppendFrame(t *testing.T) {
	assert.Equal(t, []byte{0, 0, 0, 0}, AppendFrame(nil, nil))
	assert.Equal(t, []byte{9, 0, 0, 0, 3, 'a', 'b', 'c'}, AppendFrame([]byte{9}, []byte("abc")))
}

func TestReaderErrorsNameTheFrame(t *testing.T) {
	r := NewReader(bytes.NewReader(concat(sizePrefix(7), []byte("ab"))), 0, 16)
	_, err := r.Next()
	require.Error(t, err)
	assert.Equal(t, "reading 7-byte frame: unexpected EOF", err.Error())

	r = NewReader(bytes.NewReader([]byte{0}), 0, 16)
	_, err = r.Next()
	assert.Equal(t, "reading frame size: unexpected EOF", err.Error())

	r = NewReader(bytes.NewReader(sizePrefix(-3)), 0, 16)
	_, err = r.Next()
	assert.Equal(t, "negative frame size: size prefix -3", err.Error())
}

func TestReaderPassesOnSourceErrors(t *testing.T) {
	boom := errors.New("connection reset")
	r := NewReader(iotest.ErrReader(boom), 0, 16)
	_, err := r.Next()
	assert.ErrorIs(t, err, boom)

	r = NewReader(io.MultiReader(bytes.NewReader(sizePrefix(5)), iotest.ErrReader(boom)), 0, 16)
	_, err = r.Next()
	assert.ErrorIs(t, err, boom)
	assert.NotErrorIs(t, err, io.ErrUnexpectedEOF)
}

func BenchmarkReaderNext(b *testing.B) {
	// 64 pipelined 100-byte frames, as a client's burst of small requests.
	body := bytes.Repeat([]byte{7}, 100)
	var stream []byte
	for range 64 {
		stream = AppendFrame(stream, body)
	}
	src := bytes.NewReader(stream)
	r := NewReader(src, 0, 64<<10)
	b.SetBytes(int64(len(body) + 4))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Next(); err != nil {
			if err != io.EOF {
				b.Fatal(err)
			}
			src.Reset(stream)
			r.br.Reset(src)
			if _, err := r.Next(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func TestReaderNextDoesNotAllocate(t *testing.T) {
	var stream []byte
	for range 200 {
		stream = AppendFrame(stream, []byte("a small pipelined request"))
	}
	r := NewReader(bytes.NewReader(stream), 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "a frame that fits the kept buffer costs no allocation, size prefix included")
}
