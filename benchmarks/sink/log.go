package sink

import (
	"encoding/binary"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
)

// The fields of a v2 record batch header (KIP-98) that the sink reads or
// writes. The CRC covers the bytes from the attributes on, so the base
// offset and the partition leader epoch can be set without recomputing it.
const (
	batchHeaderBytes  = 61
	baseOffsetAt      = 0  // int64, set by the broker
	batchLengthAt     = 8  // int32, bytes after this field
	leaderEpochAt     = 12 // int32, set by the broker
	magicAt           = 16 // int8, 2
	lastOffsetDeltaAt = 23 // int32
	maxTimestampAt    = 35 // int64
	recordCountAt     = 57 // int32
)

// Segment sizes: a partition's first segment is small, so that thousands of
// idle partitions cost little; each next one doubles up to the maximum,
// which the retention cap may lower. A batch larger than that gets a
// segment of its own size.
const (
	minSegmentBytes = 16 << 10
	maxSegmentBytes = 4 << 20
)

// segment is a run of memory holding whole batches back to back. Bytes of
// a stored batch never change while anything can read them: a fetch slices
// them under the partition's lock, takes a reference, and copies them out
// after releasing the lock; a dropped segment's memory is reused only once
// the last reference is gone.
type segment struct {
	p   *partition
	buf []byte
	seq uint64 // order within the partition
	// refs counts fetch responses holding the segment's bytes. Only
	// partition.read adds to it, under p.mu and only while the segment is
	// live, so once dropped it only falls.
	refs     atomic.Int32
	dropped  atomic.Bool // set under p.mu
	recycled atomic.Bool // the buffer went back to the pool (once)
}

// release lets go of a reference taken by partition.read.
func (s *segment) release() {
	if s.refs.Add(-1) == 0 && s.dropped.Load() {
		s.recycle()
	}
}

// drop marks a segment gone from its partition, under p.mu, and recycles
// its memory unless a fetch still holds it.
func (s *segment) drop() {
	s.dropped.Store(true)
	s.p.ret.total.Add(-int64(cap(s.buf)))
	if s.refs.Load() == 0 {
		s.recycle()
	}
}

func (s *segment) recycle() {
	if s.recycled.CompareAndSwap(false, true) {
		s.p.ret.put(s.buf)
	}
}

// batch locates one stored batch.
type batch struct {
	base, next int64 // offsets: first, and one past the last
	seg        *segment
	start, end int // bytes of seg.buf
}

// waiter is a long-polling fetch, woken by the next append to a partition
// it is registered with.
type waiter struct{ ch chan struct{} }

func newWaiter() *waiter { return &waiter{ch: make(chan struct{}, 1)} }

func (w *waiter) wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// drain forgets a wake-up that came after the last wait ended.
func (w *waiter) drain() {
	select {
	case <-w.ch:
	default:
	}
}

// partition is the log of one partition. All its state is under mu, held
// only for index work: bytes are copied in under it (once) but never out.
type partition struct {
	ret    *retention
	leader int32

	mu       sync.Mutex
	logStart int64 // offset of batches[0], or next when empty
	next     int64 // high watermark: the offset the next record gets
	batches  []batch
	segs     []*segment // live segments, oldest first
	segSeq   uint64
	segBytes int // size of the next segment
	waiters  []*waiter
	deleted  bool
}

func newPartition(ret *retention, leader int32) *partition {
	return &partition{ret: ret, leader: leader, segBytes: min(minSegmentBytes, ret.maxSegment)}
}

// validBatches checks that records is one or more whole v2 record batches
// whose record count matches their offset span, so offsets stay contiguous.
// It reads headers only.
func validBatches(records []byte) bool {
	if len(records) == 0 {
		return false
	}
	for len(records) > 0 {
		if len(records) < batchHeaderBytes || records[magicAt] != 2 {
			return false
		}
		size := 12 + int64(int32(binary.BigEndian.Uint32(records[batchLengthAt:])))
		count := int32(binary.BigEndian.Uint32(records[recordCountAt:]))
		delta := int32(binary.BigEndian.Uint32(records[lastOffsetDeltaAt:]))
		if size < batchHeaderBytes || size > int64(len(records)) || count < 1 || delta != count-1 {
			return false
		}
		records = records[size:]
	}
	return true
}

// append stores the batches of records (a Produce partition's bytes, which
// the caller's buffer may reuse after), assigning them the next offsets. It
// returns the first batch's base offset and the log start offset, or an
// error code.
func (p *partition) append(records []byte) (base, logStart int64, code int16) {
	if !validBatches(records) {
		return -1, -1, kerr.CorruptMessage.Code
	}
	p.mu.Lock()
	if p.deleted {
		p.mu.Unlock()
		return -1, -1, kerr.UnknownTopicOrPartition.Code
	}
	seg, fresh := p.room(len(records))
	start := len(seg.buf)
	seg.buf = append(seg.buf, records...)
	base = p.next
	for off := start; off < len(seg.buf); {
		b := seg.buf[off:]
		size := 12 + int(int32(binary.BigEndian.Uint32(b[batchLengthAt:])))
		count := int64(int32(binary.BigEndian.Uint32(b[recordCountAt:])))
		binary.BigEndian.PutUint64(b[baseOffsetAt:], uint64(p.next))
		binary.BigEndian.PutUint32(b[leaderEpochAt:], 0)
		p.batches = append(p.batches, batch{base: p.next, next: p.next + count, seg: seg, start: off, end: off + size})
		p.next += count
		off += size
	}
	for _, w := range p.waiters {
		w.wake()
	}
	clear(p.waiters)
	p.waiters = p.waiters[:0]
	logStart = p.logStart
	p.mu.Unlock()
	if fresh != nil {
		p.ret.add(fresh)
	}
	return base, logStart, 0
}

// room returns a segment with n bytes free, and the segment when it is new
// so that the caller registers it for retention after unlocking.
func (p *partition) room(n int) (seg, fresh *segment) {
	if k := len(p.segs); k > 0 {
		if s := p.segs[k-1]; cap(s.buf)-len(s.buf) >= n {
			return s, nil
		}
	}
	size := max(n, p.segBytes)
	p.segBytes = min(2*p.segBytes, p.ret.maxSegment)
	s := &segment{p: p, buf: p.ret.get(size), seq: p.segSeq}
	p.segSeq++
	p.segs = append(p.segs, s)
	p.ret.total.Add(int64(size))
	return s, s
}

// readResult is what a read found besides the batch bytes.
type readResult struct {
	n            int // bytes of batches read
	hw, logStart int64
	code         int16
	registered   bool
}

// reads collects what partition.read found for one fetch response: runs
// of batch bytes and the segments they are in, each referenced once per
// run until release.
type reads struct {
	runs [][]byte
	held []*segment
}

func (rs *reads) add(s *segment, start, end int) {
	s.refs.Add(1)
	rs.runs = append(rs.runs, s.buf[start:end:end])
	rs.held = append(rs.held, s)
}

// release drops every reference and forgets the runs.
func (rs *reads) release() {
	for _, s := range rs.held {
		s.release()
	}
	clear(rs.held)
	clear(rs.runs)
	rs.held, rs.runs = rs.held[:0], rs.runs[:0]
}

// read adds to rs the bytes of whole stored batches starting with the one
// that holds offset: at most limit bytes, except that when minOne is set
// the first batch comes whatever its size (KIP-74). Batches adjacent in a
// segment come as one run. When w is not nil it is registered to be woken
// by the next append, atomically with the read, so that no append is
// missed.
func (p *partition) read(rs *reads, offset int64, limit int, minOne bool, w *waiter) readResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := readResult{hw: p.next, logStart: p.logStart}
	switch {
	case p.deleted:
		r.code = kerr.UnknownTopicOrPartition.Code
		return r
	case offset < p.logStart || offset > p.next:
		r.code = kerr.OffsetOutOfRange.Code
		return r
	}
	if offset < p.next {
		i := sort.Search(len(p.batches), func(i int) bool { return p.batches[i].next > offset })
		var run *segment
		runStart, runEnd := 0, 0
		for ; i < len(p.batches); i++ {
			b := &p.batches[i]
			size := b.end - b.start
			if r.n+size > limit && !(r.n == 0 && minOne) {
				break
			}
			if b.seg != run || b.start != runEnd {
				if run != nil {
					rs.add(run, runStart, runEnd)
				}
				run, runStart = b.seg, b.start
			}
			runEnd = b.end
			r.n += size
		}
		if run != nil {
			rs.add(run, runStart, runEnd)
		}
	}
	if w != nil {
		p.waiters = append(p.waiters, w)
		r.registered = true
	}
	return r
}

// unregister removes w from the partition's waiters, if an append has not
// already.
func (p *partition) unregister(w *waiter) {
	p.mu.Lock()
	if i := slices.Index(p.waiters, w); i >= 0 {
		last := len(p.waiters) - 1
		p.waiters[i] = p.waiters[last]
		p.waiters[last] = nil
		p.waiters = p.waiters[:last]
	}
	p.mu.Unlock()
}

// offsets returns the log start offset and the high watermark.
func (p *partition) offsets() (logStart, hw int64, deleted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logStart, p.next, p.deleted
}

// offsetForTimestamp returns the base offset of the first batch whose max
// timestamp is at or after ts, and that timestamp; found is false when no
// batch is. Batch granularity: the offset may be a few records before
// the first record at ts, which a consumer reads and a broker would not
// list.
func (p *partition) offsetForTimestamp(ts int64) (offset, at int64, found bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.batches {
		b := &p.batches[i]
		if mt := b.maxTimestamp(); mt >= ts {
			return b.base, mt, true
		}
	}
	return -1, -1, false
}

// offsetOfMaxTimestamp answers ListOffsets -3 (KIP-734) at batch
// granularity: the last offset of the first batch with the greatest max
// timestamp.
func (p *partition) offsetOfMaxTimestamp() (offset, at int64, found bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at = -1
	for i := range p.batches {
		b := &p.batches[i]
		if mt := b.maxTimestamp(); !found || mt > at {
			offset, at, found = b.next-1, mt, true
		}
	}
	return offset, at, found
}

func (b *batch) maxTimestamp() int64 {
	return int64(binary.BigEndian.Uint64(b.seg.buf[b.start+maxTimestampAt:]))
}

// dropThrough drops seg and every older segment of the partition, and the
// batches in them, advancing the log start offset. The retention queue
// calls it; it does nothing when seg is already gone.
func (p *partition) dropThrough(seg *segment) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seg.dropped.Load() {
		return
	}
	k := 0
	for k < len(p.segs) && p.segs[k].seq <= seg.seq {
		p.segs[k].drop()
		k++
	}
	n := copy(p.segs, p.segs[k:])
	clear(p.segs[n:])
	p.segs = p.segs[:n]
	j := 0
	for j < len(p.batches) && p.batches[j].seg.dropped.Load() {
		j++
	}
	// Clear the dropped entries so that they do not keep their segments
	// alive until the index is next reallocated.
	clear(p.batches[:j])
	p.batches = p.batches[j:]
	if len(p.batches) > 0 {
		p.logStart = p.batches[0].base
	} else {
		p.logStart = p.next
	}
}

// remove drops everything of a deleted topic's partition and wakes its
// waiters, which then see it as deleted.
func (p *partition) remove() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deleted = true
	for _, s := range p.segs {
		s.drop()
	}
	p.segs, p.batches = nil, nil
	p.logStart = p.next
	for _, w := range p.waiters {
		w.wake()
	}
	p.waiters = nil
}
