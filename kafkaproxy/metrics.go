package kafkaproxy

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipemesh/pipemesh/protocol"
)

// Close reasons are the values of the reason label and of the "reason" log
// attribute; a fixed set keeps the metric's cardinality fixed.
const (
	reasonClientClosed        = "client_closed"
	reasonUpstreamClosed      = "upstream_closed"
	reasonIdle                = "idle_timeout"
	reasonClientProtocol      = "client_protocol_error"
	reasonUpstreamProtocol    = "upstream_protocol_error"
	reasonUpstreamUnreachable = "upstream_unreachable"
	reasonShutdown            = "shutdown"
	reasonRewrite             = "rewrite_failed"
)

// metrics holds the proxy's instruments. Per-key counters are resolved once
// at construction so the hot path is an atomic add, with no label lookup.
type metrics struct {
	open         prometheus.Gauge
	accepted     prometheus.Counter
	closed       *prometheus.CounterVec
	requests     [256]prometheus.Counter
	unknownKey   prometheus.Counter
	rewrites     *prometheus.CounterVec
	bytesIn      prometheus.Counter
	bytesOut     prometheus.Counter
	dialErrors   prometheus.Counter
	brokers      prometheus.Gauge
	localAnswers prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipemesh_kafka_connections", Help: "Client connections open now.",
			ConstLabels: prometheus.Labels{"state": "open"},
		}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_connections_accepted_total", Help: "Client connections accepted.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_connections_closed_total", Help: "Client connections closed, by reason.",
		}, []string{"reason"}),
		rewrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_responses_rewritten_total", Help: "Responses whose broker addresses or API versions the proxy rewrote, by API.",
		}, []string{"api"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_wire_bytes_total", Help: "Bytes on client connections, framing included.",
			ConstLabels: prometheus.Labels{"direction": "in"},
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_wire_bytes_total", Help: "Bytes on client connections, framing included.",
			ConstLabels: prometheus.Labels{"direction": "out"},
		}),
		dialErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_upstream_dial_errors_total", Help: "Failed attempts to connect to an upstream broker.",
		}),
		brokers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipemesh_kafka_brokers", Help: "Upstream brokers with a proxy listener.",
		}),
		localAnswers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_local_responses_total", Help: "Responses the proxy answered itself (for example UNSUPPORTED_VERSION to a too-new ApiVersions).",
		}),
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pipemesh_kafka_requests_total", Help: "Requests received from clients, by API.",
	}, []string{"api"})
	for k := range m.requests {
		if _, ok := protocol.MaxVersion(int16(k)); ok {
			m.requests[k] = requests.WithLabelValues(protocol.KeyName(int16(k)))
		}
	}
	m.unknownKey = requests.WithLabelValues("unknown")
	for _, c := range []prometheus.Collector{m.open, m.accepted, m.closed, requests, m.rewrites, m.bytesIn, m.bytesOut, m.dialErrors, m.brokers, m.localAnswers} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) request(key int16) {
	if key >= 0 && int(key) < len(m.requests) && m.requests[key] != nil {
		m.requests[key].Inc()
		return
	}
	m.unknownKey.Inc()
}

// telemetryMetrics are the observe stage's instruments.
type telemetryMetrics struct {
	bytes, records, batches    *prometheus.CounterVec
	clientBytes, clientRecords *prometheus.CounterVec
	errors                     *prometheus.CounterVec
	durationVec                *prometheus.HistogramVec
	durations                  [256][2]atomic.Pointer[prometheus.Observer] // resolved on first use
	edges                      prometheus.Gauge
	overflow                   prometheus.Counter
	observeErrors              prometheus.Counter
}

// requestDurationBuckets span a pipelined produce on loopback (100 µs) to a
// long-polling fetch (max.wait.ms, 500 ms by default) and beyond.
var requestDurationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// newTelemetryMetrics registers the observe stage's metrics; when telemetry
// is disabled it registers nothing, so a scrape shows it is off.
func newTelemetryMetrics(reg prometheus.Registerer, disabled bool) (*telemetryMetrics, error) {
	if disabled {
		return nil, nil
	}
	m := &telemetryMetrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_bytes_total", Help: "Record batch bytes produced to or consumed from each topic (batch headers included, as on the wire).",
		}, []string{"direction", "topic"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_records_total", Help: "Records produced to or consumed from each topic, from record batch headers.",
		}, []string{"direction", "topic"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_batches_total", Help: "Record batches produced to or consumed from each topic.",
		}, []string{"direction", "topic"}),
		clientBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_client_bytes_total", Help: "Record batch bytes by client: principal, client id and consumer group (capped; see docs/metrics.md).",
		}, []string{"direction", "principal", "client_id", "group"}),
		clientRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_client_records_total", Help: "Records by client: principal, client id and consumer group (capped; see docs/metrics.md).",
		}, []string{"direction", "principal", "client_id", "group"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_kafka_errors_total", Help: "Per-partition error codes in Produce and Fetch responses, by API and Kafka error name.",
		}, []string{"api", "code"}),
		edges: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipemesh_kafka_telemetry_edges", Help: "Edges (client, topic, direction, group) counted in memory.",
		}),
		overflow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_telemetry_edges_overflow_total", Help: "Times the edge cap was reached and traffic went to the overflow edge.",
		}),
		observeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_kafka_observe_errors_total", Help: "Frames the observe stage could not count (malformed or unknown topic id); they were forwarded unchanged.",
		}),
	}
	m.durationVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pipemesh_kafka_request_duration_seconds",
		Help:    "Request latency by API. scope=upstream: from the request reaching the proxy to the broker's response reaching it; scope=total: to the response's last byte written to the client.",
		Buckets: requestDurationBuckets,
	}, []string{"api", "scope"})
	for _, c := range []prometheus.Collector{m.bytes, m.records, m.batches, m.clientBytes, m.clientRecords, m.errors, m.durationVec, m.edges, m.overflow, m.observeErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// duration returns the histogram of key and scope, making its series on
// first use: an API nobody calls gets no series, so a scrape stays small.
func (m *telemetryMetrics) duration(key int16, scope int) prometheus.Observer {
	if p := m.durations[key][scope].Load(); p != nil {
		return *p
	}
	name := "upstream"
	if scope == scopeTotal {
		name = "total"
	}
	o := m.durationVec.WithLabelValues(protocol.KeyName(key), name)
	m.durations[key][scope].Store(&o)
	return o
}
