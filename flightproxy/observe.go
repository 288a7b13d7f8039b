package flightproxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/pipemesh/pipemesh/internal/arrowipc"
)

// Direction is the way data moves on a stream, seen from the client.
type Direction string

// Directions of Flight traffic.
const (
	// Read is data from the upstream to the client (DoGet, the upstream's
	// half of DoExchange).
	Read Direction = "read"
	// Write is data from the client to the upstream (DoPut, the client's
	// half of DoExchange).
	Write Direction = "write"
)

// StreamObservation is the traffic of one finished stream in one
// direction, counted from IPC message headers. It is what the lineage graph
// turns into a job -> dataset edge.
type StreamObservation struct {
	Principal string
	// Job is what the client called itself in the x-pipemesh-job header,
	// else the principal.
	Job       string
	Dataset   string
	Direction Direction
	Method    string // DoGet, DoPut or DoExchange
	Bytes     int64  // FlightData message bytes, bodies included
	Batches   int64  // record batches
	Rows      int64
	Start     time.Time
	End       time.Time
	Code      codes.Code // how the call ended
}

// QueryObservation is one Flight SQL statement seen in a descriptor or an
// action, for lineage and the audit log.
type QueryObservation struct {
	Principal string
	Job       string
	Method    string
	Command   string // e.g. sql:CommandStatementQuery
	SQL       string
	Time      time.Time
}

// Observer receives what the proxy sees. Calls come once per stream (not
// per batch) and must not block: hand the value to a queue or aggregate it.
// The lineage package implements it; nil observes nothing.
type Observer interface {
	ObserveStream(StreamObservation)
	ObserveQuery(QueryObservation)
}

// metrics are the proxy's Prometheus instruments.
type metrics struct {
	bytes   *prometheus.CounterVec
	batches *prometheus.CounterVec
	rows    *prometheus.CounterVec
	calls   *prometheus.CounterVec
	active  *prometheus.GaugeVec
	// authFailures counts failed basic-auth logins.
	authFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	labels := []string{"principal", "dataset", "direction"}
	m := &metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_flight_bytes_total",
			Help: "FlightData bytes (IPC header and body) through the Flight proxy, by principal, dataset and direction (read: to the client).",
		}, labels),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_flight_batches_total",
			Help: "Arrow record batches through the Flight proxy, by principal, dataset and direction.",
		}, labels),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_flight_rows_total",
			Help: "Rows of Arrow record batches through the Flight proxy, by principal, dataset and direction.",
		}, labels),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_flight_calls_total",
			Help: "Flight calls the proxy finished, by method and gRPC status code.",
		}, []string{"method", "code"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipemesh_flight_active_streams",
			Help: "Flight calls in progress through the proxy, by method.",
		}, []string{"method"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_flight_authentication_failures_total",
			Help: "Failed Flight basic-auth logins (wrong password, unknown user, source refused after too many failures).",
		}),
	}
	for _, c := range []prometheus.Collector{m.bytes, m.batches, m.rows, m.calls, m.active, m.authFailures} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// edge counts one direction of one stream. Its counters are resolved once
// per stream, so the per-batch cost is a header parse and three atomic adds.
type edge struct {
	obs              StreamObservation
	bytes, batches   prometheus.Counter
	rows             prometheus.Counter
	scratch          []byte
	malformedHeaders int64
}

func (m *metrics) edge(principal, job, dataset, method string, dir Direction) *edge {
	ds := dataset
	if ds == "" {
		ds = "(unknown)"
	}
	return &edge{
		obs:     StreamObservation{Principal: principal, Job: job, Dataset: dataset, Direction: dir, Method: method, Start: time.Now()},
		bytes:   m.bytes.WithLabelValues(principal, ds, string(dir)),
		batches: m.batches.WithLabelValues(principal, ds, string(dir)),
		rows:    m.rows.WithLabelValues(principal, ds, string(dir)),
	}
}

// count reads one FlightData frame's IPC header. A frame the proxy cannot
// read still passes (the endpoints decide what is valid); it is counted as
// bytes only.
func (e *edge) count(f *frame) {
	n := f.data.Len()
	e.obs.Bytes += int64(n)
	e.bytes.Add(float64(n))
	v, err := parseFlightData(f.data, &e.scratch)
	if err != nil || len(v.header) == 0 {
		if err != nil {
			e.malformedHeaders++
		}
		return
	}
	h, err := arrowipc.ParseHeader(v.header)
	if err != nil {
		e.malformedHeaders++
		return
	}
	if h.Kind == arrowipc.KindRecordBatch {
		e.obs.Batches++
		e.obs.Rows += h.Rows
		e.batches.Inc()
		e.rows.Add(float64(h.Rows))
	}
}
