package flightproxy

import (
	"sync"
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

// StreamObservation is traffic of one stream in one direction, counted
// from IPC message headers. It is what the lineage graph turns into a job ->
// dataset edge. The counts are deltas: a stream that runs longer than
// Config.ProgressEvery reports its progress about that often (Partial set, the
// counts since its previous report), and every stream ends with one final
// observation (Partial false) holding the rest, its End and Code. A short
// stream is one final observation with its totals.
type StreamObservation struct {
	Principal string
	// Job is what the client called itself in the x-pipemesh-job header,
	// else the principal.
	Job string
	// Host is the client's address (host only) and Software its gRPC
	// user-agent, e.g. "grpc-go/1.85.0" or "grpc-java-netty/1.68.1".
	Host      string
	Software  string
	Dataset   string
	Direction Direction
	Method    string // DoGet, DoPut or DoExchange
	Bytes     int64  // FlightData message bytes, bodies included
	Batches   int64  // record batches
	Rows      int64
	Start     time.Time
	End       time.Time  // the end of what this observation counts
	Code      codes.Code // how the call ended (final observations only)
	// Partial marks a progress report of a stream still running.
	Partial bool
}

// DefaultProgressEvery is Config.ProgressEvery's default. The check costs
// one counter per message and a clock read every progressCheckMessages
// messages.
const (
	DefaultProgressEvery  = time.Second
	progressCheckMessages = 16
)

// QueryObservation is one Flight SQL statement seen in a descriptor or an
// action, for lineage and the audit log.
type QueryObservation struct {
	Principal string
	Job       string
	Host      string
	Software  string
	Method    string
	Command   string // e.g. sql:CommandStatementQuery
	SQL       string
	Time      time.Time
}

// Observer receives what the proxy sees. Calls come once per stream (not
// per batch), or about once per Config.ProgressEvery for a long one, and must not
// block: hand the value to a queue or aggregate it.
// LineageFeed implements it for the lineage graph; nil observes nothing.
type Observer interface {
	ObserveStream(StreamObservation)
	ObserveQuery(QueryObservation)
}

// DefaultMaxLabelValues is Config.MaxLabelValues' default, the Kafka
// metrics' default cap.
const DefaultMaxLabelValues = 100

// otherLabel is what label values past the cap read.
const otherLabel = "other"

// labelCap bounds one label's values: allow-listed values always pass, the
// first max others get their own series, the rest read "other". First come
// rather than by volume: moving a series into "other" later would make
// both counters jump. Safe for concurrent use; it runs once per stream.
type labelCap struct {
	max      int
	allow    map[string]bool
	mu       sync.Mutex
	admitted map[string]bool
}

func newLabelCap(max int, allow []string) *labelCap {
	c := &labelCap{max: max, allow: map[string]bool{}, admitted: map[string]bool{}}
	for _, v := range allow {
		c.allow[v] = true
	}
	return c
}

func (c *labelCap) value(v string) string {
	if c.allow[v] {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.admitted[v] {
		return v
	}
	if len(c.admitted) < c.max {
		c.admitted[v] = true
		return v
	}
	return otherLabel
}

// metrics are the proxy's Prometheus instruments.
type metrics struct {
	// principals and datasets cap the label values of bytes, batches and
	// rows: both come from clients.
	principals, datasets *labelCap

	bytes   *prometheus.CounterVec
	batches *prometheus.CounterVec
	rows    *prometheus.CounterVec
	calls   *prometheus.CounterVec
	active  *prometheus.GaugeVec
	spliced *prometheus.CounterVec
	// authFailures counts failed basic-auth logins.
	authFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, maxLabelValues int, allow map[string][]string) (*metrics, error) {
	labels := []string{"principal", "dataset", "direction"}
	m := &metrics{
		principals: newLabelCap(maxLabelValues, allow["principal"]),
		datasets:   newLabelCap(maxLabelValues, allow["dataset"]),
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
		spliced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipemesh_flight_spliced_calls_total",
			Help: "DoGet and DoPut calls whose data the relay moved as HTTP/2 frames (the rest went through gRPC's message path), by method.",
		}, []string{"method"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipemesh_flight_authentication_failures_total",
			Help: "Failed Flight basic-auth logins (wrong password, unknown user, source refused after too many failures).",
		}),
	}
	for _, c := range []prometheus.Collector{m.bytes, m.batches, m.rows, m.calls, m.active, m.spliced, m.authFailures} {
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

	// Progress reports (observer set): what was reported so far, when,
	// and messages since the clock was last read.
	observer   Observer
	every      time.Duration
	reported   StreamObservation
	lastReport time.Time
	sinceCheck int
}

func (m *metrics) edge(c *call, dataset string, dir Direction) *edge {
	ds := dataset
	if ds == "" {
		ds = "(unknown)"
	}
	ds, principal := m.datasets.value(ds), m.principals.value(c.principal)
	now := time.Now()
	var observer Observer
	every := DefaultProgressEvery
	if c.p != nil {
		observer, every = c.p.cfg.Observer, c.p.cfg.ProgressEvery
	}
	return &edge{
		obs: StreamObservation{Principal: c.principal, Job: c.job, Host: c.host, Software: c.software,
			Dataset: dataset, Direction: dir, Method: c.method, Start: now},
		observer:   observer,
		every:      every,
		lastReport: now,
		bytes:      m.bytes.WithLabelValues(principal, ds, string(dir)),
		batches:    m.batches.WithLabelValues(principal, ds, string(dir)),
		rows:       m.rows.WithLabelValues(principal, ds, string(dir)),
	}
}

// count reads one FlightData frame's IPC header. A frame the proxy cannot
// read still passes (the endpoints decide what is valid); it is counted as
// bytes only.
func (e *edge) count(f *frame) {
	v, err := parseFlightData(f.data, &e.scratch)
	e.countView(f.data.Len(), v, err)
}

// countView counts one FlightData message of n bytes (without the gRPC
// prefix) that read as v, or could not be read (err): the counting shared
// by count, which gets whole messages from gRPC, and a msgScanner, which
// finds them in a relayed stream's DATA frames.
func (e *edge) countView(n int, v flightDataView, err error) {
	e.progress()
	e.obs.Bytes += int64(n)
	e.bytes.Add(float64(n))
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

// progress sends the Observer what the stream moved since its last report
// (whole messages: it runs before a message is counted), once its interval
// has passed. Called per message, it reads the clock only every
// progressCheckMessages messages.
func (e *edge) progress() {
	if e.observer == nil {
		return
	}
	if e.sinceCheck++; e.sinceCheck < progressCheckMessages {
		return
	}
	e.sinceCheck = 0
	now := time.Now()
	if now.Sub(e.lastReport) < e.every {
		return
	}
	e.lastReport = now
	d := e.delta()
	d.End, d.Partial = now, true
	e.observer.ObserveStream(d)
}

// delta is the stream's observation less what was already reported, and
// marks it reported.
func (e *edge) delta() StreamObservation {
	d := e.obs
	d.Bytes -= e.reported.Bytes
	d.Batches -= e.reported.Batches
	d.Rows -= e.reported.Rows
	e.reported = e.obs
	return d
}
