package lineage

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)} }

var (
	orders   = NodeRef{Application, "orders-service"}
	ordersT  = NodeRef{Topic, "orders"}
	billing  = NodeRef{Group, "billing"}
	shipping = NodeRef{Group, "shipping"}
	audit    = NodeRef{Topic, "audit"}
	auditor  = NodeRef{Application, "auditor"}
)

// pipeline feeds one flush of a small pipeline: orders-service produces
// 100 records/s of 1 KB to orders; billing and shipping consume it;
// auditor produces to audit.
func pipeline(g *Graph, at time.Time) {
	g.Observe([]Observation{
		{From: orders, To: ordersT, Type: Produces, Bytes: 100_000, Records: 100, Batches: 10, Requests: 10, At: at,
			Client: Client{Principal: "User:ANONYMOUS", ClientID: "orders-service", Software: "kgo/1.19", Host: "127.0.0.1"}},
		{From: ordersT, To: billing, Type: Consumes, Bytes: 100_000, Records: 100, Batches: 10, Requests: 5, At: at,
			Client: Client{Principal: "User:ANONYMOUS", ClientID: "billing-1", Software: "sarama"}},
		{From: ordersT, To: shipping, Type: Consumes, Bytes: 100_000, Records: 100, Batches: 10, Requests: 5, At: at},
		{From: auditor, To: audit, Type: Produces, Bytes: 10, Records: 1, Batches: 1, Requests: 1, Errors: 1, At: at},
	})
}

func edgeOf(t *testing.T, v View, from, to string) Edge {
	t.Helper()
	for _, e := range v.Edges {
		if e.From == from && e.To == to {
			return e
		}
	}
	t.Fatalf("no edge %s -> %s in %+v", from, to, v.Edges)
	return Edge{}
}

func nodeIDs(v View) []string {
	var ids []string
	for _, n := range v.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

func TestGraphObserveAndRates(t *testing.T) {
	c := newClock()
	g, err := Open(Config{Now: c.Now, RateWindow: 10 * time.Second})
	require.NoError(t, err)
	start := c.Now()
	for range 20 { // 20 one-second flushes
		c.Add(time.Second)
		pipeline(g, c.Now())
	}
	v, err := g.Snapshot(Query{})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"application:orders-service", "topic:orders", "group:billing", "group:shipping", "application:auditor", "topic:audit"}, nodeIDs(v))
	e := edgeOf(t, v, "application:orders-service", "topic:orders")
	assert.EqualValues(t, 2_000_000, e.Bytes)
	assert.EqualValues(t, 2000, e.Records)
	assert.EqualValues(t, 200, e.Batches)
	assert.Equal(t, start.Add(time.Second), e.FirstSeen)
	assert.Equal(t, c.Now(), e.LastSeen)
	assert.InDelta(t, 100_000, e.BytesPerSecond, 1) // 10 flushes of 100 KB in the 10 s window
	assert.InDelta(t, 100, e.RecordsPerSecond, 0.01)
	assert.EqualValues(t, 20, edgeOf(t, v, "application:auditor", "topic:audit").Errors)

	for _, n := range v.Nodes {
		switch n.ID {
		case "application:orders-service":
			assert.Equal(t, []string{"kgo/1.19"}, n.Software)
			assert.Equal(t, []string{"User:ANONYMOUS"}, n.Principals)
			assert.InDelta(t, 100_000, n.BytesOutPerSecond, 1)
		case "group:billing":
			assert.Equal(t, []string{"billing-1"}, n.ClientIDs, "a group lists its members' client ids")
		case "topic:orders":
			assert.Empty(t, n.ClientIDs, "topics have no clients")
			assert.InDelta(t, 100_000, n.BytesInPerSecond, 1)
			assert.InDelta(t, 200_000, n.BytesOutPerSecond, 1)
		}
	}

	// Idle for longer than the window: the rate falls to zero, totals stay.
	c.Add(11 * time.Second)
	v, err = g.Snapshot(Query{})
	require.NoError(t, err)
	e = edgeOf(t, v, "application:orders-service", "topic:orders")
	assert.Zero(t, e.BytesPerSecond)
	assert.EqualValues(t, 2_000_000, e.Bytes)
}

func TestGraphQuery(t *testing.T) {
	c := newClock()
	g, err := Open(Config{Now: c.Now})
	require.NoError(t, err)
	pipeline(g, c.Now())
	c.Add(time.Hour)
	g.Observe([]Observation{{From: orders, To: ordersT, Type: Produces, Bytes: 1, Records: 1, At: c.Now()}})

	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"all", Query{}, []string{"application:orders-service", "topic:orders", "group:billing", "group:shipping", "application:auditor", "topic:audit"}},
		{"depth 0", Query{Node: "topic:orders", Depth: 0}, []string{"topic:orders"}},
		{"depth 1 both ways", Query{Node: "topic:orders", Depth: 1}, []string{"topic:orders", "application:orders-service", "group:billing", "group:shipping"}},
		{"depth 2 from a group", Query{Node: "group:billing", Depth: 2}, []string{"group:billing", "topic:orders", "application:orders-service", "group:shipping"}},
		{"since drops old edges", Query{Since: time.Minute}, []string{"application:orders-service", "topic:orders"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := g.Snapshot(tc.q)
			require.NoError(t, err)
			assert.ElementsMatch(t, tc.want, nodeIDs(v))
			for _, e := range v.Edges {
				assert.Contains(t, tc.want, e.From)
				assert.Contains(t, tc.want, e.To)
			}
		})
	}
	_, err = g.Snapshot(Query{Node: "topic:nope"})
	assert.ErrorIs(t, err, ErrUnknownNode)

	d, err := g.Node("topic:orders")
	require.NoError(t, err)
	assert.Len(t, d.In, 1)
	assert.Len(t, d.Out, 2)
}

func TestGraphPersistsAndExpires(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	g, err := Open(Config{DataDir: dir, Now: c.Now, Retention: time.Hour})
	require.NoError(t, err)
	pipeline(g, c.Now())
	g.Observe([]Observation{{From: NodeRef{FlightDataset, "trips"}, To: NodeRef{Job, "adhoc"}, Type: Reads, Bytes: 9, Records: 3, At: c.Now(),
		Statement: Statement{Text: "SELECT * FROM trips", Command: "cmd:text"}}})
	c.Add(50 * time.Minute)
	g.Observe([]Observation{{From: orders, To: ordersT, Type: Produces, Bytes: 5, Records: 5, At: c.Now()}})
	before, err := g.Snapshot(Query{})
	require.NoError(t, err)
	require.NoError(t, g.Close())

	// A second process cannot open the same file while one has it.
	g, err = Open(Config{DataDir: dir, Now: c.Now, Retention: time.Hour})
	require.NoError(t, err)
	_, err = Open(Config{DataDir: dir, Now: c.Now})
	require.ErrorContains(t, err, "locked by another process")

	after, err := g.Snapshot(Query{})
	require.NoError(t, err)
	for i := range before.Edges {
		before.Edges[i].BytesPerSecond, before.Edges[i].RecordsPerSecond = 0, 0
	}
	for i := range before.Nodes {
		n := &before.Nodes[i]
		n.BytesInPerSecond, n.BytesOutPerSecond, n.RecordsInPerSecond, n.RecordsOutPerSecond = 0, 0, 0, 0
	}
	assert.Equal(t, before.Edges, after.Edges, "edges survive a restart")
	assert.Equal(t, before.Nodes, after.Nodes, "nodes survive a restart")
	d, err := g.Node("job:adhoc")
	require.NoError(t, err)
	require.Len(t, d.Node.Queries, 1, "a job's statements survive a restart")
	assert.Equal(t, "SELECT * FROM trips", d.Node.Queries[0].Text)

	// 20 minutes on, only the edge seen 50 minutes in is within the hour.
	c.Add(20 * time.Minute)
	g.expire(c.Now())
	require.NoError(t, g.Close())
	g, err = Open(Config{DataDir: dir, Now: c.Now, Retention: time.Hour})
	require.NoError(t, err)
	defer g.Close()
	v, err := g.Snapshot(Query{})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"application:orders-service", "topic:orders"}, nodeIDs(v))
	require.Len(t, v.Edges, 1)
	assert.EqualValues(t, 100_005, v.Edges[0].Bytes)
}

// TestStoreSkipsBadRecords: a record that does not decode is dropped and
// the rest of the graph loads.
func TestStoreSkipsBadRecords(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	g, err := Open(Config{DataDir: dir, Now: c.Now})
	require.NoError(t, err)
	pipeline(g, c.Now())
	require.NoError(t, g.Close())
	db, err := bolt.Open(filepath.Join(dir, storeFile), 0o644, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		require.NoError(t, tx.Bucket(bucketNodes).Put([]byte("topic:junk"), []byte("{not json")))
		return tx.Bucket(bucketEdges).Put([]byte("x\x00y\x00produces"), []byte(`{"from":"x","to":"y","type":"produces"}`))
	}))
	require.NoError(t, db.Close())
	g, err = Open(Config{DataDir: dir, Now: c.Now})
	require.NoError(t, err)
	defer g.Close()
	v, err := g.Snapshot(Query{})
	require.NoError(t, err)
	assert.Len(t, v.Nodes, 6)
	assert.Len(t, v.Edges, 4)
}

func TestHTTPAPI(t *testing.T) {
	c := newClock()
	g, err := Open(Config{Now: c.Now})
	require.NoError(t, err)
	pipeline(g, c.Now())
	g.Observe([]Observation{{From: NodeRef{Application, "User:alice/etl"}, To: ordersT, Type: Produces, Bytes: 1, Records: 1, At: c.Now()}})
	mux := http.NewServeMux()
	g.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		return resp.StatusCode, body
	}
	code, body := get("/api/v1/lineage")
	require.Equal(t, http.StatusOK, code)
	edges := body["edges"].([]any)
	require.Len(t, edges, 5)
	for _, e := range edges {
		for _, f := range []string{"from", "to", "type", "bytes", "records", "first_seen", "last_seen", "bytes_per_second", "records_per_second"} {
			assert.Contains(t, e, f)
		}
	}
	for _, n := range body["nodes"].([]any) {
		for _, f := range []string{"id", "type", "name"} {
			assert.Contains(t, n, f)
		}
	}
	code, body = get("/api/v1/lineage?node=topic:orders&depth=1&since=1h")
	require.Equal(t, http.StatusOK, code)
	assert.Len(t, body["nodes"], 5)

	code, body = get("/api/v1/lineage/nodes/" + url.PathEscape("application:User:alice/etl"))
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, "User:alice/etl", body["node"].(map[string]any)["name"])
	assert.Len(t, body["out"], 1)

	for path, want := range map[string]int{
		"/api/v1/lineage?depth=x":            http.StatusBadRequest,
		"/api/v1/lineage?depth=-1":           http.StatusBadRequest,
		"/api/v1/lineage?since=yesterday":    http.StatusBadRequest,
		"/api/v1/lineage?node=topic:missing": http.StatusNotFound,
		"/api/v1/lineage/nodes/topic:nope":   http.StatusNotFound,
	} {
		code, body := get(path)
		assert.Equal(t, want, code, path)
		assert.NotEmpty(t, body["error"], path)
	}
}

func FuzzParseQuery(f *testing.F) {
	f.Add("topic:orders", "2", "5m")
	f.Add("", "x", "-1s")
	f.Add("group:", "999999999999", "1h1h")
	f.Fuzz(func(t *testing.T, node, depth, since string) {
		q, err := ParseQuery(func(k string) string {
			return map[string]string{"node": node, "depth": depth, "since": since}[k]
		})
		if err == nil {
			require.True(t, q.Depth >= 0 && q.Depth <= maxQueryDepth)
			require.True(t, q.Since >= 0)
		}
		ParseNodeID(node)
	})
}

// TestGraphStatements: a job node keeps its recent distinct statements,
// newest first, with counts, bounded in number and size; a node-only
// observation (no To) records a statement without an edge.
func TestGraphStatements(t *testing.T) {
	c := newClock()
	g, err := Open(Config{Now: c.Now})
	require.NoError(t, err)
	job := NodeRef{Job, "fare-report"}
	g.Observe([]Observation{{From: job, At: c.Now(), Client: Client{Principal: "User:alice"},
		Statement: Statement{Text: "SELECT 1", Command: "sql:CommandStatementQuery"}}})
	c.Add(time.Second)
	g.Observe([]Observation{
		{From: NodeRef{FlightDataset, "trips"}, To: job, Type: Reads, Bytes: 10, Records: 2, At: c.Now(),
			Statement: Statement{Text: "SELECT 2", Count: 2}},
		{From: job, At: c.Now(), Statement: Statement{Text: "SELECT 1", Count: 1}},
	})
	d, err := g.Node(job.ID())
	require.NoError(t, err)
	require.Len(t, d.Node.Queries, 2)
	assert.Equal(t, "SELECT 1", d.Node.Queries[0].Text)
	assert.Equal(t, int64(2), d.Node.Queries[0].Count)
	assert.Equal(t, "sql:CommandStatementQuery", d.Node.Queries[0].Command, "the first sighting's command is kept")
	assert.Equal(t, "SELECT 2", d.Node.Queries[1].Text)
	assert.Equal(t, int64(2), d.Node.Queries[1].Count)
	assert.Equal(t, []string{"User:alice"}, d.Node.Principals)
	v, err := g.Snapshot(Query{})
	require.NoError(t, err)
	assert.Len(t, v.Edges, 1, "a node-only observation adds no edge")

	for i := range 40 {
		g.Observe([]Observation{{From: job, Statement: Statement{Text: fmt.Sprintf("SELECT %d -- %s", i, strings.Repeat("é", 3000))}}})
	}
	d, err = g.Node(job.ID())
	require.NoError(t, err)
	assert.Len(t, d.Node.Queries, maxStatements)
	assert.True(t, strings.HasPrefix(d.Node.Queries[0].Text, "SELECT 39 -- "), "newest first")
	for _, q := range d.Node.Queries {
		assert.LessOrEqual(t, len(q.Text), MaxStatementBytes)
		assert.True(t, utf8.ValidString(q.Text))
		assert.True(t, strings.HasSuffix(q.Text, "…"))
	}
}

// TestGraphSizeCapped: names come from clients (dataset paths, job
// headers, topics), so the graph stops taking new nodes and edges at its
// caps rather than growing for the whole retention window; what it has
// keeps counting, and room freed by retention is taken again.
func TestGraphSizeCapped(t *testing.T) {
	c := newClock()
	g, err := Open(Config{Now: c.Now, MaxEdges: 3, MaxNodes: 5, Retention: time.Hour})
	require.NoError(t, err)
	job := NodeRef{Job, "etl"}
	write := func(ds string) Observation {
		return Observation{From: job, To: NodeRef{FlightDataset, ds}, Type: Writes, Bytes: 10, Records: 1, At: c.Now()}
	}
	g.Observe([]Observation{write("a"), write("b"), write("c"), write("d"), write("e")})
	v, err := g.Snapshot(Query{})
	require.NoError(t, err)
	assert.Equal(t, []string{"flight_dataset:a", "flight_dataset:b", "flight_dataset:c", "job:etl"}, nodeIDs(v))
	assert.Len(t, v.Edges, 3)
	assert.Equal(t, int64(2), g.Dropped(), "d and e")

	// Known edges keep counting; a statement on a known node is kept, a
	// node-only observation past the node cap is not.
	g.Observe([]Observation{write("a"),
		{From: job, Statement: Statement{Text: "SELECT 1"}, At: c.Now()},
		{From: NodeRef{Job, "x"}, Statement: Statement{Text: "SELECT 2"}, At: c.Now()},
		{From: NodeRef{Job, "y"}, Statement: Statement{Text: "SELECT 3"}, At: c.Now()}})
	v, err = g.Snapshot(Query{})
	require.NoError(t, err)
	assert.Equal(t, int64(20), edgeOf(t, v, "job:etl", "flight_dataset:a").Bytes)
	assert.Len(t, v.Nodes, 5, "job:x fills the last place, job:y is dropped")
	assert.Equal(t, int64(3), g.Dropped())

	// Retention frees room.
	c.Add(2 * time.Hour)
	g.expire(c.Now())
	g.Observe([]Observation{write("d")})
	v, err = g.Snapshot(Query{})
	require.NoError(t, err)
	assert.Equal(t, []string{"flight_dataset:d", "job:etl"}, nodeIDs(v))
}

// TestGraphLongNamesPersist: a client-chosen name longer than the store's
// key limit (bbolt takes keys up to 32 KiB) must not stop the graph from
// being saved: names are clipped to MaxNameBytes as they come in.
func TestGraphLongNamesPersist(t *testing.T) {
	dir := t.TempDir()
	g, err := Open(Config{DataDir: dir})
	require.NoError(t, err)
	long := strings.Repeat("j", 40<<10)
	g.Observe([]Observation{
		{From: NodeRef{Job, long}, To: NodeRef{FlightDataset, "trips"}, Type: Writes, Bytes: 1, Records: 1},
		{From: orders, To: ordersT, Type: Produces, Bytes: 1, Records: 1},
	})
	require.NoError(t, g.Persist(), "the graph saves")
	require.NoError(t, g.Close())

	g, err = Open(Config{DataDir: dir})
	require.NoError(t, err)
	defer g.Close()
	v, err := g.Snapshot(Query{})
	require.NoError(t, err)
	require.Len(t, v.Edges, 2, "both edges survive a restart")
	for _, n := range v.Nodes {
		assert.LessOrEqual(t, len(n.Name), MaxNameBytes, n.Type)
		assert.True(t, utf8.ValidString(n.Name))
	}
	assert.Contains(t, nodeIDs(v), "job:"+ClipName(long))
}

// TestGraphSnapshotsWhileObserving encodes snapshots, node details and
// OpenLineage events while flushes add clients and statements to the same
// nodes: run with -race, snapshots must share nothing that Observe writes.
func TestGraphSnapshotsWhileObserving(t *testing.T) {
	g, err := Open(Config{})
	require.NoError(t, err)
	x := NewExporter(g, ExportConfig{KafkaNamespace: "kafka://127.0.0.1:19092"})
	job, ds := NodeRef{Job, "etl"}, NodeRef{FlightDataset, "trips"}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			g.Observe([]Observation{
				{From: job, To: ds, Type: Writes, Bytes: 1, Records: 1,
					Client:    Client{Principal: fmt.Sprintf("User:u%d", i%40), Host: fmt.Sprintf("10.0.0.%d", i%40)},
					Statement: Statement{Text: fmt.Sprintf("SELECT %d", i%20)}},
				{From: orders, To: ordersT, Type: Produces, Bytes: 1, Records: 1, Client: Client{ClientID: fmt.Sprintf("c%d", i%40)}},
			})
		}
	}()
	for range 200 {
		v, err := g.Snapshot(Query{})
		require.NoError(t, err)
		_, err = json.Marshal(v)
		require.NoError(t, err)
		if len(v.Nodes) > 0 {
			d, err := g.Node("job:etl")
			require.NoError(t, err)
			_, err = json.Marshal(d)
			require.NoError(t, err)
			evs, err := x.Events(Query{})
			require.NoError(t, err)
			_, err = json.Marshal(evs)
			require.NoError(t, err)
		}
	}
	close(stop)
	wg.Wait()
}
