package lineage

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// checkRunEvent checks what the OpenLineage spec (2-0-2) requires of a
// RunEvent and of the facets pipemesh sends, on the decoded JSON.
func checkRunEvent(t *testing.T, ev map[string]any) {
	t.Helper()
	str := func(m map[string]any, k string) string {
		t.Helper()
		v, ok := m[k].(string)
		require.True(t, ok && v != "", "%s is a non-empty string in %v", k, m)
		return v
	}
	obj := func(m map[string]any, k string) map[string]any {
		t.Helper()
		v, ok := m[k].(map[string]any)
		require.True(t, ok, "%s is an object in %v", k, m)
		return v
	}
	uri := func(s string) {
		t.Helper()
		u, err := url.Parse(s)
		require.NoError(t, err)
		require.True(t, u.IsAbs(), "%q is an absolute URI", s)
	}
	_, err := time.Parse(time.RFC3339Nano, str(ev, "eventTime"))
	require.NoError(t, err, "eventTime is an ISO 8601 date-time")
	uri(str(ev, "producer"))
	uri(str(ev, "schemaURL"))
	assert.Contains(t, []string{"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}, str(ev, "eventType"))
	run := obj(ev, "run")
	assert.Regexp(t, uuidRE, str(run, "runId"))
	job := obj(ev, "job")
	str(job, "namespace")
	str(job, "name")
	jt := obj(obj(job, "facets"), "jobType")
	uri(str(jt, "_producer"))
	uri(str(jt, "_schemaURL"))
	assert.Equal(t, "STREAMING", str(jt, "processingType"))
	str(jt, "integration")
	for _, side := range []struct{ list, facets, facet string }{{"inputs", "inputFacets", "inputStatistics"}, {"outputs", "outputFacets", "outputStatistics"}} {
		list, ok := ev[side.list].([]any)
		require.True(t, ok, "%s is an array", side.list)
		for _, d := range list {
			ds := d.(map[string]any)
			str(ds, "namespace")
			str(ds, "name")
			st := obj(obj(ds, side.facets), side.facet)
			uri(str(st, "_producer"))
			uri(str(st, "_schemaURL"))
			assert.IsType(t, float64(0), st["rowCount"])
			assert.IsType(t, float64(0), st["size"])
		}
	}
}

// receiver is a local OpenLineage HTTP endpoint (as Marquez's POST
// /api/v1/lineage) that keeps every event it is sent.
type receiver struct {
	mu     sync.Mutex
	events []map[string]any
	fail   bool
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/api/v1/lineage" || req.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "want POST /api/v1/lineage with JSON", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(req.Body)
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.events = append(r.events, ev)
	w.WriteHeader(http.StatusCreated)
}

func (r *receiver) take() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func byJob(evs []map[string]any) map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, ev := range evs {
		m[ev["job"].(map[string]any)["name"].(string)] = ev
	}
	return m
}

func TestOpenLineageEventsAndPush(t *testing.T) {
	c := newClock()
	g, err := Open(Config{Now: c.Now})
	require.NoError(t, err)
	pipeline(g, c.Now())
	rcv := &receiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	x := NewExporter(g, ExportConfig{KafkaNamespace: "kafka://127.0.0.1:19092", URL: srv.URL + "/api/v1/lineage"})

	x.Push(context.Background())
	evs := rcv.take()
	require.Len(t, evs, 4, "one event per job: 2 applications, 2 groups")
	for _, ev := range evs {
		checkRunEvent(t, ev)
	}
	jobs := byJob(evs)
	orders := jobs["application:orders-service"]
	require.NotNil(t, orders)
	out := orders["outputs"].([]any)
	require.Len(t, out, 1)
	ds := out[0].(map[string]any)
	assert.Equal(t, "kafka://127.0.0.1:19092", ds["namespace"])
	assert.Equal(t, "orders", ds["name"])
	st := ds["outputFacets"].(map[string]any)["outputStatistics"].(map[string]any)
	assert.EqualValues(t, 100, st["rowCount"])
	assert.EqualValues(t, 100_000, st["size"])
	fraud := jobs["group:shipping"]
	in := fraud["inputs"].([]any)
	require.Len(t, in, 1)
	assert.Equal(t, "orders", in[0].(map[string]any)["name"])

	// The run id is stable from push to push.
	runID := orders["run"].(map[string]any)["runId"]
	c.Add(time.Second)
	pipeline(g, c.Now())
	x.lastPush = time.Time{}
	x.Push(context.Background())
	again := byJob(rcv.take())["application:orders-service"]
	assert.Equal(t, runID, again["run"].(map[string]any)["runId"])
	assert.EqualValues(t, 200, again["outputs"].([]any)[0].(map[string]any)["outputFacets"].(map[string]any)["outputStatistics"].(map[string]any)["rowCount"])

	// A failing endpoint loses nothing: the next push sends the totals.
	rcv.mu.Lock()
	rcv.fail = true
	rcv.mu.Unlock()
	before := x.lastPush
	x.Push(context.Background())
	assert.Equal(t, before, x.lastPush, "a failed push is retried")
	rcv.mu.Lock()
	rcv.fail = false
	rcv.mu.Unlock()

	// GET /api/v1/openlineage returns the same events.
	mux := http.NewServeMux()
	x.Register(mux)
	api := httptest.NewServer(mux)
	defer api.Close()
	resp, err := http.Get(api.URL + "/api/v1/openlineage")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list []map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	require.Len(t, list, 4)
	for _, ev := range list {
		checkRunEvent(t, ev)
	}
	resp2, err := http.Get(api.URL + "/api/v1/openlineage?depth=nope")
	require.NoError(t, err)
	resp2.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp2.StatusCode)
}
