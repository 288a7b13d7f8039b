package kafkaproxy

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipemesh/pipemesh/protocol"
)

// shapeMetrics are the instruments of the compression, quota and memory
// stages. Per-topic and per-principal series are resolved once per name and
// cached, so the hot path does a map read and atomic adds.
type shapeMetrics struct {
	recompBytes   *prometheus.CounterVec
	recompBatches *prometheus.CounterVec
	recompSkipped *prometheus.CounterVec
	recompSeconds prometheus.Counter
	recompRatio   *prometheus.GaugeVec

	throttleSeconds   *prometheus.CounterVec
	throttledReplies  *prometheus.CounterVec
	inflightBytes     prometheus.Gauge
	budgetTotal       prometheus.Gauge
	budgetUsed        prometheus.Gauge
	budgetWaits       prometheus.Counter
	inflightCapWaits  prometheus.Counter
	throttlePauses    prometheus.Counter
	throttleRewriteNo prometheus.Counter
	rules             *prometheus.GaugeVec // by kind: compression, quota

	mu     sync.RWMutex
	topics map[string]*topicSeries // by topic label value (capped)
	users  map[string]*principalThrottle
	// Topic names and principals come from clients: their labels are
	// capped as the observe stage's are (docs/metrics.md, "Label caps").
	topicCap, principalCap *labelCap
}

// topicSeries is one topic label's recompression series.
type topicSeries struct {
	skipped prometheus.Counter
	ratio   prometheus.Gauge
	byTo    [protocol.CodecZstd + 1]*topicCompression // by target codec, made on first use
	mu      sync.Mutex
	in, out int64 // totals, for the ratio
}

// topicCompression holds one topic's recompression series to one target
// codec, by source codec.
type topicCompression struct {
	*topicSeries
	before, after, batches [protocol.CodecZstd + 1]prometheus.Counter
}

type principalThrottle struct {
	seconds [quotaKinds]prometheus.Counter
	replies prometheus.Counter
}

func newShapeMetrics(reg prometheus.Registerer) (*shapeMetrics, error) {
	m := &shapeMetrics{
		recompBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_recompression_bytes_total",
			Help: "Record batch bytes (headers included) the compression stage rewrote, before and after, by topic, source codec and target codec. after/before is the ratio.",
		}, []string{"topic", "from", "to", "stage"}),
		recompBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_recompressed_batches_total", Help: "Record batches the compression stage rewrote, by topic, source and target codec.",
		}, []string{"topic", "from", "to"}),
		recompSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_recompression_skipped_batches_total",
			Help: "Batches a compression rule covered but the proxy forwarded unchanged: wrong CRC, undecodable, or past the decompression cap. The broker judges them.",
		}, []string{"topic"}),
		recompRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipemesh_kafka_recompression_ratio",
			Help: "Bytes before over bytes after recompression, per topic, since the proxy started (rate the _bytes_total counters for a window).",
		}, []string{"topic"}),
		recompSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_recompression_seconds_total", Help: "Wall time spent recompressing on the worker pool (one core per slot).",
		}),
		throttleSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_throttle_seconds_total", Help: "Throttle time the proxy gave, by principal and quota (produce, fetch, request).",
		}, []string{"principal", "quota"}),
		throttledReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_throttled_responses_total", Help: "Responses that carried a proxy throttle_time_ms, by principal.",
		}, []string{"principal"}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipemesh_kafka_inflight_request_bytes", Help: "Request bytes sent to brokers and not answered yet, all connections.",
		}),
		budgetTotal: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipemesh_kafka_memory_budget_bytes", Help: "The memory budget (limits.memory_bytes).", ConstLabels: prometheus.Labels{"state": "total"},
		}),
		budgetUsed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipemesh_kafka_memory_budget_bytes", Help: "The memory budget (limits.memory_bytes).", ConstLabels: prometheus.Labels{"state": "used"},
		}),
		budgetWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_memory_budget_waits_total", Help: "Times a connection waited for memory because the budget was used up.",
		}),
		inflightCapWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_inflight_cap_waits_total", Help: "Times a connection stopped reading its client at limits.max_inflight_bytes_per_connection.",
		}),
		throttlePauses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_throttle_pauses_total", Help: "Times the proxy stopped reading a client for its throttle time.",
		}),
		throttleRewriteNo: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_throttle_unannounced_total",
			Help: "Throttles the proxy enforced by pausing but could not write into the response (a response version or size it does not rewrite).",
		}),
		rules: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipemesh_kafka_rules",
			Help: "Compression and quota rules in force, by kind (compression, quota); follows policy file reloads.",
		}, []string{"kind"}),
		topics:       make(map[string]*topicSeries),
		users:        make(map[string]*principalThrottle),
		topicCap:     newLabelCap(DefaultMaxLabelValues, nil),
		principalCap: newLabelCap(DefaultMaxLabelValues, nil),
	}
	for _, c := range []prometheus.Collector{m.recompBytes, m.recompBatches, m.recompSkipped, m.recompSeconds, m.recompRatio,
		m.throttleSeconds, m.throttledReplies, m.inflightBytes, m.budgetTotal, m.budgetUsed, m.budgetWaits,
		m.inflightCapWaits, m.throttlePauses, m.throttleRewriteNo, m.rules} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// setLabelCaps caps the topic and principal labels as the telemetry
// config caps the observe stage's. Call before traffic flows.
func (m *shapeMetrics) setLabelCaps(cfg TelemetryConfig) {
	max := cfg.MaxLabelValues
	if max <= 0 {
		max = DefaultMaxLabelValues
	}
	m.topicCap = newLabelCap(max, cfg.LabelAllow["topic"])
	m.principalCap = newLabelCap(max, cfg.LabelAllow["principal"])
}

// topic returns the series of one topic recompressed to codec to. A topic
// past the label cap shares the series of "other".
func (m *shapeMetrics) topic(name []byte, to protocol.Codec) *topicCompression {
	m.mu.RLock()
	ts := m.topics[string(name)]
	var t *topicCompression
	if ts != nil {
		t = ts.byTo[to]
	}
	m.mu.RUnlock()
	if t != nil {
		return t
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.topicCap.value(string(name))
	if ts = m.topics[n]; ts == nil {
		ts = &topicSeries{skipped: m.recompSkipped.WithLabelValues(n), ratio: m.recompRatio.WithLabelValues(n)}
		m.topics[n] = ts
	}
	if t = ts.byTo[to]; t != nil {
		return t
	}
	t = &topicCompression{topicSeries: ts}
	for c := protocol.CodecNone; c <= protocol.CodecZstd; c++ {
		t.before[c] = m.recompBytes.WithLabelValues(n, c.String(), to.String(), "before")
		t.after[c] = m.recompBytes.WithLabelValues(n, c.String(), to.String(), "after")
		t.batches[c] = m.recompBatches.WithLabelValues(n, c.String(), to.String())
	}
	ts.byTo[to] = t
	return t
}

func (m *shapeMetrics) recompressed(topic []byte, to protocol.Codec, st *protocol.RecompressStats) {
	t := m.topic(topic, to)
	var in, out int64
	for c, b := range st.ByCodec {
		if b.Batches > 0 {
			t.before[c].Add(float64(b.In))
			t.after[c].Add(float64(b.Out))
			t.batches[c].Add(float64(b.Batches))
			in, out = in+b.In, out+b.Out
		}
	}
	if out > 0 {
		t.mu.Lock()
		t.in, t.out = t.in+in, t.out+out
		t.ratio.Set(float64(t.in) / float64(t.out))
		t.mu.Unlock()
	}
	if st.Skipped > 0 {
		t.skipped.Add(float64(st.Skipped))
	}
}

func (m *shapeMetrics) principal(name string) *principalThrottle {
	m.mu.RLock()
	u := m.users[name]
	m.mu.RUnlock()
	if u != nil {
		return u
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if u = m.users[name]; u != nil {
		return u
	}
	label := m.principalCap.value(name)
	if u = m.users[label]; u != nil {
		return u
	}
	u = &principalThrottle{replies: m.throttledReplies.WithLabelValues(label)}
	for k := range u.seconds {
		u.seconds[k] = m.throttleSeconds.WithLabelValues(label, quotaKind(k).String())
	}
	m.users[label] = u
	return u
}
