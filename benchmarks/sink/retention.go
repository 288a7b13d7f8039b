package sink

import (
	"sync"
	"sync/atomic"
)

// retention bounds the memory of all partitions' segments together. Every
// new segment joins a queue in creation order; while the total passes the
// limit, the oldest segment in the queue is dropped from its partition
// (with any older segments of that partition). The queue's lock is taken
// only when a segment is created, about once per 4 MiB appended to a
// partition, and never while a partition's lock is held, so that the
// produce path has no global lock and locks never nest.
//
// Dropped segments of the usual size go to a small pool for reuse once no
// fetch holds them: writing pages the process already has is much faster
// than faulting in fresh ones, several times so in some VMs.
type retention struct {
	limit int64
	// maxSegment is the largest segment a partition allocates for small
	// batches: 4 MiB, or less under a small limit so that retention still
	// drops data in steps of a small part of it.
	maxSegment int
	// total is the capacity of every live segment. Partitions change it
	// under their own locks.
	total atomic.Int64

	mu    sync.Mutex
	queue []*segment // oldest first; may hold dropped segments

	free chan []byte // recycled buffers of maxSegment bytes
}

func newRetention(limit int64) *retention {
	seg := int64(maxSegmentBytes)
	if l := limit / 16; l < seg {
		seg = max(l, 4<<10)
	}
	pool := min(max(limit/seg/8, 4), 64)
	return &retention{limit: limit, maxSegment: int(seg), free: make(chan []byte, pool)}
}

// get returns an empty buffer of capacity size, recycled when it can be.
func (r *retention) get(size int) []byte {
	if size == r.maxSegment {
		select {
		case b := <-r.free:
			return b[:0]
		default:
		}
	}
	return make([]byte, 0, size)
}

// put offers a dropped segment's buffer, which nothing references any
// more, for reuse; the garbage collector takes what the pool does not.
func (r *retention) put(b []byte) {
	if cap(b) != r.maxSegment {
		return
	}
	select {
	case r.free <- b:
	default:
	}
}

// add queues a new segment, then drops the oldest segments while the total
// is over the limit. It keeps the newest segment whatever its size, so a
// batch larger than the limit is stored until the next one comes.
func (r *retention) add(seg *segment) {
	r.mu.Lock()
	r.queue = append(r.queue, seg)
	r.mu.Unlock()
	for r.total.Load() > r.limit {
		r.mu.Lock()
		if len(r.queue) <= 1 {
			r.mu.Unlock()
			return
		}
		old := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.mu.Unlock()
		old.p.dropThrough(old)
	}
}
