package benchmarks

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLatencyPercentilesAndHistogram(t *testing.T) {
	l := newLatencyRecorder()
	for i := 1; i <= 1000; i++ {
		l.add(time.Duration(i) * time.Millisecond)
	}
	lat, hist := l.result()
	assert.Equal(t, 500*time.Millisecond, lat.P50)
	assert.Equal(t, 990*time.Millisecond, lat.P99)
	assert.Equal(t, 999*time.Millisecond, lat.P999)
	assert.Equal(t, 1000*time.Millisecond, lat.Max)
	require.Len(t, hist, len(LatencyBuckets))
	var n int64
	for i, c := range hist {
		n += c
		if c > 0 {
			assert.GreaterOrEqual(t, LatencyBuckets[i], int64(1000), "no record under 1 ms")
		}
	}
	assert.Equal(t, int64(1000), n)

	l = newLatencyRecorder()
	l.add(30 * time.Second)
	l.add(10 * time.Microsecond)
	_, hist = l.result()
	assert.Equal(t, int64(1), hist[len(hist)-1], "slower than the last bucket lands in it")
	assert.Equal(t, int64(1), hist[0])
}

func TestLatencyReservoirStaysBoundedAndUnbiased(t *testing.T) {
	l := newLatencyRecorder()
	l.limit = 1000
	for i := 1; i <= 100_000; i++ {
		l.add(time.Duration(i) * time.Microsecond)
	}
	assert.Len(t, l.sample, 1000)
	lat, _ := l.result()
	assert.InDelta(t, 50_000, lat.P50.Microseconds(), 5_000, "the median of a uniform sample")
	assert.Equal(t, 100*time.Millisecond, lat.Max, "max is exact, not sampled")
}

func TestPercentileOfNothing(t *testing.T) {
	lat, _ := newLatencyRecorder().result()
	assert.Zero(t, lat)
}
