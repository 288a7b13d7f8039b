package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/internal/devbroker"
)

// chromiumPath finds Debian's chromium, skipping the test without it unless
// PIPEMESH_REQUIRE_EXTERNAL=1.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("PIPEMESH_REQUIRE_EXTERNAL") == "1" {
		t.Fatal("chromium is not installed and PIPEMESH_REQUIRE_EXTERNAL=1 (apt-get install -y chromium)")
	}
	t.Skip("chromium is not installed (set PIPEMESH_REQUIRE_EXTERNAL=1 to fail instead)")
	return ""
}

// browser starts headless Chromium the way CI can run it: as root (no
// sandbox), with no network of its own and a fresh profile.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1440, 860),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelT)
	return ctx
}

// artifactDir is where browser tests save screenshots:
// $PIPEMESH_ARTIFACT_DIR, or a pipemesh-artifacts folder in the temp dir.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("PIPEMESH_ARTIFACT_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "pipemesh-artifacts")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// knownPipeline runs producers and consumer groups through the proxy at
// kafka until ctx ends: orders-service writes orders, payments-service
// writes payments, group billing reads orders, group fraud reads both.
func knownPipeline(ctx context.Context, t *testing.T, kafka string) *sync.WaitGroup {
	var wg sync.WaitGroup
	produce := func(client, topic string) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ClientID(client), kgo.DefaultProduceTopic(topic))
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				cl.Produce(ctx, &kgo.Record{Value: fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 200))}, nil)
			}
		}()
	}
	consume := func(client, group string, topics ...string) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ClientID(client), kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for ctx.Err() == nil {
				cl.PollFetches(ctx)
			}
		}()
	}
	produce("orders-service", "orders")
	produce("payments-service", "payments")
	consume("billing-service", "billing", "orders")
	consume("fraud-detector", "fraud", "orders", "payments")
	return &wg
}

var pipelineEdges = []string{
	"application:orders-service -> topic:orders",
	"application:payments-service -> topic:payments",
	"topic:orders -> group:billing",
	"topic:orders -> group:fraud",
	"topic:payments -> group:fraud",
}

// TestWebViewInBrowser loads /lineage in headless Chromium while a known
// pipeline runs through the proxy: every node and edge of the pipeline is
// drawn with a rate label, clicking a node opens its panel with its
// clients, the selection and the view survive live refreshes and are in
// the URL, and the search box highlights matches. It saves a screenshot.
func TestWebViewInBrowser(t *testing.T) {
	bctx := browser(t)
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 3, Topics: []devbroker.Topic{{Name: "orders", Partitions: 3}, {Name: "payments", Partitions: 3}}})
	require.NoError(t, err)
	defer cluster.Close()
	r := startServe(t, "--kafka-upstream", strings.Join(cluster.ListenAddrs(), ","), "--telemetry-flush", "200ms")
	pctx, stop := context.WithCancel(context.Background())
	wg := knownPipeline(pctx, t, r.kafka)
	defer func() { stop(); wg.Wait() }()

	require.Eventually(t, func() bool {
		v := getLineage(t, r.admin, "?since=1m")
		for _, want := range pipelineEdges {
			from, to, _ := strings.Cut(want, " -> ")
			if e, ok := findEdge(v, from, to); !ok || e.Records == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "the pipeline's edges reach the API")

	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(bctx, steps...))
	}
	do(
		chromedp.Navigate("http://"+r.admin+"/lineage?since=5m"),
		chromedp.WaitVisible(`g.node[data-id="group:fraud"]`),
	)
	nodes := eval[[]string](t, bctx, `[...document.querySelectorAll('g.node')].map(g => g.dataset.id)`)
	edges := eval[[]string](t, bctx, `[...document.querySelectorAll('g.edge')].map(g => g.dataset.from + ' -> ' + g.dataset.to)`)
	labels := eval[[]string](t, bctx, `[...document.querySelectorAll('g.edge text.rate')].map(t => t.textContent)`)
	assert.ElementsMatch(t, []string{"application:orders-service", "application:payments-service", "topic:orders", "topic:payments", "group:billing", "group:fraud"}, nodes)
	assert.ElementsMatch(t, pipelineEdges, edges)
	for _, l := range labels {
		assert.Regexp(t, `^[\d.]+ [kMG]?B/s · [\d.]+k? rec/s$`, l, "edge label")
	}

	// Layers: producers left of topics, topics left of groups.
	xs := eval[map[string]float64](t, bctx,
		`Object.fromEntries([...document.querySelectorAll('g.node')].map(g => [g.dataset.id, g.getBoundingClientRect().x]))`)
	assert.Less(t, xs["application:orders-service"], xs["topic:orders"])
	assert.Less(t, xs["topic:orders"], xs["group:billing"])

	// Click a group: its panel opens with its member's client id.
	do(
		chromedp.Click(`g.node[data-id="group:billing"] rect`),
		chromedp.WaitVisible(`#panel.open h2`),
		chromedp.Sleep(300*time.Millisecond), // the URL is written after a short debounce
	)
	panelText := eval[string](t, bctx, `document.getElementById('panel').innerText`)
	url := eval[string](t, bctx, `location.href`)
	assert.Contains(t, panelText, "billing")
	assert.Contains(t, panelText, "billing-service", "the panel lists the group's client ids")
	assert.Contains(t, panelText, "topic:orders", "the panel lists the group's edges")
	assert.Contains(t, url, "node=group%3Abilling")

	// Wait for two refreshes: selection and transform are kept.
	before := eval[string](t, bctx, `document.getElementById('viewport').getAttribute('transform')`)
	do(chromedp.Sleep(7 * time.Second))
	after := eval[string](t, bctx, `document.getElementById('viewport').getAttribute('transform')`)
	selected := eval[string](t, bctx, `document.querySelector('g.node.selected').dataset.id`)
	assert.Equal(t, before, after, "live refresh keeps pan and zoom")
	assert.Equal(t, "group:billing", selected, "live refresh keeps the selection")

	shot := filepath.Join(artifactDir(t), "lineage-web-view.png")
	png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(shot, png, 0o644))
	t.Logf("screenshot saved to %s", shot)

	// Search highlights matches and dims the rest.
	do(chromedp.SendKeys(`#search`, "pay"))
	matched := eval[[]string](t, bctx, `[...document.querySelectorAll('g.node.match')].map(g => g.dataset.id)`)
	slices.Sort(matched)
	assert.Equal(t, []string{"application:payments-service", "topic:payments"}, matched)

	// A shared link opens the same view: depth 1 around billing.
	do(
		chromedp.Navigate("http://"+r.admin+"/lineage?since=5m&node=group%3Abilling&depth=1"),
		chromedp.WaitVisible(`#panel.open h2`),
	)
	linked := eval[[]string](t, bctx, `[...document.querySelectorAll('g.node')].map(g => g.dataset.id)`)
	assert.ElementsMatch(t, []string{"group:billing", "topic:orders"}, linked)
}

// eval runs a JavaScript expression in the page and decodes its value.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// TestDemoLineageGraph: `pipemesh demo` prints the web view's URL and its
// services fill one lineage graph: several producers, topics, a stream
// processor and consumer groups, and the Flight jobs and datasets.
func TestDemoLineageGraph(t *testing.T) {
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, []string{"--status-every", "1h", "--rate", "20", "--kafka-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--flight-listen", "127.0.0.1:0"}, &out, io.Discard)
	}()
	defer func() { cancel(); require.NoError(t, <-done) }()
	re := regexp.MustCompile(`Lineage web view: +http://(\S+)/lineage`)
	var admin string
	require.Eventually(t, func() bool {
		m := re.FindStringSubmatch(out.String())
		if m != nil {
			admin = m[1]
		}
		return m != nil
	}, 30*time.Second, 50*time.Millisecond, "demo prints the web view URL")
	want := []string{
		"application:orders-service -> topic:orders",
		"topic:orders -> group:billing",
		"application:payments-service -> topic:payments",
		"application:inventory-service -> topic:inventory",
		"application:web-frontend -> topic:clickstream",
		"topic:orders -> group:fraud-detection",
		"topic:payments -> group:fraud-detection",
		"topic:orders -> group:order-enricher",
		"application:order-enricher -> topic:orders-enriched",
		"topic:orders-enriched -> group:notifications",
		// The Flight side, in the same graph.
		"job:trips-ingest -> flight_dataset:trips",
		"flight_dataset:trips -> job:fare-report",
		"job:fare-report -> flight_dataset:reports/fares_by_region",
	}
	var missing []string
	assert.Eventually(t, func() bool {
		v := getLineage(t, admin, "")
		missing = missing[:0]
		for _, w := range want {
			from, to, _ := strings.Cut(w, " -> ")
			if _, ok := findEdge(v, from, to); !ok {
				missing = append(missing, w)
			}
		}
		return len(missing) == 0
	}, 30*time.Second, 200*time.Millisecond, "demo edges")
	assert.Empty(t, missing)
}

// TestWebViewDemoKafkaAndFlight loads the web view of `pipemesh demo` in
// headless Chromium: the Flight side (ingest job trips-ingest writing
// dataset trips, the Spark-style job fare-report reading it and writing
// reports/fares_by_region) is drawn with its edges beside the Kafka side,
// in the layers of the data flow (writers, then topics and datasets, then
// groups and reading jobs, then what they write), with row rates on the
// Flight edges; clicking fare-report opens its panel with its principal,
// client software and datasets, and a SQL command the job then sends shows
// in the panel. It saves the screenshot docs/ shows.
func TestWebViewDemoKafkaAndFlight(t *testing.T) {
	bctx := browser(t)
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, []string{"--status-every", "1s", "--rate", "20", "--kafka-listen", "127.0.0.1:0",
			"--admin-listen", "127.0.0.1:0", "--flight-listen", "127.0.0.1:0"}, &out, io.Discard)
	}()
	defer func() { cancel(); require.NoError(t, <-done) }()
	re := regexp.MustCompile(`Lineage web view: +http://(\S+)/lineage`)
	var admin string
	require.Eventually(t, func() bool {
		m := re.FindStringSubmatch(out.String())
		if m != nil {
			admin = m[1]
		}
		return m != nil
	}, 30*time.Second, 50*time.Millisecond, "demo prints the web view URL")

	flightEdges := []string{
		"job:trips-ingest -> flight_dataset:trips",
		"flight_dataset:trips -> job:fare-report",
		"job:fare-report -> flight_dataset:reports/fares_by_region",
	}
	kafkaEdges := []string{
		"application:orders-service -> topic:orders",
		"topic:orders -> group:billing",
	}
	require.Eventually(t, func() bool {
		v := getLineage(t, admin, "?since=5m")
		for _, w := range append(slices.Clone(flightEdges), kafkaEdges...) {
			from, to, _ := strings.Cut(w, " -> ")
			if e, ok := findEdge(v, from, to); !ok || e.Records == 0 {
				return false
			}
		}
		// Wait for a second report run, so fare-report has a live rate.
		e, _ := findEdge(v, "flight_dataset:trips", "job:fare-report")
		return e.Records >= 2*demoTripRows
	}, 60*time.Second, 100*time.Millisecond, "the demo's Kafka and Flight edges reach the API")

	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(bctx, steps...))
	}
	do(
		// Large and sharp enough for the picture in docs/lineage.md.
		chromedp.EmulateViewport(1600, 900, chromedp.EmulateScale(1.5)),
		chromedp.Navigate("http://"+admin+"/lineage?since=5m"),
		chromedp.WaitVisible(`g.node[data-id="job:fare-report"]`),
	)
	nodes := eval[[]string](t, bctx, `[...document.querySelectorAll('g.node')].map(g => g.dataset.id)`)
	for _, n := range []string{"job:trips-ingest", "flight_dataset:trips", "job:fare-report", "flight_dataset:reports/fares_by_region",
		"application:orders-service", "topic:orders", "group:billing"} {
		assert.Contains(t, nodes, n)
	}
	edges := eval[[]string](t, bctx, `[...document.querySelectorAll('g.edge')].map(g => g.dataset.from + ' -> ' + g.dataset.to + ' ' + g.dataset.type)`)
	assert.Contains(t, edges, flightEdges[0]+" writes")
	assert.Contains(t, edges, flightEdges[1]+" reads")
	assert.Contains(t, edges, flightEdges[2]+" writes")
	assert.Contains(t, edges, kafkaEdges[0]+" produces")
	assert.Contains(t, edges, kafkaEdges[1]+" consumes")
	label := eval[string](t, bctx, `document.querySelector('g.edge[data-from="flight_dataset:trips"][data-to="job:fare-report"] text.rate').textContent`)
	assert.Regexp(t, `^[\d.]+ [kMG]?B/s · [\d.]+[kM]? rows/s$`, label, "a Flight edge's label counts rows")

	// Layers: the ingest job writes beside the producers, the datasets sit
	// with the topics, the reading job with the consumer groups, and what
	// it writes after it.
	xs := eval[map[string]float64](t, bctx,
		`Object.fromEntries([...document.querySelectorAll('g.node')].map(g => [g.dataset.id, g.getBoundingClientRect().x]))`)
	assert.InDelta(t, xs["application:orders-service"], xs["job:trips-ingest"], 1)
	assert.InDelta(t, xs["topic:orders"], xs["flight_dataset:trips"], 1)
	assert.InDelta(t, xs["group:billing"], xs["job:fare-report"], 1)
	assert.Less(t, xs["job:trips-ingest"], xs["flight_dataset:trips"])
	assert.Less(t, xs["flight_dataset:trips"], xs["job:fare-report"])
	assert.Less(t, xs["job:fare-report"], xs["flight_dataset:reports/fares_by_region"])

	do(
		chromedp.Click(`g.node[data-id="job:fare-report"] rect`),
		chromedp.WaitVisible(`#panel.open h2`),
	)
	panelText := eval[string](t, bctx, `document.getElementById('panel').innerText`)
	assert.Contains(t, panelText, "fare-report")
	assert.Contains(t, panelText, "User:ANONYMOUS", "the job's principal")
	assert.Contains(t, panelText, "grpc-go/", "the job's client software (gRPC user-agent)")
	assert.Contains(t, panelText, "flight_dataset:trips", "what it reads")
	assert.Contains(t, panelText, "flight_dataset:reports/fares_by_region", "what it writes")
	assert.Contains(t, panelText, "streams")

	// Fit the graph beside the open panel (after its slide-in) for the picture.
	do(
		chromedp.Sleep(400*time.Millisecond),
		chromedp.Click(`#fit`),
		chromedp.Sleep(400*time.Millisecond),
	)
	shot := filepath.Join(artifactDir(t), "lineage-web-view-demo.png")
	png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(shot, png, 0o644))
	t.Logf("screenshot saved to %s", shot)

	// A SQL command the job sends (as Spark's Flight sources send SQL text
	// to Dremio-style services) shows in its panel at the next refresh.
	// The built-in service answers a command with InvalidArgument; the
	// proxy has recorded the statement by then.
	m := regexp.MustCompile(`Arrow Flight \(through the proxy\): +grpc://(\S+)`).FindStringSubmatch(out.String())
	require.NotNil(t, m, "demo prints the Flight proxy's address")
	c, err := dialFlight(m[1])
	require.NoError(t, err)
	defer c.Close()
	const sql = "SELECT region, count(*), sum(fare) FROM trips GROUP BY region"
	_, err = c.GetFlightInfo(asJob(context.Background(), demoReportJob), &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(sql)})
	require.Error(t, err, "the built-in service serves paths, not commands")
	do(chromedp.WaitVisible(`#panel ol.queries code`))
	queries := eval[[]string](t, bctx, `[...document.querySelectorAll('#panel ol.queries code')].map(c => c.textContent)`)
	assert.Equal(t, []string{sql}, queries)
	assert.Contains(t, eval[string](t, bctx, `document.querySelector('#panel ol.queries .meta').textContent`), "cmd:text")
}
