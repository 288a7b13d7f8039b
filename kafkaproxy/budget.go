package kafkaproxy

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"
)

// budget is the process-wide memory budget: bytes the proxy may hold in
// frames read whole and in recompression buffers. A connection that needs
// more than is free waits (and so reads nothing more from its peer: TCP
// backpressure) until others give memory back. Nothing is dropped and
// nothing reordered; waiting is the only effect.
type budget struct {
	total int64

	mu      sync.Mutex
	used    int64
	changed chan struct{} // closed and replaced whenever memory is given back
	m       *shapeMetrics
}

func newBudget(total int64, m *shapeMetrics) *budget {
	m.budgetTotal.Set(float64(total))
	return &budget{total: total, changed: make(chan struct{}), m: m}
}

// acquire takes n bytes, waiting until they are free or done closes (then
// it returns false and takes nothing). A request for more than the whole
// budget is granted when nothing else is held, so that one large frame
// cannot wait forever.
func (b *budget) acquire(n int64, done <-chan struct{}) bool {
	if n <= 0 {
		return true
	}
	waited := false
	for {
		b.mu.Lock()
		if b.used+n <= b.total || b.used == 0 {
			b.used += n
			b.m.budgetUsed.Set(float64(b.used))
			b.mu.Unlock()
			return true
		}
		ch := b.changed
		b.mu.Unlock()
		if !waited {
			waited = true
			b.m.budgetWaits.Inc()
		}
		select {
		case <-ch:
		case <-done:
			return false
		}
	}
}

// release gives n bytes back and wakes every waiter to try again.
func (b *budget) release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.m.budgetUsed.Set(float64(b.used))
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// inUse is how many bytes are held now.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// defaultMemoryBytes is a quarter of the memory the process may use: the
// cgroup's limit when one is set, else the machine's, kept between 64 MiB
// and 4 GiB.
func defaultMemoryBytes() int64 {
	mem := machineMemory()
	if lim := cgroupMemoryLimit(); lim > 0 && (mem == 0 || lim < mem) {
		mem = lim
	}
	if mem == 0 {
		return 512 << 20
	}
	return min(max(mem/4, minDefaultMemoryBytes), maxDefaultMemoryBytes)
}

// machineMemory reads MemTotal from /proc/meminfo; 0 when unknown.
func machineMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// cgroupMemoryLimit reads the cgroup v2 memory limit; 0 when there is none.
func cgroupMemoryLimit() int64 {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil { // "max"
		return 0
	}
	return v
}
