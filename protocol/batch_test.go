package protocol

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// recordBatch builds a magic v2 batch of n records with kmsg, as a client
// would send it (uncompressed: the header is what matters here).
func recordBatch(n int, attrs int16, firstOffset int64) []byte {
	b := kmsg.RecordBatch{
		FirstOffset:          firstOffset,
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           attrs,
		LastOffsetDelta:      int32(n - 1),
		FirstTimestamp:       1_700_000_000_000,
		MaxTimestamp:         1_700_000_000_999,
		ProducerID:           42,
		ProducerEpoch:        3,
		FirstSequence:        7,
		NumRecords:           int32(n),
	}
	var recs []byte
	for i := range n {
		r := kmsg.Record{OffsetDelta: int32(i), Key: []byte("k"), Value: []byte("value")}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		recs = r.AppendTo(recs)
	}
	b.Records = recs
	raw := b.AppendTo(nil)
	// Length counts the bytes after the length field.
	l := int32(len(raw) - 12)
	raw[8], raw[9], raw[10], raw[11] = byte(l>>24), byte(l>>16), byte(l>>8), byte(l)
	return raw
}

func TestParseBatchHeader(t *testing.T) {
	raw := recordBatch(5, int16(CodecZstd)|TransactionalBit, 100)
	h, err := ParseBatchHeader(raw)
	require.NoError(t, err)
	assert.Equal(t, BatchHeader{
		BaseOffset: 100, Length: int32(len(raw) - 12), Magic: 2, CRC: h.CRC,
		Attributes: int16(CodecZstd) | TransactionalBit, LastOffsetDelta: 4,
		FirstTimestamp: 1_700_000_000_000, MaxTimestamp: 1_700_000_000_999,
		ProducerID: 42, ProducerEpoch: 3, BaseSequence: 7, Records: 5,
	}, h)
	assert.Equal(t, CodecZstd, h.Codec())
	assert.True(t, h.Transactional())
	assert.False(t, h.Control())
	assert.Equal(t, len(raw), h.Size())
	assert.Equal(t, "zstd", h.Codec().String())
}

func TestParseBatchHeaderBad(t *testing.T) {
	good := recordBatch(1, 0, 0)
	badMagic := append([]byte(nil), good...)
	badMagic[batchMagicOffset] = 7
	shortLen := append([]byte(nil), good...)
	shortLen[8], shortLen[9], shortLen[10], shortLen[11] = 0, 0, 0, 10
	for name, b := range map[string][]byte{
		"empty":            nil,
		"short":            good[:16],
		"v2 header cut":    good[:40],
		"unknown magic":    badMagic,
		"length too short": shortLen,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseBatchHeader(b)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
}

func TestCountBatches(t *testing.T) {
	a, b := recordBatch(3, 0, 0), recordBatch(7, int16(CodecLZ4), 3)
	ctrl := recordBatch(1, ControlBit|TransactionalBit, 10)
	all := append(append(append([]byte(nil), a...), b...), ctrl...)

	s, err := CountBatches(all)
	require.NoError(t, err)
	assert.Equal(t, BatchStats{Batches: 3, Records: 10, Bytes: int64(len(all)), Control: 1}, s)

	// A Fetch response may end in a partial batch: counted apart, no error.
	cut := all[:len(a)+len(b)+20]
	s, err = CountBatches(cut)
	require.NoError(t, err)
	assert.Equal(t, BatchStats{Batches: 2, Records: 10, Bytes: int64(len(a) + len(b)), Partial: 20}, s)

	s, err = CountBatches(nil)
	require.NoError(t, err)
	assert.Zero(t, s)

	garbage := append(append([]byte(nil), a...), make([]byte, 80)...)
	garbage[len(a)+11] = 60 // a length that fits, then magic 0 with a too-short body
	garbage[len(a)+batchMagicOffset] = 9
	s, err = CountBatches(garbage)
	require.ErrorIs(t, err, ErrMalformed)
	assert.Equal(t, 1, s.Batches, "what was counted before the bad header stands")
}

func TestCountBatchesDoesNotAllocate(t *testing.T) {
	all := append(recordBatch(3, 0, 0), recordBatch(4, 0, 3)...)
	allocs := testing.AllocsPerRun(100, func() { _, _ = CountBatches(all) })
	assert.Zero(t, allocs)
}

func BenchmarkCountBatches(b *testing.B) {
	var all []byte
	for i := range 16 {
		all = append(all, recordBatch(100, 0, int64(i*100))...)
	}
	b.SetBytes(int64(len(all)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CountBatches(all); err != nil {
			b.Fatal(err)
		}
	}
}
