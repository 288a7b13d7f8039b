package benchmarks

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// reportFixtureSizes are the record sizes of reportFixture.
var reportFixtureSizes = []int{100, 1024, 16384}

// reportFixture is a synthetic three-size sweep with three rounds of each
// mode per size, alternating direct and proxied. Throughput per round is the
// size's base figure times 0.97, 1.00 and 1.03, so every median is the base
// figure and every spread is 6% (±3%). Proxied produce and consume run at 90%
// of direct.
func reportFixture() *Report {
	r := &Report{
		Started: time.Date(2026, 9, 20, 14, 3, 11, 0, time.UTC),
		Machine: Machine{CPUs: 8, CPUModel: "AMD EPYC 7B13", GOOS: "linux", GOARCH: "amd64", GoVersion: "go1.26.8"},
		Config: Config{
			Target: "kfake", RecordSize: 1024, Records: 200_000, Partitions: 6,
			Producers: 2, Consumers: 3, Compression: "lz4", Acks: "all",
			Linger: 5 * time.Millisecond, Rate: 50_000, Rounds: 3, Sweep: reportFixtureSizes,
		},
		Upstream: "kfake",
	}
	produceMB := map[int]float64{100: 40, 1024: 210, 16384: 520}
	consumeMB := map[int]float64{100: 60, 1024: 300, 16384: 800}
	p50us := map[Mode]float64{Direct: 800, Proxied: 1100}
	jitter := []float64{0.97, 1.00, 1.03}
	idx := 0
	for _, size := range reportFixtureSizes {
		for i := 0; i < 3; i++ {
			for _, mode := range []Mode{Direct, Proxied} {
				factor := jitter[i]
				if mode == Proxied {
					factor *= 0.9
				}
				pm, cm := produceMB[size]*factor, consumeMB[size]*factor
				idx++
				r.Rounds = append(r.Rounds, Round{
					Index: idx, Mode: mode, RecordSize: size, Records: 200_000, Bytes: int64(200_000 * size),
					Produce: Phase{Duration: time.Second, MBPerSec: pm, RecordsPerSec: pm * 1e6 / float64(size)},
					Consume: Phase{Duration: time.Second, MBPerSec: cm, RecordsPerSec: cm * 1e6 / float64(size)},
					Latency: Latency{
						P50:  time.Duration(p50us[mode]*jitter[i]) * time.Microsecond,
						P99:  time.Duration(4*p50us[mode]*jitter[i]) * time.Microsecond,
						P999: time.Duration(9*p50us[mode]*jitter[i]) * time.Microsecond,
						Max:  time.Duration(20*p50us[mode]) * time.Microsecond,
					},
					LatencyHistogram: logNormalHistogram(p50us[mode]*jitter[i], 0.6, 10_000),
					CPUSeconds:       fixtureCPU(mode),
					ProxyCPUPerGB:    map[Mode]float64{Direct: 0, Proxied: 1.25 * factor}[mode],
					Verified:         true,
				})
			}
		}
	}
	r.Summary = fixtureSummaries(r.Rounds)
	return r
}

// fixtureCPU is the CPU seconds by role of a fixture round: the proxy only
// runs in proxied rounds.
func fixtureCPU(mode Mode) map[string]float64 {
	cpu := map[string]float64{"broker": 1.5, "clients": 0.8}
	if mode == Proxied {
		cpu["proxy"] = 0.4
	}
	return cpu
}

// logNormalHistogram spreads n samples log-normally around median µs over
// LatencyBuckets.
func logNormalHistogram(median, sigma float64, n int) []int64 {
	h := make([]int64, len(LatencyBuckets))
	var weights []float64
	var sum float64
	for i := range LatencyBuckets {
		mid := math.Log((bucketLower(i) + bucketUpper(i)) / 2)
		d := (mid - math.Log(median)) / sigma
		wt := math.Exp(-d * d / 2)
		weights = append(weights, wt)
		sum += wt
	}
	for i, wt := range weights {
		h[i] = int64(math.Round(wt / sum * float64(n)))
	}
	return h
}

// fixtureSummaries computes the summary of rounds as the runner does, for the
// fixture.
func fixtureSummaries(rounds []Round) []Summary {
	bySize := map[int][]Round{}
	for _, rd := range rounds {
		bySize[rd.RecordSize] = append(bySize[rd.RecordSize], rd)
	}
	var out []Summary
	for size, rs := range bySize {
		cmp := func(f func(Round) float64) Compare {
			var d, p []float64
			for _, rd := range rs {
				if rd.Mode == Direct {
					d = append(d, f(rd))
				} else {
					p = append(p, f(rd))
				}
			}
			c := Compare{Direct: fixtureStat(d), Proxied: fixtureStat(p)}
			c.Ratio = c.Proxied.Median / c.Direct.Median
			return c
		}
		var cpu []float64
		verified := true
		for _, rd := range rs {
			if rd.Mode == Proxied {
				cpu = append(cpu, rd.ProxyCPUPerGB)
			}
			verified = verified && rd.Verified
		}
		out = append(out, Summary{
			RecordSize:        size,
			ProduceMBPerSec:   cmp(func(rd Round) float64 { return rd.Produce.MBPerSec }),
			ProduceRecsPerSec: cmp(func(rd Round) float64 { return rd.Produce.RecordsPerSec }),
			ConsumeMBPerSec:   cmp(func(rd Round) float64 { return rd.Consume.MBPerSec }),
			ConsumeRecsPerSec: cmp(func(rd Round) float64 { return rd.Consume.RecordsPerSec }),
			LatencyP50Ms:      cmp(func(rd Round) float64 { return reportMs(rd.Latency.P50) }),
			LatencyP99Ms:      cmp(func(rd Round) float64 { return reportMs(rd.Latency.P99) }),
			LatencyP999Ms:     cmp(func(rd Round) float64 { return reportMs(rd.Latency.P999) }),
			ProxyCPUPerGB:     fixtureStat(cpu),
			Saturated:         "broker",
			AllRoundsVerified: verified,
		})
	}
	return out
}

// fixtureStat is the median, range and spread of vs.
func fixtureStat(vs []float64) Stat {
	if len(vs) == 0 {
		return Stat{}
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	st := Stat{Median: s[len(s)/2], Min: s[0], Max: s[len(s)-1]}
	st.Spread = (st.Max - st.Min) / st.Median
	return st
}

// failRound marks the round with index idx as failed verification.
func failRound(r *Report, idx int, msg string) {
	for i := range r.Rounds {
		if r.Rounds[i].Index == idx {
			r.Rounds[i].Verified = false
			r.Rounds[i].Error = msg
			for j := range r.Summary {
				if r.Summary[j].RecordSize == r.Rounds[i].RecordSize {
					r.Summary[j].AllRoundsVerified = false
				}
			}
		}
	}
}

// renderHTML renders r and checks what every page must satisfy: it parses as
// HTML, every SVG is well-formed XML, there is no NaN or infinity anywhere,
// and nothing is fetched from the network.
func renderHTML(t *testing.T, r *Report) (string, *html.Node) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteHTML(&buf, r); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	out := buf.String()
	doc, err := html.Parse(strings.NewReader(out))
	if err != nil {
		t.Fatalf("page does not parse as HTML: %v", err)
	}
	for _, svg := range regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(out, -1) {
		if err := xmlWellFormed(svg); err != nil {
			t.Errorf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
	}
	for _, bad := range []string{"NaN", "Inf", "<script", "<link", "@import", "url("} {
		if strings.Contains(out, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if rest := strings.ReplaceAll(out, `xmlns="http://www.w3.org/2000/svg"`, ""); strings.Contains(rest, "http://") || strings.Contains(rest, "https://") {
		t.Errorf("page references the network: %s", regexp.MustCompile(`https?://\S*`).FindString(rest))
	}
	return out, doc
}

// xmlWellFormed reads s to the end as XML.
func xmlWellFormed(s string) error {
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		if _, err := d.Token(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// htmlFindAll returns the elements of n named tag with the class, or any class
// when class is empty.
func htmlFindAll(n *html.Node, tag, class string) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == tag && (class == "" || htmlAttr(n, "class") == class) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func htmlAttr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// htmlText is the text content of n.
func htmlText(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

// tableRows is the text of every cell of table, row by row.
func tableRows(table *html.Node) [][]string {
	var rows [][]string
	for _, tr := range htmlFindAll(table, "tr", "") {
		var cells []string
		for c := tr.FirstChild; c != nil; c = c.NextSibling {
			if c.Type == html.ElementNode && (c.Data == "td" || c.Data == "th") {
				cells = append(cells, strings.TrimSpace(htmlText(c)))
			}
		}
		rows = append(rows, cells)
	}
	return rows
}

// rowNamed is the row of rows whose first cell is name.
func rowNamed(rows [][]string, name string) []string {
	for _, r := range rows {
		if len(r) > 0 && r[0] == name {
			return r
		}
	}
	return nil
}

func TestWriteHTMLReportShowsSetupSummaryPlotsAndRounds(t *testing.T) {
	r := reportFixture()
	out, doc := renderHTML(t, r)
	if path := os.Getenv("PIPEMESH_BENCH_REPORT_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, want := range []string{
		"2026-09-20 14:03:11 UTC", "8 CPUs (AMD EPYC 7B13)", "linux/amd64", "go1.26.8",
		"<b>kfake</b>", "fake Kafka broker in a child process",
		"100 B, 1 KiB, 16 KiB", "200,000 records per round", "lz4", "5ms", "50,000 records/s over all producers",
		"3 of each mode",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("setup lacks %q", want)
		}
	}
	if strings.Contains(out, "DATA CHECK FAILED") {
		t.Error("a report whose rounds all verified says DATA CHECK FAILED")
	}

	summaries := htmlFindAll(doc, "table", "summary")
	if len(summaries) != 3 {
		t.Fatalf("got %d summary tables, want one per record size, 3", len(summaries))
	}
	// The 1 KiB table: medians are the fixture's base figures, proxied 90%
	// of direct, spread ±3%.
	rows := tableRows(summaries[1])
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"produce MB/s", []string{"produce MB/s", "210", "189", "0.900", "±3.00%", "±3.00%"}},
		{"produce rec/s", []string{"produce rec/s", "205k", "185k", "0.900", "±3.00%", "±3.00%"}},
		{"consume MB/s", []string{"consume MB/s", "300", "270", "0.900", "±3.00%", "±3.00%"}},
		{"latency p50 ms", []string{"latency p50 ms", "0.800", "1.10", "1.38", "±3.00%", "±3.00%"}},
		{"latency p99 ms", []string{"latency p99 ms", "3.20", "4.40", "1.38", "±3.00%", "±3.00%"}},
		{"latency p99.9 ms", []string{"latency p99.9 ms", "7.20", "9.90", "1.38", "±3.00%", "±3.00%"}},
		{"proxy CPU s/GB", []string{"proxy CPU s/GB", "1.13 (±3.00%)"}},
		{"saturated", []string{"saturated", "broker"}},
		{"verified", []string{"verified", "all rounds: every record came back intact"}},
	} {
		if got := rowNamed(rows, tc.name); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("1 KiB summary row %q = %q, want %q", tc.name, got, tc.want)
		}
	}

	svgs := htmlFindAll(doc, "svg", "")
	if len(svgs) != 4 {
		t.Fatalf("got %d SVG plots, want throughput plus one latency plot per size, 4", len(svgs))
	}
	through := htmlText(svgs[0])
	for _, want := range []string{"100 B", "1 KiB", "16 KiB", "record size (log scale)", "MB/s",
		"produce direct", "produce proxied", "consume direct", "consume proxied", "whiskers"} {
		if !strings.Contains(through, want) {
			t.Errorf("throughput plot lacks %q", want)
		}
	}
	if n := len(htmlFindAll(svgs[0], "polyline", "")); n != 4 {
		t.Errorf("throughput plot has %d lines, want 4", n)
	}
	// 3 sizes x 4 series markers, and 4 legend markers.
	if n := len(htmlFindAll(svgs[0], "circle", "")) + len(htmlFindAll(svgs[0], "rect", "")); n != 16 {
		t.Errorf("throughput plot has %d markers, want 16", n)
	}
	for i, size := range []string{"100 B", "1 KiB", "16 KiB"} {
		lat := htmlText(svgs[i+1])
		for _, want := range []string{"Record size " + size, "100µs", "1ms", "10ms", "50%", "100%",
			"direct (3 rounds, 30.0k samples)", "proxied (3 rounds, 30.0k samples)", "produce latency (log scale)"} {
			if !strings.Contains(lat, want) {
				t.Errorf("latency plot for %s lacks %q", size, want)
			}
		}
		if n := len(htmlFindAll(svgs[i+1], "polyline", "")); n != 2 {
			t.Errorf("latency plot for %s has %d curves, want 2", size, n)
		}
	}

	rounds := htmlFindAll(doc, "table", "rounds")
	if len(rounds) != 1 {
		t.Fatalf("got %d round tables, want 1", len(rounds))
	}
	rrows := tableRows(rounds[0])
	if len(rrows) != 1+len(r.Rounds) {
		t.Fatalf("round table has %d rows, want header plus %d", len(rrows), len(r.Rounds))
	}
	want := []string{"10", "proxied", "1 KiB", "189", "270", "1.10", "4.40", "proxy 0.400, broker 1.50, clients 0.800", "yes"}
	if got := rrows[10]; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("round 10 row = %q, want %q", got, want)
	}
}

func TestWriteHTMLReportShowsFailedRoundProminently(t *testing.T) {
	r := reportFixture()
	failRound(r, 8, "consumed 199,990 of 200,000 records; checksum mismatch")
	out, doc := renderHTML(t, r)

	alerts := htmlFindAll(doc, "div", "alert")
	if len(alerts) != 1 {
		t.Fatalf("got %d alert boxes, want 1", len(alerts))
	}
	alert := htmlText(alerts[0])
	for _, want := range []string{"DATA CHECK FAILED", "round 8 (proxied, 1 KiB)", "consumed 199,990 of 200,000 records; checksum mismatch"} {
		if !strings.Contains(alert, want) {
			t.Errorf("alert lacks %q: %s", want, alert)
		}
	}
	if !strings.Contains(out, ".alert { border: 3px solid #cf222e") {
		t.Error("the alert is not styled red")
	}
	if strings.Index(out, `id="data-check-failed"`) > strings.Index(out, "<h2>Setup</h2>") {
		t.Error("the failure is not shown before everything else")
	}
	verified := rowNamed(tableRows(htmlFindAll(doc, "table", "summary")[1]), "verified")
	if len(verified) != 2 || !strings.HasPrefix(verified[1], "NOT ALL ROUNDS VERIFIED") || !strings.Contains(verified[1], "checksum mismatch") {
		t.Errorf("1 KiB summary verified row = %q, want the failure and its error", verified)
	}
	if ok := rowNamed(tableRows(htmlFindAll(doc, "table", "summary")[0]), "verified"); len(ok) != 2 || !strings.HasPrefix(ok[1], "all rounds") {
		t.Errorf("100 B summary verified row = %q, want all rounds verified", ok)
	}
	failed := htmlFindAll(doc, "tr", "failed")
	if len(failed) != 1 || !strings.Contains(htmlText(failed[0]), "NO: consumed 199,990") {
		t.Errorf("round table does not mark round 8 failed")
	}
}

func TestWriteHTMLReportRendersEmptyAndPartialReports(t *testing.T) {
	nanStat := Stat{Median: math.NaN(), Min: math.Inf(-1), Max: math.Inf(1), Spread: math.NaN()}
	zeroDirect := Compare{Direct: Stat{}, Proxied: Stat{Median: 5, Min: 4, Max: 6, Spread: 0.4}, Ratio: math.Inf(1)}
	for _, tc := range []struct {
		name string
		r    *Report
		want []string
	}{
		{"nil", nil, []string{"no rounds were measured", "No throughput summary to plot.", "No rounds were measured."}},
		{"empty", &Report{}, []string{"no rounds were measured", "start time unknown", "upstream</dt><dd><b>unknown</b>"}},
		{"rounds without summary", &Report{Upstream: "sink", Rounds: []Round{{Index: 1, Mode: Direct, RecordSize: 512, Verified: true}}},
			[]string{"rounds were measured but not summarised", "No latency histogram recorded at this size.", "in-memory broker"}},
		{"non-finite figures", &Report{
			Upstream: "external",
			Config:   Config{Direct: "kafka:9092", Proxy: "proxy:19092", ProxyPID: 4242},
			Summary: []Summary{
				{RecordSize: 100, ProduceMBPerSec: Compare{Direct: nanStat, Proxied: nanStat, Ratio: math.NaN()}, ConsumeMBPerSec: zeroDirect, ProxyCPUPerGB: nanStat},
				{RecordSize: 4096, ProduceMBPerSec: Compare{Direct: Stat{Median: math.Inf(1)}, Ratio: math.Inf(-1)}},
			},
			Rounds: []Round{
				{Index: 1, Mode: Proxied, RecordSize: 100, Produce: Phase{MBPerSec: math.NaN()}, LatencyHistogram: make([]int64, 3), Verified: true},
				{Index: 2, Mode: Direct, RecordSize: 4096, LatencyHistogram: append(make([]int64, len(LatencyBuckets)), 7), Verified: true},
			},
		}, []string{"kafka:9092", "proxy:19092", "4242", "n/a", "not measured", "direct (1 rounds, 7.00 samples)"}},
		{"many sizes", func() *Report {
			r := &Report{Upstream: "sink"}
			for _, size := range []int{100, 1000, 1024, 4096, 16384, 65536} {
				r.Summary = append(r.Summary, Summary{RecordSize: size, ProduceMBPerSec: Compare{Direct: Stat{Median: float64(size) / 100}}})
			}
			return r
		}(), []string{"Showing the 4 smallest of 6 record sizes.", "64 KiB"}},
		{"one size draws bars", func() *Report {
			r := reportFixture()
			r.Summary = r.Summary[:1]
			r.Summary[0].RecordSize = 1024
			return r
		}(), []string{"produce, proxied/direct 0.900", "consume, proxied/direct 0.900", "record size 1 KiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := renderHTML(t, tc.r)
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("page lacks %q", want)
				}
			}
		})
	}
}

func TestWriteHTMLReportEscapesText(t *testing.T) {
	r := reportFixture()
	r.Machine.CPUModel = `<script>alert("x")</script>`
	failRound(r, 3, `broker said <b>"no"</b> & left`)
	out, _ := renderHTML(t, r)
	if strings.Contains(out, `<b>"no"</b>`) {
		t.Error("round error written unescaped")
	}
	if !strings.Contains(out, "&lt;script&gt;") {
		t.Error("CPU model not escaped")
	}
}

func TestWriteHTMLReportReportsWriteErrors(t *testing.T) {
	if err := WriteHTML(reportFailingWriter{}, reportFixture()); err == nil || !strings.Contains(err.Error(), "writing the HTML report") {
		t.Errorf("WriteHTML to a failing writer = %v, want a write error", err)
	}
}

type reportFailingWriter struct{}

func (reportFailingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }
