package flightproxy

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/pipemesh/pipemesh/lineage"
)

// lineageAPI serves a graph's API the way the admin port does.
func lineageAPI(t *testing.T, g *lineage.Graph) string {
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, u)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

func apiEdge(v lineage.View, from, to string) (lineage.Edge, bool) {
	for _, e := range v.Edges {
		if e.From == from && e.To == to {
			return e, true
		}
	}
	return lineage.Edge{}, false
}

func withJob(job string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), jobHeader, job)
}

// TestLineageFeedThroughProxy writes a dataset through the real proxy as job
// "ingest", reads it back over all its endpoints in parallel as job
// "report", and checks the lineage API: job:ingest writes the dataset and
// the dataset is read by job:report, each with exactly the rows, batches
// and bytes the proxy counted in its pipemesh_flight_* metrics, one request
// per stream, and the client's principal, host and gRPC software on the job.
func TestLineageFeedThroughProxy(t *testing.T) {
	const rowsPerBatch, batches = 4096, 10
	g, err := lineage.Open(lineage.Config{})
	require.NoError(t, err)
	feed := NewLineageFeed(g, nil)
	up := startUpstream(t, "self", 3)
	p, reg := startProxy(t, Config{Upstreams: []Upstream{{Name: "store", Target: "grpc://" + up.addr}}, Observer: feed})
	c := dial(t, p.Addr())
	path := []string{"lake", "trips"}
	require.NoError(t, putDatasetCtx(withJob("ingest"), c, path, batches, rowsPerBatch))

	ctx := withJob("report")
	fi, err := c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: path})
	require.NoError(t, err)
	require.Len(t, fi.Endpoint, (batches+2)/3)
	errs := make(chan error, len(fi.Endpoint))
	for _, ep := range fi.Endpoint {
		go func() { _, err := readEndpoint(ctx, c, ep, rowsPerBatch); errs <- err }()
	}
	for range fi.Endpoint {
		require.NoError(t, <-errs)
	}

	api := lineageAPI(t, g)
	const dataset = "flight_dataset:lake/trips"
	var v lineage.View
	// A DoPut is reported when both of its halves end; the client may see
	// the call end a moment before the proxy's half does.
	require.Eventually(t, func() bool {
		feed.Flush()
		getJSON(t, api+"/api/v1/lineage", &v)
		w, okW := apiEdge(v, "job:ingest", dataset)
		r, okR := apiEdge(v, dataset, "job:report")
		return okW && okR && w.Records == batches*rowsPerBatch && r.Requests == int64(len(fi.Endpoint))
	}, 10*time.Second, 20*time.Millisecond)

	w, _ := apiEdge(v, "job:ingest", dataset)
	r, _ := apiEdge(v, dataset, "job:report")
	assert.Equal(t, lineage.Writes, w.Type)
	assert.Equal(t, lineage.Reads, r.Type)
	name := strings.Join(path, "/")
	for _, tc := range []struct {
		e   lineage.Edge
		dir string
	}{{w, "write"}, {r, "read"}} {
		assert.Equal(t, int64(batches*rowsPerBatch), tc.e.Records, tc.dir)
		assert.EqualValues(t, counter(t, reg, "pipemesh_flight_rows_total", name, tc.dir), tc.e.Records, tc.dir)
		assert.EqualValues(t, counter(t, reg, "pipemesh_flight_bytes_total", name, tc.dir), tc.e.Bytes, tc.dir)
		assert.EqualValues(t, counter(t, reg, "pipemesh_flight_batches_total", name, tc.dir), tc.e.Batches, tc.dir)
		assert.Equal(t, int64(batches), tc.e.Batches, tc.dir)
		assert.Zero(t, tc.e.Errors, tc.dir)
		assert.False(t, tc.e.FirstSeen.IsZero() || tc.e.LastSeen.Before(tc.e.FirstSeen), tc.dir)
		assert.Positive(t, tc.e.BytesPerSecond, tc.dir)
	}
	assert.Equal(t, int64(1), w.Requests, "one DoPut")
	assert.Equal(t, int64(len(fi.Endpoint)), r.Requests, "one DoGet per endpoint")

	var d lineage.NodeDetail
	getJSON(t, api+"/api/v1/lineage/nodes/job:report", &d)
	assert.Equal(t, []string{Anonymous}, d.Node.Principals)
	assert.Equal(t, []string{"127.0.0.1"}, d.Node.Hosts)
	require.Len(t, d.Node.Software, 1)
	assert.True(t, strings.HasPrefix(d.Node.Software[0], "grpc-go/"), d.Node.Software[0])
	require.Len(t, d.In, 1)
	assert.Equal(t, dataset, d.In[0].From)
}

// TestLineageFeedFlightSQL runs a Flight SQL query through the proxy as job
// "adhoc" and finds its text on the job's node in the lineage API, with the
// rows of its result on the edge from the command's result.
func TestLineageFeedFlightSQL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &sqlServer{location: "grpc://" + ln.Addr().String()}
	gs := grpc.NewServer()
	flight.RegisterFlightServiceServer(gs, flightsql.NewFlightServer(srv))
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, gs.Stop)
		return gs.Serve(ln)
	})
	g, err := lineage.Open(lineage.Config{})
	require.NoError(t, err)
	feed := NewLineageFeed(g, nil)
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "sql", Target: srv.location}}, Observer: feed})

	cl, err := flightsql.NewClient(p.Addr(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cl.Close()
	const query = "SELECT region, sum(fare) FROM trips WHERE fare > 10 GROUP BY region"
	ctx := withJob("adhoc")
	for range 2 {
		info, err := cl.Execute(ctx, query)
		require.NoError(t, err)
		rd, err := cl.DoGet(ctx, info.Endpoint[0].Ticket)
		require.NoError(t, err)
		for rd.Next() {
		}
		require.NoError(t, rd.Err())
		rd.Release()
	}
	feed.Flush()

	api := lineageAPI(t, g)
	var d lineage.NodeDetail
	getJSON(t, api+"/api/v1/lineage/nodes/"+url.PathEscape("job:adhoc"), &d)
	require.Len(t, d.Node.Queries, 1)
	assert.Equal(t, query, d.Node.Queries[0].Text)
	assert.Equal(t, "sql:CommandStatementQuery", d.Node.Queries[0].Command)
	assert.Equal(t, int64(2), d.Node.Queries[0].Count)
	assert.Equal(t, []string{Anonymous}, d.Node.Principals)
	require.Len(t, d.In, 1)
	assert.Equal(t, "flight_dataset:sql:CommandStatementQuery", d.In[0].From)
	assert.Equal(t, int64(2), d.In[0].Records, "one row per run")
}

// discard is a lineage.Observer that keeps only a count.
type discard struct{ n int }

func (d *discard) Observe(obs []lineage.Observation) { d.n += len(obs) }

// BenchmarkLineageFeedObserveStream is what a finished stream costs the
// lineage feed (once per stream, never per batch): a map lookup under a
// mutex and a few adds for an edge already pending, with a flush every
// 1,000 streams (a busy second).
func BenchmarkLineageFeedObserveStream(b *testing.B) {
	out := &discard{}
	f := NewLineageFeed(out, nil)
	o := StreamObservation{Principal: Anonymous, Job: "fare-report", Host: "127.0.0.1", Software: "grpc-go/1.85.0",
		Dataset: "trips", Direction: Read, Method: "DoGet", Bytes: 1 << 20, Batches: 10, Rows: 100_000, End: time.Now()}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f.ObserveStream(o)
		if i++; i%1000 == 0 {
			f.Flush()
		}
	}
}

// tee hands every observation to two observers.
type tee struct{ a, b Observer }

func (t tee) ObserveStream(o StreamObservation) { t.a.ObserveStream(o); t.b.ObserveStream(o) }
func (t tee) ObserveQuery(q QueryObservation)   { t.a.ObserveQuery(q); t.b.ObserveQuery(q) }

// TestLongStreamsReportProgress: a stream running past Config.ProgressEvery
// reports its progress while it runs (Partial deltas) and ends with one
// final observation; the deltas add up to exactly what the proxy counted,
// and the lineage edge counts the stream once.
func TestLongStreamsReportProgress(t *testing.T) {
	const rowsPerBatch, batches = 1024, 5 * progressCheckMessages
	g, err := lineage.Open(lineage.Config{})
	require.NoError(t, err)
	feed := NewLineageFeed(g, nil)
	rec := &recorder{}
	up := startUpstream(t, "self", batches) // one endpoint: one long stream each way
	p, reg := startProxy(t, Config{Upstreams: []Upstream{{Name: "store", Target: "grpc://" + up.addr}}, Observer: tee{rec, feed},
		ProgressEvery: time.Nanosecond}) // a report at every check: every progressCheckMessages messages
	c := dial(t, p.Addr())
	require.NoError(t, putDatasetCtx(withJob("ingest"), c, []string{"long"}, batches, rowsPerBatch))
	fi, err := c.GetFlightInfo(withJob("report"), &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"long"}})
	require.NoError(t, err)
	require.Len(t, fi.Endpoint, 1)
	_, err = readEndpoint(withJob("report"), c, fi.Endpoint[0], rowsPerBatch)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		finals := 0
		for _, o := range rec.streams {
			if !o.Partial {
				finals++
			}
		}
		return finals == 2
	}, 10*time.Second, 10*time.Millisecond, "both streams end")
	rec.mu.Lock()
	sums := map[Direction]StreamObservation{}
	partials := map[Direction]int{}
	for _, o := range rec.streams {
		s := sums[o.Direction]
		s.Bytes += o.Bytes
		s.Rows += o.Rows
		s.Batches += o.Batches
		sums[o.Direction] = s
		if o.Partial {
			partials[o.Direction]++
			assert.Equal(t, codes.OK, o.Code, "a progress report carries no status")
		}
	}
	rec.mu.Unlock()
	for dir, name := range map[Direction]string{Write: "write", Read: "read"} {
		assert.GreaterOrEqual(t, partials[dir], 3, "%s: progress reports while the stream ran", name)
		assert.EqualValues(t, counter(t, reg, "pipemesh_flight_bytes_total", "long", name), sums[dir].Bytes, name)
		assert.EqualValues(t, counter(t, reg, "pipemesh_flight_rows_total", "long", name), sums[dir].Rows, name)
		assert.Equal(t, int64(batches*rowsPerBatch), sums[dir].Rows, name)
		assert.Equal(t, int64(batches), sums[dir].Batches, name)
	}

	feed.Flush()
	v, err := g.Snapshot(lineage.Query{})
	require.NoError(t, err)
	w, ok := apiEdge(v, "job:ingest", "flight_dataset:long")
	require.True(t, ok)
	r, ok := apiEdge(v, "flight_dataset:long", "job:report")
	require.True(t, ok)
	assert.Equal(t, sums[Write].Bytes, w.Bytes)
	assert.Equal(t, sums[Read].Bytes, r.Bytes)
	assert.Equal(t, int64(1), w.Requests, "the stream counts once, not once per report")
	assert.Equal(t, int64(1), r.Requests)
}

// BenchmarkCountFrameWithProgress is BenchmarkCountFrame with an Observer
// set: the progress check adds a counter per message and a clock read every
// progressCheckMessages messages.
func BenchmarkCountFrameWithProgress(b *testing.B) {
	var msgs []*flight.FlightData
	w := flight.NewRecordWriter(collect{&msgs}, ipcWithTestSchema())
	rec := testBatch(0, 64<<10)
	require.NoError(b, w.Write(rec))
	rec.Release()
	raw, err := proto.Marshal(msgs[1])
	require.NoError(b, err)
	f := &frame{data: split(raw, 16<<10)}
	m, err := newMetrics(prometheus.NewRegistry(), DefaultMaxLabelValues, nil)
	require.NoError(b, err)
	e := m.edge(&call{principal: "User:bench", job: "job", method: "DoGet"}, "bench", Read)
	e.observer = NewLineageFeed(&discard{}, nil)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		e.count(f)
	}
}
