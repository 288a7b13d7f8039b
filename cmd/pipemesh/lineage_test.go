package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/lineage"
)

// running is a serve started by startServe.
type running struct {
	kafka, admin string
	stop         func()
}

// startServe runs serve with args (plus free ports) until stop.
func startServe(t *testing.T, args ...string) running {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse(append([]string{"--kafka-listen", "127.0.0.1:0", "--broker-port-base", "-1", "--admin-listen", "127.0.0.1:0"}, args...)))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan running, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, s, slog.New(slog.NewTextHandler(io.Discard, nil)), func(p *kafkaproxy.Proxy, a *admin.Server) {
			addrs <- running{kafka: p.Addr(), admin: a.Addr()}
		})
	}()
	var r running
	select {
	case r = <-addrs:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	}
	stopped := false
	r.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(r.stop)
	return r
}

func getLineage(t *testing.T, adminAddr, query string) lineage.View {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/api/v1/lineage" + query)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var v lineage.View
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	return v
}

func findEdge(v lineage.View, from, to string) (lineage.Edge, bool) {
	for _, e := range v.Edges {
		if e.From == from && e.To == to {
			return e, true
		}
	}
	return lineage.Edge{}, false
}

// TestServeLineageSurvivesRestart: serve with --data-dir counts a producer
// into /api/v1/lineage, and a new serve on the same dir starts with it.
func TestServeLineageSurvivesRestart(t *testing.T) {
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 1, Topics: []devbroker.Topic{{Name: "restart", Partitions: 1}}})
	require.NoError(t, err)
	defer cluster.Close()
	dir := t.TempDir()
	args := []string{"--kafka-upstream", cluster.ListenAddrs()[0], "--data-dir", dir, "--telemetry-flush", "50ms"}

	r := startServe(t, args...)
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka), kgo.ClientID("restart-svc"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 10 {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "restart", Value: fmt.Appendf(nil, "%d", i)}).FirstErr())
	}
	cl.Close()
	require.Eventually(t, func() bool {
		e, ok := findEdge(getLineage(t, r.admin, ""), "application:restart-svc", "topic:restart")
		return ok && e.Records == 10
	}, 10*time.Second, 50*time.Millisecond)
	r.stop()

	r = startServe(t, args...)
	e, ok := findEdge(getLineage(t, r.admin, ""), "application:restart-svc", "topic:restart")
	require.True(t, ok, "the edge survives the restart")
	require.EqualValues(t, 10, e.Records)
}

func TestServeTelemetryFlagErrors(t *testing.T) {
	for _, tc := range []struct{ args []string }{
		{[]string{"--metrics-label-allow", "colour=red"}},
		{[]string{"--metrics-label-allow", "topic"}},
		{[]string{"--metrics-max-label-values", "0"}},
		{[]string{"--openlineage-url", "ftp://x"}},
		{[]string{"--telemetry=false", "--openlineage-url", "http://127.0.0.1:1/api/v1/lineage"}},
		{[]string{"--lineage-retention", "0s"}},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		var f serveFlags
		f.register(fs)
		require.NoError(t, fs.Parse(append([]string{"--kafka-upstream", "127.0.0.1:9092"}, tc.args...)))
		_, err := f.resolve(fs)
		require.Error(t, err, "%v", tc.args)
	}
}

// TestServeOpenLineagePush: serve --openlineage-url pushes run events for
// what clients do through the proxy to a local OpenLineage endpoint.
func TestServeOpenLineagePush(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&ev) != nil {
			http.Error(w, "want POST with a JSON event", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	}))
	defer rcv.Close()
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 1, Topics: []devbroker.Topic{{Name: "ol", Partitions: 1}}})
	require.NoError(t, err)
	defer cluster.Close()
	r := startServe(t, "--kafka-upstream", cluster.ListenAddrs()[0], "--telemetry-flush", "50ms",
		"--openlineage-url", rcv.URL+"/api/v1/lineage", "--openlineage-every", "100ms", "--openlineage-namespace", "test-mesh")
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka), kgo.ClientID("ol-svc"))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 7 {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "ol", Value: []byte("v")}).FirstErr())
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range got {
			job := ev["job"].(map[string]any)
			if job["name"] != "application:ol-svc" || job["namespace"] != "test-mesh" {
				continue
			}
			for _, o := range ev["outputs"].([]any) {
				ds := o.(map[string]any)
				st := ds["outputFacets"].(map[string]any)["outputStatistics"].(map[string]any)
				if ds["namespace"] == "kafka://"+r.kafka && ds["name"] == "ol" && st["rowCount"] == 7.0 {
					return true
				}
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "a run event with 7 records written to ol")
}

// TestDocsNameRealMetrics: every pipemesh_ metric the Grafana dashboard and
// docs/metrics.md name is served on /metrics once traffic has flowed, so the
// dashboard's panels are not empty by a typo.
func TestDocsNameRealMetrics(t *testing.T) {
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 1, Topics: []devbroker.Topic{{Name: "docs", Partitions: 1}}})
	require.NoError(t, err)
	defer cluster.Close()
	r := startServe(t, "--kafka-upstream", cluster.ListenAddrs()[0], "--telemetry-flush", "50ms")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka), kgo.ClientID("docs-svc"), kgo.ConsumerGroup("docs-group"),
		kgo.ConsumeTopics("docs"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "docs", Value: []byte("v")}).FirstErr())
	for n := 0; n < 1; {
		n += cl.PollFetches(ctx).NumRecords()
		require.NoError(t, ctx.Err())
	}
	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + r.admin + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `pipemesh_kafka_records_total{direction="consume",topic="docs"} 1`)
	}, 10*time.Second, 50*time.Millisecond)

	served := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			served[f[2]] = true
		}
	}
	// Vectors with no series yet (no connection closed, no error) are not
	// served; those must at least be names the code registers.
	var code strings.Builder
	for _, dir := range []string{"../../kafkaproxy", "../../internal/admin"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				b, err := os.ReadFile(f)
				require.NoError(t, err)
				code.Write(b)
			}
		}
	}
	name := regexp.MustCompile(`pipemesh_[a-z_]+`)
	for _, doc := range []string{"../../docs/grafana-pipemesh.json", "../../docs/metrics.md"} {
		b, err := os.ReadFile(doc)
		require.NoError(t, err)
		names := map[string]bool{}
		for _, m := range name.FindAllString(string(b), -1) {
			m = strings.TrimSuffix(m, "_bucket")
			if strings.HasSuffix(m, "_") { // a prefix in prose, such as pipemesh_
				continue
			}
			names[m] = true
		}
		require.NotEmpty(t, names, doc)
		for m := range names {
			assert.True(t, served[m] || strings.Contains(code.String(), `"`+m+`"`), "%s names %s, which pipemesh does not register", doc, m)
		}
		assert.True(t, served["pipemesh_kafka_request_duration_seconds"])
	}
}

// TestResolveTelemetryFromConfigFile: the telemetry: and lineage: keys set
// what their flags set, and a flag on the command line wins over its key.
func TestResolveTelemetryFromConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
kafka:
  listen: 127.0.0.1:19092
  upstream: 127.0.0.1:9092
telemetry:
  flush: 2s
  max_label_values: 7
  label_allow: ["topic=orders"]
lineage:
  data_dir: /var/lib/pipemesh
  retention: 24h
  openlineage:
    url: http://marquez:5000/api/v1/lineage
    every: 1m
    namespace: prod
`), 0o600))
	for _, tt := range []struct {
		name      string
		args      []string
		retention time.Duration
		enabled   bool
	}{
		{"keys", nil, 24 * time.Hour, true},
		{"flags win", []string{"--lineage-retention", "1h"}, time.Hour, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			var f serveFlags
			f.register(fs)
			require.NoError(t, fs.Parse(append([]string{"--config", path}, tt.args...)))
			s, err := f.resolve(fs)
			require.NoError(t, err)
			assert.Equal(t, tt.enabled, s.telemetry.enabled)
			assert.Equal(t, 2*time.Second, s.proxy.Telemetry.FlushInterval)
			assert.Equal(t, 7, s.proxy.Telemetry.MaxLabelValues)
			assert.Equal(t, map[string][]string{"topic": {"orders"}}, s.proxy.Telemetry.LabelAllow)
			assert.Equal(t, "/var/lib/pipemesh", s.telemetry.lineage.DataDir)
			assert.Equal(t, tt.retention, s.telemetry.lineage.Retention)
			assert.Equal(t, "http://marquez:5000/api/v1/lineage", s.telemetry.olURL)
			assert.Equal(t, time.Minute, s.telemetry.olEvery)
			assert.Equal(t, "prod", s.telemetry.olNamespace)
		})
	}

	// telemetry.enabled: false turns the observe stage off, as --telemetry=false.
	require.NoError(t, os.WriteFile(path, []byte("kafka: {listen: 127.0.0.1:19092, upstream: 127.0.0.1:9092}\ntelemetry: {enabled: false}\n"), 0o600))
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse([]string{"--config", path}))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	assert.False(t, s.telemetry.enabled)
	assert.True(t, s.proxy.Telemetry.Disabled)
}

// TestServeFlightMetricsLabelCap: the label cap flags reach the Flight
// proxy too, whose principal and dataset labels come from clients.
func TestServeFlightMetricsLabelCap(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse([]string{"--flight-upstream", "grpc://127.0.0.1:8815",
		"--metrics-max-label-values", "5", "--metrics-label-allow", "dataset=sales.orders,principal=User:etl"}))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	require.NotNil(t, s.flight)
	assert.Equal(t, 5, s.flight.MaxLabelValues)
	assert.Equal(t, map[string][]string{"dataset": {"sales.orders"}, "principal": {"User:etl"}}, s.flight.LabelAllow)
}

// TestOpenLineageKafkaNamespaceIsAdvertised: OpenLineage names Kafka
// datasets by the bootstrap address clients use (kafka://{host}:{port}), so
// with --advertise-host the namespace takes that host, not the bound one
// (which may be 0.0.0.0), or the datasets would not match those a Spark or
// Flink job reports for the same topic.
func TestOpenLineageKafkaNamespaceIsAdvertised(t *testing.T) {
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 1, Topics: []devbroker.Topic{{Name: "ns", Partitions: 1}}})
	require.NoError(t, err)
	defer cluster.Close()
	r := startServe(t, "--kafka-upstream", cluster.ListenAddrs()[0], "--telemetry-flush", "50ms", "--advertise-host", "localhost")
	_, port, err := net.SplitHostPort(r.kafka)
	require.NoError(t, err)
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka), kgo.ClientID("ns-svc"))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "ns", Value: []byte("v")}).FirstErr())
	var namespaces []string
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + r.admin + "/api/v1/openlineage")
		require.NoError(t, err)
		defer resp.Body.Close()
		var evs []lineage.RunEvent
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&evs))
		namespaces = namespaces[:0]
		for _, ev := range evs {
			for _, o := range ev.Outputs {
				if o.Name == "ns" {
					namespaces = append(namespaces, o.Namespace)
				}
			}
		}
		return len(namespaces) > 0
	}, 10*time.Second, 50*time.Millisecond, "a run event writing ns")
	assert.Equal(t, []string{"kafka://localhost:" + port}, namespaces)
}
