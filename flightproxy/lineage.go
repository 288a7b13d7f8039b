package flightproxy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/pipemesh/pipemesh/lineage"
)

// The lineage feed lives here, beside the Observer it implements, rather
// than in lineage/: the data planes depend on the protocol-free lineage
// package (the Kafka proxy does too), never the other way, so lineage
// stays free of gRPC and Arrow and there is no import cycle.

// maxPendingEdges bounds the edges (and statements) a LineageFeed holds
// between two flushes. Past it new ones are dropped and counted: at one
// flush a second that takes ten thousand distinct job/dataset/principal
// combinations a second.
const maxPendingEdges = 10_000

// LineageFeed turns the proxy's observations into lineage observations:
// the client's half of DoPut and DoExchange is job -> dataset (writes),
// DoGet and the upstream's half of DoExchange are dataset -> job (reads),
// with bytes, rows (as records), batches, one request per stream and an
// error per stream that did not end OK. Flight SQL statements go to the
// job's node. A stream is reported when it ends, and a long one also about
// every Config.ProgressEvery while it runs; the feed sums what arrives between
// flushes per edge and hands the graph one batch per flush, so a proxy call
// never waits on the graph's lock and each edge gets one rate sample per
// flush, as Kafka edges do.
type LineageFeed struct {
	out lineage.Observer
	log *slog.Logger

	mu      sync.Mutex
	edges   map[feedKey]*lineage.Observation
	queries map[queryKey]*lineage.Observation
	dropped int64
}

// feedKey is one edge as seen by one client program.
type feedKey struct {
	job, dataset, principal, host, software string
	dir                                     Direction
}

type queryKey struct {
	job, principal, host, software, text string
}

var _ Observer = (*LineageFeed)(nil)

// NewLineageFeed returns a feed into out (the lineage graph). Call Run, or
// Flush on a tick, and Flush once more after the proxy has stopped.
func NewLineageFeed(out lineage.Observer, log *slog.Logger) *LineageFeed {
	if log == nil {
		log = slog.Default()
	}
	return &LineageFeed{
		out: out, log: log.With("component", "flight-lineage"),
		edges: map[feedKey]*lineage.Observation{}, queries: map[queryKey]*lineage.Observation{},
	}
}

// ObserveStream implements Observer: it adds one finished stream to its
// edge's pending sums.
func (f *LineageFeed) ObserveStream(o StreamObservation) {
	if o.Dataset == "" || o.Job == "" {
		return
	}
	k := feedKey{job: o.Job, dataset: o.Dataset, principal: o.Principal, host: o.Host, software: o.Software, dir: o.Direction}
	f.mu.Lock()
	defer f.mu.Unlock()
	obs := f.edges[k]
	if obs == nil {
		if len(f.edges) >= maxPendingEdges {
			f.dropped++
			return
		}
		job, ds := lineage.NodeRef{Type: lineage.Job, Name: o.Job}, lineage.NodeRef{Type: lineage.FlightDataset, Name: o.Dataset}
		obs = &lineage.Observation{Client: lineage.Client{Principal: o.Principal, Host: o.Host, Software: o.Software}}
		if o.Direction == Write {
			obs.From, obs.To, obs.Type = job, ds, lineage.Writes
		} else {
			obs.From, obs.To, obs.Type = ds, job, lineage.Reads
		}
		f.edges[k] = obs
	}
	obs.Bytes += o.Bytes
	obs.Records += o.Rows
	obs.Batches += o.Batches
	if !o.Partial {
		obs.Requests++
		if o.Code != codes.OK {
			obs.Errors++
		}
	}
	if o.End.After(obs.At) {
		obs.At = o.End
	}
}

// ObserveQuery implements Observer: the statement goes to the job's node.
func (f *LineageFeed) ObserveQuery(q QueryObservation) {
	if q.SQL == "" || q.Job == "" {
		return
	}
	text := lineage.ClipStatement(q.SQL)
	k := queryKey{job: q.Job, principal: q.Principal, host: q.Host, software: q.Software, text: text}
	f.mu.Lock()
	defer f.mu.Unlock()
	obs := f.queries[k]
	if obs == nil {
		if len(f.queries) >= maxPendingEdges {
			f.dropped++
			return
		}
		obs = &lineage.Observation{
			From:      lineage.NodeRef{Type: lineage.Job, Name: q.Job},
			Client:    lineage.Client{Principal: q.Principal, Host: q.Host, Software: q.Software},
			Statement: lineage.Statement{Text: text, Command: q.Command},
		}
		f.queries[k] = obs
	}
	obs.Statement.Count++
	if q.Time.After(obs.At) {
		obs.At = q.Time
		obs.Statement.LastSeen = q.Time
	}
}

// Flush hands what ended since the last flush to the graph.
func (f *LineageFeed) Flush() {
	f.mu.Lock()
	if len(f.edges)+len(f.queries) == 0 && f.dropped == 0 {
		f.mu.Unlock()
		return
	}
	batch := make([]lineage.Observation, 0, len(f.queries)+len(f.edges))
	// Statements first: a query's GetFlightInfo comes before its DoGet.
	for _, o := range f.queries {
		batch = append(batch, *o)
	}
	for _, o := range f.edges {
		batch = append(batch, *o)
	}
	clear(f.edges)
	clear(f.queries)
	dropped := f.dropped
	f.dropped = 0
	f.mu.Unlock()
	if dropped > 0 {
		f.log.Warn("Flight lineage observations dropped: too many distinct job, dataset and principal combinations in one flush; the graph undercounts them",
			"dropped", dropped, "limit", maxPendingEdges)
	}
	if len(batch) > 0 {
		f.out.Observe(batch)
	}
}

// Run flushes every interval until ctx ends. It does not flush at the end:
// the caller does, once the proxy's last stream has been reported.
func (f *LineageFeed) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.Flush()
		}
	}
}
