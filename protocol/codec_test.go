package protocol

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var allCodecs = []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLZ4, CodecZstd}

// kgoCodec maps our codec to franz-go's, whose compressor and decompressor
// are an independent implementation to check ours against.
func kgoCodec(c Codec) kgo.CompressionCodec {
	switch c {
	case CodecGzip:
		return kgo.GzipCompression()
	case CodecSnappy:
		return kgo.SnappyCompression()
	case CodecLZ4:
		return kgo.Lz4Compression()
	case CodecZstd:
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// kgoCompress compresses src as a kgo producer would.
func kgoCompress(t testing.TB, c Codec, src []byte) []byte {
	t.Helper()
	if c == CodecNone {
		return bytes.Clone(src)
	}
	comp, err := kgo.DefaultCompressor(kgoCodec(c))
	require.NoError(t, err)
	out, typ := comp.Compress(new(bytes.Buffer), src)
	require.Equal(t, int8(c), int8(typ))
	return bytes.Clone(out)
}

// payload is compressible but not trivial: record-like JSON lines with a
// pseudo-random id in each, about 3:1 under zstd, as log data often is.
func payload(n int) []byte {
	var b []byte
	x := uint64(n) | 1
	for i := 0; len(b) < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b = fmt.Appendf(b, `{"seq":%d,"trace":"%016x","host":"web-%d","msg":"GET /api/v1/items/%d 200","ms":%d}`, i, x, x%7, x%100000, x%900)
	}
	return b[:n]
}

func newTestCodecs(t testing.TB, max int) *Codecs {
	t.Helper()
	c, err := NewCodecs(max)
	require.NoError(t, err)
	return c
}

func TestCodecsRoundTripAgainstKgo(t *testing.T) {
	c := newTestCodecs(t, 8<<20)
	dec := kgo.DefaultDecompressor()
	for _, codec := range allCodecs {
		for _, n := range []int{0, 1, 100, 70_000, 1 << 20} {
			t.Run(fmt.Sprintf("%s/%d", codec, n), func(t *testing.T) {
				src := payload(n)
				// ours -> kgo
				ours, err := c.Compress([]byte("prefix"), codec, 0, src)
				require.NoError(t, err)
				require.Equal(t, "prefix", string(ours[:6]), "Compress appends")
				got, err := dec.Decompress(ours[6:], kgo.CompressionCodecType(codec))
				require.NoError(t, err)
				assert.True(t, bytes.Equal(src, got), "kgo reads what we wrote")
				// kgo -> ours
				theirs := kgoCompress(t, codec, src)
				got, err = c.Decompress([]byte("x"), codec, theirs)
				require.NoError(t, err)
				assert.Equal(t, byte('x'), got[0], "Decompress appends")
				assert.True(t, bytes.Equal(src, got[1:]), "we read what kgo wrote")
			})
		}
	}
}

func TestCodecsLevels(t *testing.T) {
	c := newTestCodecs(t, 8<<20)
	src := payload(200_000)
	for _, tt := range []struct {
		codec  Codec
		levels []int
	}{
		{CodecZstd, []int{-5, 1, 3, 9, 19}},
		{CodecGzip, []int{1, 6, 9}},
		{CodecLZ4, []int{1, 9, 17}},
	} {
		for _, l := range tt.levels {
			out, err := c.Compress(nil, tt.codec, l, src)
			require.NoError(t, err, "%s level %d", tt.codec, l)
			back, err := c.Decompress(nil, tt.codec, out)
			require.NoError(t, err)
			require.True(t, bytes.Equal(src, back), "%s level %d", tt.codec, l)
		}
	}
	_, err := c.Compress(nil, CodecGzip, 42, src)
	assert.ErrorContains(t, err, "gzip level 42")
}

// xerial frames src the way snappy-java's SnappyOutputStream does.
func xerial(src []byte, block int) []byte {
	out := append([]byte(nil), xerialMagic...)
	out = binary.BigEndian.AppendUint32(out, 1)
	out = binary.BigEndian.AppendUint32(out, 1)
	for len(src) > 0 {
		n := min(block, len(src))
		enc := s2.EncodeSnappy(nil, src[:n])
		out = binary.BigEndian.AppendUint32(out, uint32(len(enc)))
		out = append(out, enc...)
		src = src[n:]
	}
	return out
}

func TestSnappyXerialFraming(t *testing.T) {
	c := newTestCodecs(t, 1<<20)
	src := payload(100_000)
	got, err := c.Decompress(nil, CodecSnappy, xerial(src, 32<<10))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(src, got))

	bad := xerial(src, 32<<10)
	_, err = c.Decompress(nil, CodecSnappy, bad[:len(bad)-3])
	assert.Error(t, err, "cut-off xerial block")
}

// TestDecompressionBombs: a small input that expands past the cap fails
// with ErrTooLarge, for every codec and both snappy framings.
func TestDecompressionBombs(t *testing.T) {
	const capBytes = 1 << 20
	c := newTestCodecs(t, capBytes)
	zeros := make([]byte, 16<<20)
	for _, tt := range []struct {
		name  string
		codec Codec
		input []byte
	}{
		{"none", CodecNone, make([]byte, capBytes+1)},
		{"gzip", CodecGzip, kgoCompress(t, CodecGzip, zeros)},
		{"snappy", CodecSnappy, kgoCompress(t, CodecSnappy, zeros)},
		{"snappy xerial", CodecSnappy, xerial(zeros, 512<<10)},
		{"lz4", CodecLZ4, kgoCompress(t, CodecLZ4, zeros)},
		{"zstd", CodecZstd, kgoCompress(t, CodecZstd, zeros)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.Less(t, len(tt.input), capBytes+2)
			out, err := c.Decompress(nil, tt.codec, tt.input)
			require.ErrorIs(t, err, ErrTooLarge)
			assert.LessOrEqual(t, cap(out), 2*capBytes, "output not grown far past the cap")
		})
	}
}

func TestParseCodec(t *testing.T) {
	for _, c := range allCodecs {
		got, err := ParseCodec(c.String())
		require.NoError(t, err)
		assert.Equal(t, c, got)
	}
	_, err := ParseCodec("brotli")
	assert.ErrorIs(t, err, ErrUnknownCodec)
}

// dataBatch builds a magic v2 batch of n records compressed with codec by
// kgo's compressor, with a correct CRC: what a real producer sends.
func dataBatch(t testing.TB, n int, codec Codec, attrs int16) (batch, records []byte) {
	t.Helper()
	for i := range n {
		r := kmsg.Record{OffsetDelta: int32(i), TimestampDelta: int32(i),
			Key: fmt.Appendf(nil, "key-%d", i), Value: payload(200 + i)}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		records = r.AppendTo(records)
	}
	b := kmsg.RecordBatch{
		FirstOffset: 0, PartitionLeaderEpoch: -1, Magic: 2,
		Attributes:      attrs | int16(codec),
		LastOffsetDelta: int32(n - 1), FirstTimestamp: 1_700_000_000_000, MaxTimestamp: 1_700_000_000_000 + int64(n),
		ProducerID: 4242, ProducerEpoch: 7, FirstSequence: 1000, NumRecords: int32(n),
		Records: kgoCompress(t, codec, records),
	}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[batchLengthOffset:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[batchCRCOffset:], crc32.Checksum(raw[batchAttributesOffset:], castagnoli))
	return raw, records
}

func TestRecompressRecords(t *testing.T) {
	c := newTestCodecs(t, 8<<20)
	dec := kgo.DefaultDecompressor()
	for _, from := range allCodecs {
		for _, to := range allCodecs {
			for _, attrs := range []int16{0, TransactionalBit, TimestampTypeBit} {
				if from == to {
					continue
				}
				t.Run(fmt.Sprintf("%s->%s attrs=%#x", from, to, attrs), func(t *testing.T) {
					in, recs := dataBatch(t, 20, from, attrs)
					out, _, st, changed := c.RecompressRecords([]byte("p"), in, nil, Recompression{Codec: to, Level: 3})
					require.True(t, changed)
					require.Equal(t, 1, st.ByCodec[from].Batches)
					assert.Equal(t, int64(len(in)), st.ByCodec[from].In)
					assert.Equal(t, int64(len(out)-1), st.ByCodec[from].Out)
					out = out[1:]
					before, err := ParseBatchHeader(in)
					require.NoError(t, err)
					after, err := ParseBatchHeader(out)
					require.NoError(t, err)
					assert.Equal(t, len(out), after.Size())
					assert.Equal(t, to, after.Codec())
					assert.Equal(t, before.Attributes&^CodecMask, after.Attributes&^CodecMask, "other attribute bits kept")
					// Everything but length, CRC and attributes is kept.
					want, got := before, after
					want.Length, want.CRC, want.Attributes = 0, 0, 0
					got.Length, got.CRC, got.Attributes = 0, 0, 0
					assert.Equal(t, want, got)
					assert.Equal(t, crc32.Checksum(out[batchAttributesOffset:], castagnoli), after.CRC)
					// kmsg agrees on the layout, and kgo reads the records.
					var rb kmsg.RecordBatch
					require.NoError(t, rb.ReadFrom(out))
					plain, err := dec.Decompress(rb.Records, kgo.CompressionCodecType(to))
					require.NoError(t, err)
					assert.True(t, bytes.Equal(recs, plain), "records byte for byte")
				})
			}
		}
	}
}

func TestRecompressRecordsLeavesAlone(t *testing.T) {
	c := newTestCodecs(t, 1<<20)
	zstdRule := Recompression{Codec: CodecZstd, Level: 3, MinBatchBytes: 512}
	small := appendSmallBatch(t)
	plain, _ := dataBatch(t, 10, CodecNone, 0)
	control, _ := dataBatch(t, 1, CodecNone, ControlBit|TransactionalBit)
	already, _ := dataBatch(t, 10, CodecZstd, 0)
	badCRC := bytes.Clone(plain)
	badCRC[len(badCRC)-1] ^= 0xff
	notLZ4 := bytes.Clone(plain) // claims lz4, holds plain records
	notLZ4[batchAttributesOffset+1] |= byte(CodecLZ4)
	binary.BigEndian.PutUint32(notLZ4[batchCRCOffset:], crc32.Checksum(notLZ4[batchAttributesOffset:], castagnoli))
	legacy := legacyMessage()
	bomb := bombBatch(t, 4<<20)

	tests := []struct {
		name    string
		in      []byte
		skipped int
	}{
		{"below min_batch_bytes", small, 0},
		{"control batch", control, 0},
		{"already the target codec", already, 0},
		{"wrong CRC", badCRC, 1},
		{"magic v1", legacy, 0},
		{"decompression bomb", bomb, 1},
		{"does not decompress", notLZ4, 1},
		{"cut off", plain[:len(plain)-1], 0},
		{"garbage", []byte("not a batch at all, just some bytes in a row"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, st, changed := c.RecompressRecords(nil, tt.in, nil, zstdRule)
			assert.False(t, changed)
			assert.Equal(t, tt.in, out)
			assert.Equal(t, tt.skipped, st.Skipped)
			if tt.skipped > 0 {
				assert.Error(t, st.Failure)
			}
		})
	}

	// In a run of batches, each is judged on its own and order is kept.
	run := append(append(append(bytes.Clone(control), plain...), already...), plain...)
	out, _, st, changed := c.RecompressRecords(nil, run, nil, zstdRule)
	require.True(t, changed)
	assert.Equal(t, 2, st.ByCodec[CodecNone].Batches)
	assert.Equal(t, control, out[:len(control)])
	stats, err := CountBatches(out)
	require.NoError(t, err)
	assert.Equal(t, 4, stats.Batches)
	assert.Equal(t, 1, stats.Control)
	assert.Equal(t, int64(30), stats.Records)
	assert.Zero(t, stats.Partial)
}

func appendSmallBatch(t testing.TB) []byte {
	b, _ := dataBatch(t, 1, CodecNone, 0)
	require.Less(t, len(b), 512)
	return b
}

// bombBatch is a valid batch whose gzip records expand to n zero bytes.
func bombBatch(t testing.TB, n int) []byte {
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, Attributes: int16(CodecGzip), NumRecords: 1,
		Records: kgoCompress(t, CodecGzip, make([]byte, n))}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[batchLengthOffset:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[batchCRCOffset:], crc32.Checksum(raw[batchAttributesOffset:], castagnoli))
	return raw
}

// legacyMessage is a magic v1 message: offset, size, crc, magic, attributes,
// timestamp, key, value.
func legacyMessage() []byte {
	var m []byte
	m = binary.BigEndian.AppendUint32(m, 0) // crc, not checked here
	m = append(m, 1, 0)                     // magic, attributes
	m = binary.BigEndian.AppendUint64(m, 1_700_000_000_000)
	m = binary.BigEndian.AppendUint32(m, 0xffffffff) // null key
	m = binary.BigEndian.AppendUint32(m, 5)
	m = append(m, "hello"...)
	out := binary.BigEndian.AppendUint64(nil, 0)
	out = binary.BigEndian.AppendUint32(out, uint32(len(m)))
	return append(out, m...)
}

func TestRewriteProduceRequest(t *testing.T) {
	for _, v := range []int16{3, 7, 8, 9, 10, 11, 12, 13} {
		for _, txn := range []bool{false, true} {
			t.Run(fmt.Sprintf("v%d txn=%v", v, txn), func(t *testing.T) {
				req := produceRequestWith(v, 3, 4, txn)
				body := req.AppendTo(nil)
				// Replace every other partition's records with something of
				// another length (bigger for some, smaller for others).
				i := 0
				var replaced [][]byte
				out, err := RewriteProduceRequest([]byte("hdr"), v, body, func(pd PartitionData) ([]byte, bool) {
					i++
					if i%2 == 0 {
						return nil, false
					}
					n := (i * 37) % 300
					r := bytes.Repeat([]byte{byte(i)}, n)
					replaced = append(replaced, r)
					return r, true
				})
				require.NoError(t, err)
				require.Equal(t, "hdr", string(out[:3]))
				got := kmsg.NewPtrProduceRequest()
				got.SetVersion(v)
				require.NoError(t, got.ReadFrom(out[3:]))
				// Apply the same change to the original with kmsg.
				i = 0
				k := 0
				for ti := range req.Topics {
					for pi := range req.Topics[ti].Partitions {
						p := &req.Topics[ti].Partitions[pi]
						if p.Records == nil {
							continue
						}
						i++
						if i%2 == 1 {
							p.Records = replaced[k]
							k++
						}
					}
				}
				assert.Equal(t, req.AppendTo(nil), got.AppendTo(nil))
			})
		}
	}
}

func TestRewriteProduceRequestKeepsAllWhenNothingChanges(t *testing.T) {
	req := produceRequestWith(9, 2, 2, true)
	body := req.AppendTo(nil)
	out, err := RewriteProduceRequest(nil, 9, body, func(PartitionData) ([]byte, bool) { return nil, false })
	require.NoError(t, err)
	assert.Equal(t, body, out)
	_, err = RewriteProduceRequest(nil, 9, body[:len(body)-2], func(PartitionData) ([]byte, bool) { return []byte{1}, true })
	assert.ErrorIs(t, err, ErrMalformed)
}
