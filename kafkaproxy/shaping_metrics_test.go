package kafkaproxy

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/protocol"
)

// TestRecompressionMetricsBounded: topic names come from clients (a
// produce to any name under a prefixed rule is recompressed before the
// broker says whether the topic exists), so the per-topic recompression
// series are capped like the observe stage's topic label, and a reload that
// changes a topic's target codec is reported under the new codec.
func TestRecompressionMetricsBounded(t *testing.T) {
	m, err := newShapeMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	var st protocol.RecompressStats
	st.ByCodec[protocol.CodecNone] = protocol.CodecBytes{Batches: 1, In: 100, Out: 10}
	for i := range 1000 {
		m.recompressed(fmt.Appendf(nil, "logs.%d", i), protocol.CodecZstd, &st)
	}
	assert.LessOrEqual(t, testutil.CollectAndCount(m.recompRatio), DefaultMaxLabelValues+1, "ratio series")
	assert.LessOrEqual(t, testutil.CollectAndCount(m.recompBatches), 5*(DefaultMaxLabelValues+1), "batch series: one per source codec")
	assert.Equal(t, 1000.0, testutil.ToFloat64(m.recompBatches.WithLabelValues("logs.0", "none", "zstd"))+
		sumOther(m), "every batch counted, under its topic or other")
	m.mu.RLock()
	n := len(m.topics)
	m.mu.RUnlock()
	assert.LessOrEqual(t, n, DefaultMaxLabelValues+1, "topics remembered")

	// The rule for logs.0 now says lz4.
	m.recompressed([]byte("logs.0"), protocol.CodecLZ4, &st)
	assert.Equal(t, 1.0, testutil.ToFloat64(m.recompBatches.WithLabelValues("logs.0", "none", "lz4")))
	assert.Equal(t, 10.0, testutil.ToFloat64(m.recompRatio.WithLabelValues("logs.0")))
}

// sumOther adds the batches of every admitted topic but logs.0, and other.
func sumOther(m *shapeMetrics) float64 {
	total := testutil.ToFloat64(m.recompBatches.WithLabelValues(otherValue, "none", "zstd"))
	for i := 1; i < 1000; i++ {
		name := fmt.Sprintf("logs.%d", i)
		m.mu.RLock()
		_, ok := m.topics[name]
		m.mu.RUnlock()
		if ok {
			total += testutil.ToFloat64(m.recompBatches.WithLabelValues(name, "none", "zstd"))
		}
	}
	return total
}
