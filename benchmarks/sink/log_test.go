package sink

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
)

// testBatch returns a v2 record batch header with records records and
// pad bytes of body: enough for the sink, which reads headers only.
func testBatch(records int32, pad int) []byte {
	b := make([]byte, batchHeaderBytes+pad)
	binary.BigEndian.PutUint64(b[baseOffsetAt:], 12345) // the sink overwrites it
	binary.BigEndian.PutUint32(b[batchLengthAt:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[leaderEpochAt:], 0xffffffff)
	b[magicAt] = 2
	binary.BigEndian.PutUint32(b[lastOffsetDeltaAt:], uint32(records-1))
	binary.BigEndian.PutUint32(b[recordCountAt:], uint32(records))
	for i := range pad {
		b[batchHeaderBytes+i] = byte(i)
	}
	return b
}

// readAll reads as a fetch does and returns the runs, releasing them.
func readAll(p *partition, offset int64, limit int, minOne bool, w *waiter) ([][]byte, readResult) {
	var rs reads
	r := p.read(&rs, offset, limit, minOne, w)
	runs := append([][]byte(nil), rs.runs...)
	rs.release()
	return runs, r
}

func TestValidBatches(t *testing.T) {
	good := testBatch(3, 10)
	// with returns a batch of records records changed by set.
	with := func(records int32, set func(b []byte)) []byte {
		b := testBatch(records, 0)
		set(b)
		return b
	}
	putInt32 := func(at int, v uint32) func(b []byte) {
		return func(b []byte) { binary.BigEndian.PutUint32(b[at:], v) }
	}
	for _, tc := range []struct {
		name    string
		records []byte
		ok      bool
	}{
		{"one batch", good, true},
		{"two batches", append(append([]byte{}, good...), testBatch(1, 0)...), true},
		{"empty", nil, false},
		{"short header", good[:batchHeaderBytes-1], false},
		{"truncated body", good[:len(good)-1], false},
		{"trailing bytes", append(append([]byte{}, good...), 1, 2, 3), false},
		{"magic 1", with(3, func(b []byte) { b[magicAt] = 1 }), false},
		{"zero records", with(1, putInt32(recordCountAt, 0)), false},
		{"count and delta disagree", with(3, putInt32(lastOffsetDeltaAt, 5)), false},
		{"length below the header", with(1, putInt32(batchLengthAt, 10)), false},
		{"negative length", with(1, putInt32(batchLengthAt, 0xffffffff)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.ok, validBatches(tc.records))
		})
	}
}

// TestPartitionAppendRead checks offset assignment, the header fields the
// sink sets, that the caller's buffer is copied, and the read limits.
func TestPartitionAppendRead(t *testing.T) {
	p := newPartition(newRetention(1<<30), 0)
	in := testBatch(5, 100)
	base, logStart, code := p.append(in)
	require.Zero(t, code)
	assert.Equal(t, int64(0), base)
	assert.Equal(t, int64(0), logStart)
	assert.Equal(t, uint64(12345), binary.BigEndian.Uint64(in), "the caller's bytes must not change")
	base, _, code = p.append(append(testBatch(2, 10), testBatch(3, 10)...))
	require.Zero(t, code)
	assert.Equal(t, int64(5), base)
	_, _, code = p.append(testBatch(0, 0))
	assert.Equal(t, kerr.CorruptMessage.Code, code)

	runs, r := readAll(p, 0, 1<<20, false, nil)
	require.Zero(t, r.code)
	assert.Equal(t, int64(10), r.hw)
	require.Len(t, runs, 1, "adjacent batches of a segment come as one run")
	all := runs[0]
	assert.Len(t, all, r.n)
	var bases []int64
	for b := all; len(b) > 0; {
		bases = append(bases, int64(binary.BigEndian.Uint64(b)))
		assert.Equal(t, uint32(0), binary.BigEndian.Uint32(b[leaderEpochAt:]), "leader epoch")
		b = b[12+binary.BigEndian.Uint32(b[batchLengthAt:]):]
	}
	assert.Equal(t, []int64{0, 5, 7}, bases)

	// From the middle of a batch: the whole batch holding the offset.
	runs, r = readAll(p, 6, 1<<20, false, nil)
	require.Len(t, runs, 1)
	assert.Equal(t, int64(5), int64(binary.BigEndian.Uint64(runs[0])))
	assert.Equal(t, 2*(batchHeaderBytes+10), r.n)

	// A limit below the first batch: nothing, unless minOne.
	runs, r = readAll(p, 0, 10, false, nil)
	assert.Empty(t, runs)
	assert.Zero(t, r.n)
	runs, r = readAll(p, 0, 10, true, nil)
	require.Len(t, runs, 1)
	assert.Equal(t, batchHeaderBytes+100, r.n, "minOne returns exactly one batch")

	_, r = readAll(p, 10, 1<<20, false, nil)
	assert.Zero(t, r.code, "the high watermark is a valid fetch offset")
	assert.Zero(t, r.n)
	_, r = readAll(p, 11, 1<<20, false, nil)
	assert.Equal(t, kerr.OffsetOutOfRange.Code, r.code)
}

// TestRetentionDropsOldestSegments fills two partitions past a small cap:
// the oldest segments go first, whichever partition holds them, the
// total stays within the cap, and log start offsets follow.
func TestRetentionDropsOldestSegments(t *testing.T) {
	ret := newRetention(64 << 10)
	require.Equal(t, 4<<10, ret.maxSegment)
	a, b := newPartition(ret, 0), newPartition(ret, 0)
	for range 100 {
		_, _, code := a.append(testBatch(1, 1000))
		require.Zero(t, code)
	}
	for range 100 {
		_, _, code := b.append(testBatch(1, 1000))
		require.Zero(t, code)
	}
	assert.LessOrEqual(t, ret.total.Load(), int64(64<<10))
	aStart, aEnd, _ := a.offsets()
	bStart, bEnd, _ := b.offsets()
	assert.Equal(t, int64(100), aEnd)
	assert.Equal(t, int64(100), bEnd)
	assert.Equal(t, aEnd, aStart, "a's segments are older than all of b's and must all be gone")
	assert.Positive(t, bStart)
	assert.Less(t, bStart, bEnd)
	_, r := readAll(b, bStart-1, 1<<20, true, nil)
	assert.Equal(t, kerr.OffsetOutOfRange.Code, r.code)
	runs, r := readAll(b, bStart, 1<<20, true, nil)
	require.Zero(t, r.code)
	require.NotEmpty(t, runs)
	assert.Equal(t, bStart, int64(binary.BigEndian.Uint64(runs[0])))

	// A batch larger than the cap is kept until the next one comes.
	_, _, code := a.append(testBatch(1, 100<<10))
	require.Zero(t, code)
	aStart, aEnd, _ = a.offsets()
	assert.Equal(t, int64(100), aStart)
	assert.Equal(t, int64(101), aEnd)
}

func TestWaiterWokenByAppend(t *testing.T) {
	p := newPartition(newRetention(1<<30), 0)
	w := newWaiter()
	_, r := readAll(p, 0, 1<<20, true, w)
	require.True(t, r.registered)
	p.append(testBatch(1, 0))
	select {
	case <-w.ch:
	default:
		t.Fatal("an append must wake a registered waiter")
	}
	_, r = readAll(p, 1, 1<<20, true, w)
	require.True(t, r.registered)
	p.unregister(w)
	p.append(testBatch(1, 0))
	select {
	case <-w.ch:
		t.Fatal("an unregistered waiter must not be woken")
	default:
	}
}

// TestSegmentReuseWaitsForFetches checks that the memory of a dropped
// segment is reused only after the fetch holding its bytes lets go, and
// then is.
func TestSegmentReuseWaitsForFetches(t *testing.T) {
	ret := newRetention(64 << 10)
	p := newPartition(ret, 0)
	for range 200 {
		p.append(testBatch(1, 1000))
	}
	start, _, _ := p.offsets()
	var held reads
	r := p.read(&held, start, 4000, true, nil)
	require.Zero(t, r.code)
	require.NotEmpty(t, held.runs)
	want := append([]byte(nil), held.runs[0]...)
	seg := held.held[0]

	for range 200 { // drops every segment there was, the held one too
		p.append(testBatch(1, 1000))
	}
	require.True(t, seg.dropped.Load())
	assert.False(t, seg.recycled.Load(), "a held segment must not be recycled")
	assert.Equal(t, want, held.runs[0], "held bytes must not change")

	held.release()
	assert.True(t, seg.recycled.Load(), "the last release recycles a dropped segment")
	assert.Equal(t, int32(0), seg.refs.Load())
}
