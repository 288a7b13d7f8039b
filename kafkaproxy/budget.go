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
//
// The budget is split in two halves, one for requests and one for
// responses, so that the two never wait on each other. A request held
// whole waits, while it is written, for the broker to read it; a broker
// reads a connection's next request only once it has written the previous
// response, which the proxy reads only once it has memory for it. If
// responses could wait for memory that requests hold, one full budget would
// deadlock every connection caught in that cycle. Responses wait only on
// other responses, which wait only on their clients.
type budget struct {
	requests, responses pool
}

// pool is one half of the budget.
type pool struct {
	total int64
	m     *shapeMetrics

	mu      sync.Mutex
	used    int64
	changed chan struct{} // closed and replaced whenever memory is given back
}

func newBudget(total int64, m *shapeMetrics) *budget {
	m.budgetTotal.Set(float64(total))
	b := &budget{}
	b.requests = pool{total: total / 2, m: m, changed: make(chan struct{})}
	b.responses = pool{total: total - total/2, m: m, changed: make(chan struct{})}
	return b
}

// inUse is how many bytes are held now, both halves.
func (b *budget) inUse() int64 { return b.requests.inUse() + b.responses.inUse() }

// acquire takes n bytes, waiting until they are free or done closes (then
// it returns false and takes nothing). A request for more than the whole
// pool is granted when nothing else is held in it, so that one large frame
// cannot wait forever.
func (p *pool) acquire(n int64, done <-chan struct{}) bool {
	if n <= 0 {
		return true
	}
	waited := false
	for {
		p.mu.Lock()
		if p.used+n <= p.total || p.used == 0 {
			p.used += n
			p.mu.Unlock()
			p.m.budgetUsed.Add(float64(n))
			return true
		}
		ch := p.changed
		p.mu.Unlock()
		if !waited {
			waited = true
			p.m.budgetWaits.Inc()
		}
		select {
		case <-ch:
		case <-done:
			return false
		}
	}
}

// release gives n bytes back and wakes every waiter to try again.
func (p *pool) release(n int64) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	p.used -= n
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.m.budgetUsed.Sub(float64(n))
}

// inUse is how many bytes are held now.
func (p *pool) inUse() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
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
