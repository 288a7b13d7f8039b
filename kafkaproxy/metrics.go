package kafkaproxy

import (
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
