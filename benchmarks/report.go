package benchmarks

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// WriteHTML writes r as one self-contained HTML page: the run's machine,
// upstream and workload, a summary table per record size, a throughput plot
// against record size, produce latency distributions, and every round. The
// page has inline CSS and inline SVG drawn here, and nothing it fetches or
// runs, so it can be mailed or attached to an issue as it is.
func WriteHTML(w io.Writer, r *Report) error {
	if r == nil {
		r = &Report{}
	}
	var buf bytes.Buffer
	if err := reportPage.Execute(&buf, newReportView(r)); err != nil {
		return fmt.Errorf("benchmarks: rendering the HTML report: %w", err)
	}
	if _, err := buf.WriteTo(w); err != nil {
		return fmt.Errorf("benchmarks: writing the HTML report: %w", err)
	}
	return nil
}

// reportView is what the page template reads: every figure already
// formatted, every plot already drawn.
type reportView struct {
	Started          string
	Machine          string
	Upstream         string
	UpstreamMeaning  string
	Config           []labelValue
	Failures         []failureView
	Summaries        []summaryView
	Rounds           []roundView
	ThroughputSVG    template.HTML
	LatencySVGs      []template.HTML
	LatencyNote      string
	HasRounds        bool
	RoundsUnverified int
}

type labelValue struct{ Label, Value string }

type failureView struct{ Round, Error string }

type summaryView struct {
	Size      string
	Rounds    string
	Rows      []summaryRow
	CPUPerGB  string
	Saturated string
	Verified  bool
	Failures  []failureView
}

type summaryRow struct {
	Name, Direct, Proxied, Ratio, SpreadDirect, SpreadProxied string
	DirectRange, ProxiedRange                                 string
}

type roundView struct {
	Index, Mode, Size, ProduceMB, ConsumeMB, P50, P99, CPU string
	Verified                                               bool
	Error                                                  string
}

// newReportView formats r for the page template.
func newReportView(r *Report) reportView {
	v := reportView{
		Started:         startedText(r.Started),
		Machine:         machineText(r.Machine),
		Upstream:        upstreamName(r.Upstream),
		UpstreamMeaning: upstreamMeaning(r.Upstream),
		Config:          configRows(r),
		HasRounds:       len(r.Rounds) > 0,
	}
	for _, rd := range r.Rounds {
		if roundFailed(rd) {
			v.Failures = append(v.Failures, failureView{roundName(rd), roundErrorText(rd)})
			v.RoundsUnverified++
		}
	}
	for _, s := range sortedSummaries(r.Summary) {
		sv := summaryView{
			Size:      sizeLabel(s.RecordSize),
			Rounds:    roundsCountText(r.Rounds, s.RecordSize),
			CPUPerGB:  cpuPerGBText(s.ProxyCPUPerGB),
			Saturated: saturatedText(s.Saturated),
			Verified:  s.AllRoundsVerified,
		}
		for _, row := range compareRows(s) {
			sv.Rows = append(sv.Rows, summaryRow{
				Name:          row.name,
				Direct:        sig3(row.c.Direct.Median),
				Proxied:       sig3(row.c.Proxied.Median),
				Ratio:         ratioText(row.c),
				SpreadDirect:  spreadText(row.c.Direct),
				SpreadProxied: spreadText(row.c.Proxied),
				DirectRange:   rangeText(row.c.Direct),
				ProxiedRange:  rangeText(row.c.Proxied),
			})
		}
		for _, rd := range r.Rounds {
			if rd.RecordSize == s.RecordSize && roundFailed(rd) {
				sv.Failures = append(sv.Failures, failureView{roundName(rd), roundErrorText(rd)})
			}
		}
		if len(sv.Failures) > 0 {
			sv.Verified = false
		}
		v.Summaries = append(v.Summaries, sv)
	}
	for _, rd := range r.Rounds {
		v.Rounds = append(v.Rounds, roundView{
			Index:     strconv.Itoa(rd.Index),
			Mode:      string(rd.Mode),
			Size:      sizeLabel(rd.RecordSize),
			ProduceMB: sig3(rd.Produce.MBPerSec),
			ConsumeMB: sig3(rd.Consume.MBPerSec),
			P50:       sig3(reportMs(rd.Latency.P50)),
			P99:       sig3(reportMs(rd.Latency.P99)),
			CPU:       cpuText(rd.CPUSeconds),
			Verified:  !roundFailed(rd),
			Error:     roundErrorText(rd),
		})
	}
	v.ThroughputSVG = template.HTML(throughputSVG(sortedSummaries(r.Summary)))

	sizes := latencySizes(r)
	const maxLatencyCharts = 4
	if len(sizes) > maxLatencyCharts {
		v.LatencyNote = fmt.Sprintf("Showing the %d smallest of %d record sizes.", maxLatencyCharts, len(sizes))
		sizes = sizes[:maxLatencyCharts]
	}
	for _, size := range sizes {
		v.LatencySVGs = append(v.LatencySVGs, template.HTML(latencySVG(size, r.Rounds)))
	}
	return v
}

// configRows describes the workload of r.
func configRows(r *Report) []labelValue {
	c := r.Config
	var rows []labelValue
	if c.Direct != "" || c.Proxy != "" {
		rows = append(rows, labelValue{"direct address", c.Direct}, labelValue{"proxy address", c.Proxy})
		if c.ProxyPID > 0 {
			rows = append(rows, labelValue{"proxy PID", strconv.Itoa(c.ProxyPID)})
		}
	}
	sizes := c.Sweep
	if len(sizes) == 0 && c.RecordSize > 0 {
		sizes = []int{c.RecordSize}
	}
	var labels []string
	for _, s := range sizes {
		labels = append(labels, sizeLabel(s))
	}
	sizeText := strings.Join(labels, ", ")
	if sizeText == "" {
		sizeText = "not recorded"
	}
	rows = append(rows, labelValue{"record size", sizeText})
	switch {
	case c.Duration > 0:
		rows = append(rows, labelValue{"workload", "produce for " + c.Duration.String() + " per round"})
	case c.Records > 0:
		rows = append(rows, labelValue{"workload", groupThousands(c.Records) + " records per round"})
	default:
		rows = append(rows, labelValue{"workload", "not recorded"})
	}
	rate := "unlimited, as fast as the producers go"
	if c.Rate > 0 {
		rate = groupThousands(int64(c.Rate)) + " records/s over all producers"
	}
	compression := c.Compression
	if compression == "" {
		compression = "not recorded"
	}
	acks := c.Acks
	if acks == "" {
		acks = "not recorded"
	}
	rows = append(rows,
		labelValue{"partitions", strconv.Itoa(c.Partitions)},
		labelValue{"producers", strconv.Itoa(c.Producers)},
		labelValue{"consumers", strconv.Itoa(c.Consumers)},
		labelValue{"compression", compression},
		labelValue{"acks", acks},
		labelValue{"linger", c.Linger.String()},
		labelValue{"rate", rate},
		labelValue{"rounds", strconv.Itoa(c.Rounds) + " of each mode, direct and proxied alternating"},
	)
	return rows
}

// groupThousands writes n with thousands separators: 200,000.
func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// rangeText is the min-max range of s, for a tooltip.
func rangeText(s Stat) string {
	return "min " + sig3(s.Min) + ", max " + sig3(s.Max)
}

// reportMs is d in milliseconds.
func reportMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuText lists CPU seconds by role, the known roles first.
func cpuText(cpu map[string]float64) string {
	if len(cpu) == 0 {
		return "not measured"
	}
	order := map[string]int{"proxy": 0, "broker": 1, "clients": 2}
	roles := make([]string, 0, len(cpu))
	for role := range cpu {
		roles = append(roles, role)
	}
	sort.Slice(roles, func(i, j int) bool {
		oi, iok := order[roles[i]]
		oj, jok := order[roles[j]]
		switch {
		case iok && jok:
			return oi < oj
		case iok != jok:
			return iok
		}
		return roles[i] < roles[j]
	})
	parts := make([]string, len(roles))
	for i, role := range roles {
		parts[i] = role + " " + sig3(cpu[role])
	}
	return strings.Join(parts, ", ")
}

// latencySizes are the record sizes to draw latency distributions for: those
// of the summary, or of the rounds when there is no summary.
func latencySizes(r *Report) []int {
	seen := map[int]bool{}
	var sizes []int
	for _, s := range r.Summary {
		if !seen[s.RecordSize] {
			seen[s.RecordSize] = true
			sizes = append(sizes, s.RecordSize)
		}
	}
	if len(sizes) == 0 {
		for _, rd := range r.Rounds {
			if !seen[rd.RecordSize] {
				seen[rd.RecordSize] = true
				sizes = append(sizes, rd.RecordSize)
			}
		}
	}
	sort.Ints(sizes)
	return sizes
}

var reportPage = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pipemesh Kafka benchmark, {{.Started}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24; background: #fff; margin: 0; }
main { max-width: 960px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 32px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
p.lead { color: #57606a; margin: 0 0 16px; }
p.note { color: #57606a; font-size: 0.9em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; font-size: 0.92em; margin: 6px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e8eb; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.text, th.text { text-align: left; white-space: normal; }
tr.failed td { background: #fff0f0; }
.ok { color: #1a7f37; font-weight: 600; }
.bad { color: #cf222e; font-weight: 700; }
.alert { border: 3px solid #cf222e; background: #fff0f0; color: #82071e; padding: 12px 16px; margin: 16px 0; border-radius: 6px; }
.alert h2 { color: #cf222e; border: none; margin: 0 0 6px; }
.alert ul { margin: 0; padding-left: 20px; }
.alert code, td code { white-space: pre-wrap; }
.verified-ok { border-left: 4px solid #1a7f37; padding-left: 8px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(430px, 1fr)); gap: 12px; }
svg { display: block; max-width: 100%; height: auto; }
footer { color: #57606a; font-size: 0.85em; margin-top: 32px; }
</style>
</head>
<body>
<main>
<h1>pipemesh Kafka benchmark</h1>
<p class="lead">The same workload direct to the brokers and through the proxy, in alternating rounds. Run {{.Started}}.</p>
{{if .Failures}}<div class="alert" id="data-check-failed">
<h2>DATA CHECK FAILED: {{.RoundsUnverified}} round(s) did not verify every record or ended in an error</h2>
<ul>{{range .Failures}}<li><b>{{.Round}}</b>: <code>{{.Error}}</code></li>{{end}}</ul>
<p>Figures from these rounds are not trustworthy.</p>
</div>{{end}}
<h2>Setup</h2>
<dl class="facts">
<dt>machine</dt><dd>{{.Machine}}</dd>
<dt>upstream</dt><dd><b>{{.Upstream}}</b>: {{.UpstreamMeaning}}.</dd>
{{range .Config}}<dt>{{.Label}}</dt><dd>{{.Value}}</dd>
{{end}}</dl>

<h2>Summary</h2>
{{if .Summaries}}<p class="note">Medians over rounds. Spread is ± half the min–max range across rounds, as a percentage of the median; hover a median for its range. MB = 10<sup>6</sup> bytes. For throughput a ratio below 1 means the proxy costs throughput; for latency a ratio above 1 means the proxy adds latency.</p>
{{range .Summaries}}<h3>Record size {{.Size}} <small>({{.Rounds}})</small></h3>
<table class="summary">
<tr><th></th><th>direct</th><th>proxied</th><th>proxied / direct</th><th>spread direct</th><th>spread proxied</th></tr>
{{range .Rows}}<tr><td>{{.Name}}</td><td title="{{.DirectRange}}">{{.Direct}}</td><td title="{{.ProxiedRange}}">{{.Proxied}}</td><td>{{.Ratio}}</td><td>{{.SpreadDirect}}</td><td>{{.SpreadProxied}}</td></tr>
{{end}}<tr><td>proxy CPU s/GB</td><td colspan="5" class="text">{{.CPUPerGB}}</td></tr>
<tr><td>saturated</td><td colspan="5" class="text">{{.Saturated}}</td></tr>
<tr><td>verified</td><td colspan="5" class="text">{{if .Verified}}<span class="ok">all rounds: every record came back intact</span>{{else}}<span class="bad">NOT ALL ROUNDS VERIFIED</span>{{range .Failures}}<br><span class="bad">{{.Round}}: {{.Error}}</span>{{end}}{{end}}</td></tr>
</table>
{{end}}{{else}}<p>No summary: {{if .HasRounds}}rounds were measured but not summarised.{{else}}no rounds were measured.{{end}}</p>{{end}}

<h2>Throughput against record size</h2>
{{.ThroughputSVG}}

<h2>Produce latency distribution</h2>
<p class="note">Cumulative share of produce requests acknowledged within a latency, all rounds of each mode together. Left and higher is faster; the gap between the curves at a height is what the proxy adds at that percentile.{{if .LatencyNote}} {{.LatencyNote}}{{end}}</p>
{{if .LatencySVGs}}<div class="charts">{{range .LatencySVGs}}<div>{{.}}</div>{{end}}</div>{{else}}<p>No latency histograms were recorded.</p>{{end}}

<h2>Rounds</h2>
{{if .Rounds}}<table class="rounds">
<tr><th>#</th><th class="text">mode</th><th>record size</th><th>produce MB/s</th><th>consume MB/s</th><th>p50 ms</th><th>p99 ms</th><th class="text">CPU seconds</th><th class="text">verified</th></tr>
{{range .Rounds}}<tr{{if not .Verified}} class="failed"{{end}}><td>{{.Index}}</td><td class="text">{{.Mode}}</td><td>{{.Size}}</td><td>{{.ProduceMB}}</td><td>{{.ConsumeMB}}</td><td>{{.P50}}</td><td>{{.P99}}</td><td class="text">{{.CPU}}</td><td class="text">{{if .Verified}}<span class="ok">yes</span>{{else}}<span class="bad">NO: {{.Error}}</span>{{end}}</td></tr>
{{end}}</table>
{{else}}<p>No rounds were measured.</p>{{end}}
<footer>Written by pipemesh bench kafka. This page is self-contained: no scripts, no external resources.</footer>
</main>
</body>
</html>
`))

// The plots are SVG drawn here. Every coordinate goes through svgNum, which
// never writes NaN or an infinity, and every piece of text through
// template.HTMLEscapeString.

// Plot colours: blue for produce, green for consume; direct is solid and
// proxied dashed with hollow markers.
const (
	colorProduce = "#1f5fa8"
	colorConsume = "#2b8a3e"
	colorInk     = "#1b1f24"
	colorMuted   = "#57606a"
	colorGrid    = "#e5e8eb"
	dashProxied  = "7 4"
)

// svgDoc accumulates one SVG element.
type svgDoc struct{ b strings.Builder }

// newSVG starts an SVG of w by h user units, described by label for screen
// readers.
func newSVG(w, h float64, label string) *svgDoc {
	s := &svgDoc{}
	s.printf(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="%s" font-family="system-ui, sans-serif" font-size="12">`,
		svgNum(w), svgNum(h), svgNum(w), svgNum(h), svgEscape(label))
	return s
}

func (s *svgDoc) printf(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

// line draws a line; style is fixed attribute text from this file.
func (s *svgDoc) line(x1, y1, x2, y2 float64, style string) {
	s.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" %s/>`, svgNum(x1), svgNum(y1), svgNum(x2), svgNum(y2), style)
}

// text writes txt at x, y; anchor is start, middle or end.
func (s *svgDoc) text(x, y float64, anchor, style, txt string) {
	s.printf(`<text x="%s" y="%s" text-anchor="%s" %s>%s</text>`, svgNum(x), svgNum(y), anchor, style, svgEscape(txt))
}

// marker draws a data point: a filled circle for direct, a hollow square for
// proxied, with a tooltip.
func (s *svgDoc) marker(x, y float64, color string, proxied bool, tip string) {
	if proxied {
		s.printf(`<rect x="%s" y="%s" width="8" height="8" fill="#fff" stroke="%s" stroke-width="2"><title>%s</title></rect>`,
			svgNum(x-4), svgNum(y-4), color, svgEscape(tip))
		return
	}
	s.printf(`<circle cx="%s" cy="%s" r="4.5" fill="%s"><title>%s</title></circle>`, svgNum(x), svgNum(y), color, svgEscape(tip))
}

// whisker draws a vertical min-max bar with caps.
func (s *svgDoc) whisker(x, yLo, yHi float64, color string) {
	style := `stroke="` + color + `" stroke-width="1.5"`
	s.line(x, yLo, x, yHi, style)
	s.line(x-3.5, yLo, x+3.5, yLo, style)
	s.line(x-3.5, yHi, x+3.5, yHi, style)
}

// polyline draws connected points.
func (s *svgDoc) polyline(pts [][2]float64, color, dash string) {
	if len(pts) < 2 {
		return
	}
	var b strings.Builder
	for i, p := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(svgNum(p[0]) + "," + svgNum(p[1]))
	}
	dashAttr := ""
	if dash != "" {
		dashAttr = ` stroke-dasharray="` + dash + `"`
	}
	s.printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s stroke-linejoin="round"/>`, b.String(), color, dashAttr)
}

// legendEntry draws a legend sample (line and marker) and its label at x, y.
func (s *svgDoc) legendEntry(x, y float64, color string, proxied bool, label string) {
	style := `stroke="` + color + `" stroke-width="2"`
	if proxied {
		style += ` stroke-dasharray="` + dashProxied + `"`
	}
	s.line(x, y, x+28, y, style)
	s.marker(x+14, y, color, proxied, label)
	s.text(x+34, y+4, "start", `fill="`+colorInk+`"`, label)
}

// legendSwatch draws a legend sample for a bar and its label at x, y.
func (s *svgDoc) legendSwatch(x, y float64, color string, proxied bool, label string) {
	s.printf(`<rect x="%s" y="%s" width="22" height="12" %s/>`, svgNum(x+3), svgNum(y-6), barStyle(color, proxied))
	s.text(x+34, y+4, "start", `fill="`+colorInk+`"`, label)
}

// barStyle is the fill of a bar: solid for direct, pale and dashed for
// proxied.
func barStyle(color string, proxied bool) string {
	if proxied {
		return `fill="` + color + `" fill-opacity="0.3" stroke="` + color + `" stroke-width="2" stroke-dasharray="` + dashProxied + `"`
	}
	return `fill="` + color + `"`
}

// noData writes a message in the middle of an empty plot.
func (s *svgDoc) noData(w, h float64, msg string) {
	s.printf(`<rect x="0.5" y="0.5" width="%s" height="%s" fill="#fafbfc" stroke="%s"/>`, svgNum(w-1), svgNum(h-1), colorGrid)
	s.text(w/2, h/2, "middle", `fill="`+colorMuted+`" font-size="14"`, msg)
}

func (s *svgDoc) close() string {
	s.b.WriteString("</svg>")
	return s.b.String()
}

// svgNum formats a coordinate, writing 0 for NaN and infinities so no
// attribute is ever invalid.
func svgNum(v float64) string {
	if !finiteFloat(v) {
		v = 0
	}
	out := strconv.FormatFloat(v, 'f', 1, 64)
	if out == "-0.0" {
		out = "0.0"
	}
	return out
}

// svgEscape escapes text for an HTML or XML text node or attribute.
func svgEscape(s string) string { return template.HTMLEscapeString(s) }

// tickLabel writes an axis tick value without trailing zeros: 200, 1000,
// 0.5, and 20k or 1.5M from ten thousand up.
func tickLabel(v float64) string {
	if !finiteFloat(v) {
		return ""
	}
	if math.Abs(v) >= 1e4 {
		out := sig3(v)
		num, suffix := out[:len(out)-1], out[len(out)-1:]
		if strings.Contains(num, ".") {
			num = strings.TrimRight(strings.TrimRight(num, "0"), ".")
		}
		return num + suffix
	}
	return strconv.FormatFloat(roundSig(v, 6), 'f', -1, 64)
}

// niceStep rounds raw up to 1, 2 or 5 times a power of ten, for axis ticks.
func niceStep(raw float64) float64 {
	if !finiteFloat(raw) || raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// throughputSeries are the four lines of the throughput plot.
var throughputSeries = []struct {
	name    string
	color   string
	proxied bool
	stat    func(Summary) Stat
}{
	{"produce direct", colorProduce, false, func(s Summary) Stat { return s.ProduceMBPerSec.Direct }},
	{"produce proxied", colorProduce, true, func(s Summary) Stat { return s.ProduceMBPerSec.Proxied }},
	{"consume direct", colorConsume, false, func(s Summary) Stat { return s.ConsumeMBPerSec.Direct }},
	{"consume proxied", colorConsume, true, func(s Summary) Stat { return s.ConsumeMBPerSec.Proxied }},
}

// throughputSVG plots MB/s against record size, one line per phase and
// mode, or grouped bars when there is only one record size.
func throughputSVG(sums []Summary) string {
	const (
		w, h                     = 900.0, 430.0
		left, right, top, bottom = 72.0, 24.0, 70.0, 62.0
	)
	px0, px1, py0, py1 := left, w-right, top, h-bottom

	var plotted []Summary
	for _, sum := range sums {
		if sum.RecordSize > 0 {
			plotted = append(plotted, sum)
		}
	}
	if len(plotted) == 0 {
		s := newSVG(w, 80, "No throughput to plot")
		s.noData(w, 80, "No throughput summary to plot.")
		return s.close()
	}
	s := newSVG(w, h, "Throughput in MB/s against record size, direct and proxied")
	bars := len(plotted) == 1

	ymax := 0.0
	for _, sum := range plotted {
		for _, ser := range throughputSeries {
			st := ser.stat(sum)
			for _, v := range []float64{st.Median, st.Max} {
				if finiteFloat(v) && v > ymax {
					ymax = v
				}
			}
		}
	}
	if ymax <= 0 {
		ymax = 1
	}
	step := niceStep(ymax / 5)
	ytop := math.Ceil(ymax*1.08/step) * step
	y := func(v float64) float64 {
		if !finiteFloat(v) {
			v = 0
		}
		v = math.Max(0, math.Min(v, ytop))
		return py1 - v/ytop*(py1-py0)
	}

	// Legend, above the plot so it never covers a line.
	note := "Markers are medians across rounds; whiskers span the minimum to the maximum round."
	for i, ser := range throughputSeries {
		if bars {
			s.legendSwatch(px0+float64(i)*165, 22, ser.color, ser.proxied, ser.name)
		} else {
			s.legendEntry(px0+float64(i)*165, 22, ser.color, ser.proxied, ser.name)
		}
	}
	if bars {
		note = "Bars are medians across rounds; whiskers span the minimum to the maximum round."
	}
	s.text(px0, 48, "start", `fill="`+colorMuted+`" font-size="11"`, note)

	// Y axis: gridlines and labels.
	for i := 0.0; i*step <= ytop+step/2; i++ {
		t := i * step
		s.line(px0, y(t), px1, y(t), `stroke="`+colorGrid+`"`)
		s.text(px0-8, y(t)+4, "end", `fill="`+colorMuted+`"`, tickLabel(t))
	}
	mid := (py0 + py1) / 2
	s.printf(`<text x="18" y="%s" text-anchor="middle" transform="rotate(-90 18 %s)" fill="%s">MB/s (MB = 10⁶ bytes)</text>`,
		svgNum(mid), svgNum(mid), colorInk)
	s.line(px0, py1, px1, py1, `stroke="`+colorInk+`"`)
	s.line(px0, py0, px0, py1, `stroke="`+colorInk+`"`)

	if bars {
		throughputBars(s, plotted[0], px0, px1, py1, y)
		return s.close()
	}

	lmin := math.Log10(float64(plotted[0].RecordSize))
	lmax := math.Log10(float64(plotted[len(plotted)-1].RecordSize))
	if lmax <= lmin {
		lmax = lmin + 1
	}
	const inset = 44.0
	x := func(size int) float64 {
		return px0 + inset + (math.Log10(float64(size))-lmin)/(lmax-lmin)*(px1-px0-2*inset)
	}

	// X axis: a tick and label at every record size measured.
	lastLabel := math.Inf(-1)
	for _, sum := range plotted {
		xs := x(sum.RecordSize)
		s.line(xs, py0, xs, py1, `stroke="`+colorGrid+`"`)
		s.line(xs, py1, xs, py1+5, `stroke="`+colorInk+`"`)
		if xs-lastLabel >= 52 {
			s.text(xs, py1+20, "middle", `fill="`+colorInk+`"`, sizeLabel(sum.RecordSize))
			lastLabel = xs
		}
	}
	s.text((px0+px1)/2, h-14, "middle", `fill="`+colorInk+`"`, "record size (log scale)")

	for i, ser := range throughputSeries {
		dx := (float64(i) - 1.5) * 5 // dodge so whiskers at one size do not overlap
		var pts [][2]float64
		for _, sum := range plotted {
			if st := ser.stat(sum); finiteFloat(st.Median) {
				pts = append(pts, [2]float64{x(sum.RecordSize) + dx, y(st.Median)})
			}
		}
		dash := ""
		if ser.proxied {
			dash = dashProxied
		}
		s.polyline(pts, ser.color, dash)
		for _, sum := range plotted {
			st := ser.stat(sum)
			if !finiteFloat(st.Median) {
				continue
			}
			xs := x(sum.RecordSize) + dx
			if finiteFloat(st.Min) && finiteFloat(st.Max) && st.Max > st.Min {
				s.whisker(xs, y(st.Min), y(st.Max), ser.color)
			}
			s.marker(xs, y(st.Median), ser.color, ser.proxied, statTip(ser.name, sum.RecordSize, st))
		}
	}
	return s.close()
}

// throughputBars draws the one-record-size throughput plot: produce and
// consume groups, each a direct and a proxied bar with its min-max whisker.
func throughputBars(s *svgDoc, sum Summary, px0, px1, py1 float64, y func(float64) float64) {
	const barW, gap = 84.0, 14.0
	groups := []struct {
		name   string
		series []int
		cmp    Compare
	}{
		{"produce", []int{0, 1}, sum.ProduceMBPerSec},
		{"consume", []int{2, 3}, sum.ConsumeMBPerSec},
	}
	for g, grp := range groups {
		center := px0 + (px1-px0)*(0.25+0.5*float64(g))
		for j, si := range grp.series {
			ser := throughputSeries[si]
			st := ser.stat(sum)
			bx := center - barW - gap/2 + float64(j)*(barW+gap)
			top := y(st.Median)
			style := barStyle(ser.color, ser.proxied)
			s.printf(`<rect x="%s" y="%s" width="%s" height="%s" %s><title>%s</title></rect>`,
				svgNum(bx), svgNum(top), svgNum(barW), svgNum(math.Max(0, py1-top)), style, svgEscape(statTip(ser.name, sum.RecordSize, st)))
			labelY := top
			if finiteFloat(st.Min) && finiteFloat(st.Max) && st.Max > st.Min {
				s.whisker(bx+barW/2, y(st.Min), y(st.Max), colorInk)
				labelY = math.Min(labelY, y(st.Max))
			}
			s.text(bx+barW/2, labelY-8, "middle", `fill="`+colorInk+`" font-weight="600"`, sig3(st.Median))
			mode := "direct"
			if ser.proxied {
				mode = "proxied"
			}
			s.text(bx+barW/2, py1+16, "middle", `fill="`+colorMuted+`"`, mode)
		}
		s.text(center, py1+34, "middle", `fill="`+colorInk+`" font-weight="600"`,
			grp.name+", proxied/direct "+ratioText(grp.cmp))
	}
	s.text((px0+px1)/2, py1+54, "middle", `fill="`+colorMuted+`"`, "record size "+sizeLabel(sum.RecordSize))
}

// statTip is the tooltip of one plotted figure.
func statTip(name string, size int, st Stat) string {
	return fmt.Sprintf("%s at %s: median %s MB/s (min %s, max %s)", name, sizeLabel(size), sig3(st.Median), sig3(st.Min), sig3(st.Max))
}

// latencyHist is the produce latency histogram of all rounds of one mode at
// one record size.
type latencyHist struct {
	counts []int64
	total  int64
	rounds int
}

// latencyHistogram adds up the histograms of the rounds of mode at size.
func latencyHistogram(rounds []Round, size int, mode Mode) latencyHist {
	var h latencyHist
	for _, rd := range rounds {
		if rd.RecordSize != size || rd.Mode != mode || len(rd.LatencyHistogram) == 0 {
			continue
		}
		h.rounds++
		if len(rd.LatencyHistogram) > len(h.counts) {
			h.counts = append(h.counts, make([]int64, len(rd.LatencyHistogram)-len(h.counts))...)
		}
		for i, c := range rd.LatencyHistogram {
			if c > 0 {
				h.counts[i] += c
				h.total += c
			}
		}
	}
	return h
}

// bucketUpper is the upper bound in microseconds of histogram bucket i; a
// bucket past LatencyBuckets, an overflow, continues their spacing.
func bucketUpper(i int) float64 {
	n := len(LatencyBuckets)
	if n == 0 {
		return 50 * math.Pow(1.25, float64(i))
	}
	if i < n {
		return float64(LatencyBuckets[i])
	}
	return float64(LatencyBuckets[n-1]) * math.Pow(1.25, float64(i-n+1))
}

// bucketLower is the lower bound in microseconds of histogram bucket i.
func bucketLower(i int) float64 {
	if i == 0 {
		return bucketUpper(0) / 1.25
	}
	return bucketUpper(i - 1)
}

// span is the index of the first and last non-empty buckets of h.
func (h latencyHist) span() (first, last int) {
	first, last = -1, -1
	for i, c := range h.counts {
		if c > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	return first, last
}

// latencyLabel writes a power-of-ten latency in microseconds: 100µs, 1ms, 1s.
func latencyLabel(us float64) string {
	switch {
	case us < 1e3:
		return strconv.FormatFloat(us, 'f', -1, 64) + "µs"
	case us < 1e6:
		return strconv.FormatFloat(us/1e3, 'f', -1, 64) + "ms"
	default:
		return strconv.FormatFloat(us/1e6, 'f', -1, 64) + "s"
	}
}

// latencySVG plots the cumulative distribution of produce latency at one
// record size, direct against proxied.
func latencySVG(size int, rounds []Round) string {
	const (
		w, h                     = 440.0, 330.0
		left, right, top, bottom = 52.0, 30.0, 76.0, 46.0
	)
	px0, px1, py0, py1 := left, w-right, top, h-bottom
	s := newSVG(w, h, "Produce latency distribution at record size "+sizeLabel(size)+", direct and proxied")

	modes := []struct {
		mode Mode
		hist latencyHist
	}{
		{Direct, latencyHistogram(rounds, size, Direct)},
		{Proxied, latencyHistogram(rounds, size, Proxied)},
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, m := range modes {
		if first, last := m.hist.span(); first >= 0 {
			lo = math.Min(lo, bucketLower(first))
			hi = math.Max(hi, bucketUpper(last))
		}
	}
	if !finiteFloat(lo) || !finiteFloat(hi) || lo <= 0 {
		s.text(w/2, 22, "middle", `fill="`+colorInk+`" font-weight="600" font-size="13"`, "Record size "+sizeLabel(size))
		s.text(w/2, h/2, "middle", `fill="`+colorMuted+`" font-size="13"`, "No latency histogram recorded at this size.")
		return s.close()
	}
	dlo := math.Floor(math.Log10(lo))
	dhi := math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	x := func(us float64) float64 {
		if us <= 0 || !finiteFloat(us) {
			return px0
		}
		return px0 + (math.Log10(us)-dlo)/(dhi-dlo)*(px1-px0)
	}
	y := func(pct float64) float64 { return py1 - pct/100*(py1-py0) }

	s.text(w/2, 18, "middle", `fill="`+colorInk+`" font-weight="600" font-size="13"`, "Record size "+sizeLabel(size))

	// Grid: decades labelled, 2 and 5 between them faint.
	for d := dlo; d <= dhi; d++ {
		us := math.Pow(10, d)
		s.line(x(us), py0, x(us), py1, `stroke="#c9d1d9"`)
		s.line(x(us), py1, x(us), py1+5, `stroke="`+colorInk+`"`)
		s.text(x(us), py1+18, "middle", `fill="`+colorInk+`"`, latencyLabel(us))
		if d < dhi {
			for _, m := range []float64{2, 5} {
				s.line(x(m*us), py0, x(m*us), py1, `stroke="`+colorGrid+`" stroke-dasharray="2 3"`)
			}
		}
	}
	for _, pct := range []float64{0, 25, 50, 75, 90, 100} {
		s.line(px0, y(pct), px1, y(pct), `stroke="`+colorGrid+`"`)
		s.text(px0-6, y(pct)+4, "end", `fill="`+colorMuted+`"`, strconv.FormatFloat(pct, 'f', -1, 64)+"%")
	}
	s.line(px0, py1, px1, py1, `stroke="`+colorInk+`"`)
	s.line(px0, py0, px0, py1, `stroke="`+colorInk+`"`)
	s.text((px0+px1)/2, h-8, "middle", `fill="`+colorInk+`"`, "produce latency (log scale)")

	for i, m := range modes {
		proxied := m.mode == Proxied
		label := string(m.mode)
		if m.hist.total > 0 {
			label += fmt.Sprintf(" (%d rounds, %s samples)", m.hist.rounds, sig3(float64(m.hist.total)))
		} else {
			label += " (no histogram)"
		}
		s.legendEntry(px0, 38+float64(i)*20, colorProduce, proxied, label)
		first, last := m.hist.span()
		if first < 0 {
			continue
		}
		pts := [][2]float64{{x(bucketLower(first)), y(0)}}
		var cum int64
		for b := first; b <= last; b++ {
			cum += m.hist.counts[b]
			pts = append(pts, [2]float64{x(bucketUpper(b)), y(100 * float64(cum) / float64(m.hist.total))})
		}
		pts = append(pts, [2]float64{px1, y(100)})
		dash := ""
		if proxied {
			dash = dashProxied
		}
		s.polyline(pts, colorProduce, dash)
	}
	return s.close()
}
