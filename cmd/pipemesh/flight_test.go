package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/flightproxy"
	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/lineage"
)

// TestFlightServeEndToEnd runs 'pipemesh flight-server' and 'pipemesh serve'
// with only a Flight upstream, then the demo's Spark-style job through the
// proxy, and checks its result, the pipemesh_flight_* metrics, and that the
// Flight-only serve still runs the lineage graph, its API, web view and
// OpenLineage export: the jobs' edges carry exactly the rows and bytes the
// metrics counted.
func TestFlightServeEndToEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	srvDone := make(chan int, 1)
	go func() {
		srvDone <- run(ctx, []string{"flight-server", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--batches-per-chunk", "3", "--log-level", "warn"}, &out, io.Discard)
	}()
	re := regexp.MustCompile(`Flight dataset service at (grpc://\S+),`)
	require.Eventually(t, func() bool { return re.MatchString(out.String()) }, 10*time.Second, 10*time.Millisecond)
	upstream := re.FindStringSubmatch(out.String())[1]

	var mu sync.Mutex
	var pushed []lineage.RunEvent
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev lineage.RunEvent
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&ev) != nil {
			http.Error(w, "want POST with a JSON event", http.StatusBadRequest)
			return
		}
		mu.Lock()
		pushed = append(pushed, ev)
		mu.Unlock()
	}))
	defer rcv.Close()

	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse([]string{"--flight-listen", "127.0.0.1:0", "--flight-upstream", upstream, "--admin-listen", "127.0.0.1:0",
		"--telemetry-flush", "100ms", "--openlineage-url", rcv.URL + "/api/v1/lineage", "--openlineage-every", "100ms"}))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	require.True(t, s.noKafka, "no Kafka upstream: the Kafka proxy is off")
	proxies := make(chan *flightproxy.Proxy, 1)
	s.onFlight = func(p *flightproxy.Proxy) { proxies <- p }
	admins := make(chan string, 1)
	serveDone := make(chan error, 1)
	go func() {
		serveDone <- serve(ctx, s, slog.New(slog.DiscardHandler), func(_ *kafkaproxy.Proxy, a *admin.Server) { admins <- a.Addr() })
	}()
	p, adm := <-proxies, <-admins

	c, err := dialFlight(p.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, putTrips(ctx, c))
	res, err := runFareReport(ctx, c)
	require.NoError(t, err)
	assert.Equal(t, int64(demoTripRows), res.rows)
	assert.Equal(t, expectedFareTotal(), res.total())
	assert.Equal(t, (demoTripRows/demoTripsBatch+2)/3, res.endpoints, "one endpoint per chunk of 3 batches")

	wantEdges := map[[2]string]int64{
		{"job:" + demoIngestJob, "flight_dataset:" + demoTrips}:  demoTripRows,
		{"flight_dataset:" + demoTrips, "job:" + demoReportJob}:  demoTripRows,
		{"job:" + demoReportJob, "flight_dataset:" + demoReport}: int64(len(demoRegions)),
	}
	var v lineage.View
	require.Eventually(t, func() bool {
		v = getLineage(t, adm, "")
		for k, rows := range wantEdges {
			if e, ok := findEdge(v, k[0], k[1]); !ok || e.Records != rows {
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "the Flight jobs' edges reach the lineage API")

	resp, err := http.Get("http://" + adm + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), `pipemesh_flight_rows_total{dataset="trips",direction="read",principal="User:ANONYMOUS"} 200000`)
	assert.Contains(t, string(body), `pipemesh_flight_rows_total{dataset="trips",direction="write",principal="User:ANONYMOUS"} 200000`)
	for k := range wantEdges {
		e, _ := findEdge(v, k[0], k[1])
		ds, dir := strings.TrimPrefix(k[1], "flight_dataset:"), "write"
		if e.Type == lineage.Reads {
			ds, dir = strings.TrimPrefix(k[0], "flight_dataset:"), "read"
		}
		for _, m := range []struct {
			name string
			got  int64
		}{{"bytes", e.Bytes}, {"rows", e.Records}, {"batches", e.Batches}} {
			assert.Equal(t, metricValue(t, string(body), fmt.Sprintf(`pipemesh_flight_%s_total{dataset=%q,direction=%q,principal="User:ANONYMOUS"}`, m.name, ds, dir)), m.got,
				"%s of %s -> %s", m.name, k[0], k[1])
		}
	}
	readEdge, _ := findEdge(v, "flight_dataset:"+demoTrips, "job:"+demoReportJob)
	assert.Equal(t, int64(res.endpoints), readEdge.Requests, "one DoGet per endpoint")

	// The web view and the OpenLineage export run without a Kafka proxy.
	resp, err = http.Get("http://" + adm + "/lineage")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Get("http://" + adm + "/api/v1/openlineage")
	require.NoError(t, err)
	var evs []lineage.RunEvent
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&evs))
	resp.Body.Close()
	var report *lineage.RunEvent
	for i := range evs {
		if evs[i].Job.Name == "job:"+demoReportJob {
			report = &evs[i]
		}
	}
	require.NotNil(t, report, "an OpenLineage event for the fare-report job")
	require.Len(t, report.Inputs, 1)
	assert.Equal(t, p.Location(), report.Inputs[0].Namespace)
	assert.Equal(t, demoTrips, report.Inputs[0].Name)
	require.Len(t, report.Outputs, 1)
	assert.Equal(t, demoReport, report.Outputs[0].Name)

	// ... and pushes it: the ingest job's run event, a BATCH job, with the
	// rows it wrote.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range pushed {
			if ev.Job.Name != "job:"+demoIngestJob || len(ev.Outputs) != 1 {
				continue
			}
			jt, _ := ev.Job.Facets["jobType"].(map[string]any)
			st, _ := ev.Outputs[0].OutputFacets["outputStatistics"].(map[string]any)
			if jt["processingType"] == "BATCH" && ev.Outputs[0].Namespace == p.Location() &&
				ev.Outputs[0].Name == demoTrips && st["rowCount"] == float64(demoTripRows) {
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "an OpenLineage push for trips-ingest")

	cancel()
	require.NoError(t, <-serveDone)
	assert.Equal(t, 0, <-srvDone)
}

func TestFlightCompressionRules(t *testing.T) {
	r, err := compressionRules(map[string]string{"*": "lz4", "reports/": "zstd", "reports/raw/": "none"})
	require.NoError(t, err)
	for dataset, want := range map[string]flightproxy.Compression{
		"trips": flightproxy.LZ4Frame, "reports/q1": flightproxy.ZSTD, "reports/raw/x": flightproxy.Passthrough,
	} {
		assert.Equal(t, want, r.FlightCompression(dataset), dataset)
	}
	_, err = compressionRules(map[string]string{"x": "snappy"})
	assert.ErrorContains(t, err, `compression "snappy": want none, lz4 or zstd`)
}

func TestFlightFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--flight-listen", "127.0.0.1:1"}, "no Flight upstream"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-max-message-bytes", "10"}, "want 1MiB to 2GiB"},
		{nil, "no upstream Kafka cluster"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-ticket-key-file", "/nonexistent/key"}, "--flight-ticket-key-file"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-compress", "lz4"}, "want PREFIX=CODEC"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-tls-client-ca", "ca.pem"}, "mTLS runs over TLS"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-tls-cert", "c.pem"}, "go together"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-tls-cert", "missing.pem", "--flight-tls-key", "missing.key"}, "missing.pem"},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		var f serveFlags
		f.register(fs)
		require.NoError(t, fs.Parse(tc.args))
		_, err := f.resolve(fs)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
}

// metricValue reads one series' value from a /metrics text page.
func metricValue(t *testing.T, page, series string) int64 {
	t.Helper()
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, line)
			return int64(f)
		}
	}
	t.Fatalf("no series %s on /metrics", series)
	return 0
}
