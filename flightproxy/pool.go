package flightproxy

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufferPool is the proxy's gRPC buffer pool. gRPC's default pool clears
// every buffer it hands out; on the proxy's path that is a second pass over
// every byte (HTTP/2 frames read in, 256 KiB write buffers), for data that
// is then overwritten in full. This pool hands buffers out as they were
// returned. gRPC only exposes the bytes it has read into a buffer, so old
// contents never reach a reader.
type bufferPool struct {
	tiers [maxTier - minTier + 1]sync.Pool
}

// Buffers of 2^minTier to 2^maxTier bytes are pooled; larger ones are
// allocated and left to the garbage collector.
const (
	minTier = 8
	maxTier = 22
)

func newBufferPool() *bufferPool { return &bufferPool{} }

func tierOf(n int) int {
	if n <= 1<<minTier {
		return minTier
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of length n.
func (p *bufferPool) Get(n int) *[]byte {
	t := tierOf(n)
	if t > maxTier {
		b := make([]byte, n)
		return &b
	}
	if v := p.tiers[t-minTier].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<t)
	return &b
}

// Put returns a buffer obtained from Get.
func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minTier || c > 1<<maxTier || c&(c-1) != 0 {
		return // not one of ours
	}
	p.tiers[bits.Len(uint(c))-1-minTier].Put(b)
}

var _ mem.BufferPool = (*bufferPool)(nil)
