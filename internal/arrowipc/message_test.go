package arrowipc

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stream writes batches of the given row counts with arrow-go's IPC writer.
func stream(t testing.TB, rows []int, opts ...ipc.Option) []byte {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String},
	}, nil)
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, append([]ipc.Option{ipc.WithSchema(schema)}, opts...)...)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, n := range rows {
		for i := range n {
			b.Field(0).(*array.Int64Builder).Append(int64(i))
			b.Field(1).(*array.StringBuilder).Append("row")
		}
		rec := b.NewRecordBatch()
		require.NoError(t, w.Write(rec))
		rec.Release()
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

func TestReaderParsesArrowGoStreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []ipc.Option
		codec Codec
	}{
		{"uncompressed", nil, CodecNone},
		{"lz4", []ipc.Option{ipc.WithLZ4()}, CodecLZ4Frame},
		{"zstd", []ipc.Option{ipc.WithZstd()}, CodecZSTD},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := []int{10, 0, 1000, 3}
			r := NewReader(bytes.NewReader(stream(t, rows, tc.opts...)), 1<<20, 1<<30)
			meta, h, body, err := r.Next()
			require.NoError(t, err)
			assert.Equal(t, KindSchema, h.Kind)
			assert.Zero(t, h.BodyLength)
			assert.Empty(t, body)
			assert.NotEmpty(t, meta)
			for _, n := range rows {
				_, h, body, err := r.Next()
				require.NoError(t, err)
				assert.Equal(t, KindRecordBatch, h.Kind)
				assert.Equal(t, int64(n), h.Rows)
				assert.Equal(t, tc.codec, h.Codec)
				assert.Len(t, body, int(h.BodyLength))
			}
			_, _, _, err = r.Next()
			assert.ErrorIs(t, err, io.EOF)
		})
	}
}

func TestReaderLimitsAndTruncation(t *testing.T) {
	s := stream(t, []int{100})
	_, _, _, err := NewReader(bytes.NewReader(s), 16, 1<<30).Next()
	assert.ErrorIs(t, err, ErrMalformed, "metadata over the limit")

	r := NewReader(bytes.NewReader(s), 1<<20, 8)
	_, _, _, err = r.Next() // schema: no body
	require.NoError(t, err)
	_, _, _, err = r.Next()
	assert.ErrorIs(t, err, ErrMalformed, "body over the limit")

	r = NewReader(bytes.NewReader(s[:len(s)-20]), 1<<20, 1<<30)
	_, _, _, err = r.Next()
	require.NoError(t, err)
	_, _, _, err = r.Next()
	assert.ErrorIs(t, err, ErrTruncated)
}

func TestAppendMessageRoundTrips(t *testing.T) {
	r := NewReader(bytes.NewReader(stream(t, nil)), 1<<20, 0)
	meta, _, _, err := r.Next()
	require.NoError(t, err)
	enc := AppendMessage(nil, meta)
	assert.Zero(t, len(enc)%8)
	meta2, h, _, err := NewReader(bytes.NewReader(enc), 1<<20, 0).Next()
	require.NoError(t, err)
	assert.Equal(t, KindSchema, h.Kind)
	assert.Equal(t, meta, meta2[:len(meta)])
}

func TestParseHeaderRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {1, 2}, {0xff, 0xff, 0xff, 0x7f}, {4, 0, 0, 0, 0xff, 0xff, 0, 0}, bytes.Repeat([]byte{0xff}, 64)} {
		_, err := ParseHeader(b)
		assert.True(t, errors.Is(err, ErrMalformed), "%x: %v", b, err)
	}
}

func FuzzParseHeader(f *testing.F) {
	r := NewReader(bytes.NewReader(stream(f, []int{5}, ipc.WithLZ4())), 1<<20, 1<<30)
	for {
		meta, _, _, err := r.Next()
		if err != nil {
			break
		}
		f.Add(append([]byte(nil), meta...))
	}
	f.Add([]byte{4, 0, 0, 0, 0xfc, 0xff, 0xff, 0xff, 4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err == nil {
			assert.GreaterOrEqual(t, h.BodyLength, int64(0))
			assert.GreaterOrEqual(t, h.Rows, int64(0))
		}
		_, _, _, _ = NewReader(bytes.NewReader(b), 1<<16, 1<<16).Next()
	})
}
