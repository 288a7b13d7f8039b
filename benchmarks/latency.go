package benchmarks

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"
)

// maxLatencySamples bounds the produce latencies kept for percentiles; past
// it the recorder keeps a uniform random sample (reservoir sampling), so
// percentiles stay unbiased while memory stays at 8 MB.
const maxLatencySamples = 1 << 20

// latencyRecorder collects produce latencies from the promise callbacks of
// every producer of a phase.
type latencyRecorder struct {
	mu     sync.Mutex
	sample []int64 // nanoseconds
	n      int64
	max    int64
	hist   []int64
	rng    *rand.Rand
	limit  int
}

func newLatencyRecorder() *latencyRecorder {
	return &latencyRecorder{
		hist:  make([]int64, len(LatencyBuckets)),
		rng:   rand.New(rand.NewPCG(1, 2)),
		limit: maxLatencySamples,
	}
}

// add records one latency.
func (l *latencyRecorder) add(d time.Duration) {
	ns := int64(d)
	us := ns / 1000
	b := sort.Search(len(LatencyBuckets), func(i int) bool { return LatencyBuckets[i] >= us })
	if b == len(LatencyBuckets) {
		b-- // the last bucket also holds everything slower than 10s
	}
	l.mu.Lock()
	l.n++
	l.hist[b]++
	if ns > l.max {
		l.max = ns
	}
	if len(l.sample) < l.limit {
		l.sample = append(l.sample, ns)
	} else if j := l.rng.Int64N(l.n); j < int64(l.limit) {
		l.sample[j] = ns
	}
	l.mu.Unlock()
}

// result returns the percentiles and the histogram.
func (l *latencyRecorder) result() (Latency, []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.sample)
	slices.Sort(s)
	return Latency{
		P50:  time.Duration(percentile(s, 0.50)),
		P99:  time.Duration(percentile(s, 0.99)),
		P999: time.Duration(percentile(s, 0.999)),
		Max:  time.Duration(l.max),
	}, slices.Clone(l.hist)
}

// percentile is the nearest-rank q-quantile of sorted s, 0 for none.
func percentile(s []int64, q float64) int64 {
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
