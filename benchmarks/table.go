package benchmarks

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the plain-text summary printed after a run: which
// upstream was measured, then for each record size the direct and proxied
// medians side by side with their ratio and spread, the proxy's CPU cost and
// what saturated, and finally a "DATA CHECK FAILED" line for every round whose
// records did not all come back intact.
func WriteTable(w io.Writer, r *Report) error {
	if r == nil {
		r = &Report{}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pipemesh bench kafka: %s, %s\n", startedText(r.Started), machineText(r.Machine))
	fmt.Fprintf(&b, "upstream: %s: %s\n", upstreamName(r.Upstream), upstreamMeaning(r.Upstream))

	sums := sortedSummaries(r.Summary)
	if len(sums) == 0 {
		if len(r.Rounds) == 0 {
			b.WriteString("\nno rounds measured\n")
		} else {
			fmt.Fprintf(&b, "\n%d rounds measured but no summary computed\n", len(r.Rounds))
		}
	}
	for _, s := range sums {
		fmt.Fprintf(&b, "\nrecord size %s (%s)\n", sizeLabel(s.RecordSize), roundsCountText(r.Rounds, s.RecordSize))
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  \tdirect\tproxied\tproxied/direct\tspread direct/proxied")
		for _, row := range compareRows(s) {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s / %s\n", row.name,
				sig3(row.c.Direct.Median), sig3(row.c.Proxied.Median), ratioText(row.c),
				spreadText(row.c.Direct), spreadText(row.c.Proxied))
		}
		fmt.Fprintf(tw, "  proxy CPU-s/GB\t%s\n", cpuPerGBText(s.ProxyCPUPerGB))
		fmt.Fprintf(tw, "  saturated\t%s\n", saturatedText(s.Saturated))
		verified := "all rounds"
		if !s.AllRoundsVerified {
			verified = "NO, see DATA CHECK FAILED below"
		}
		fmt.Fprintf(tw, "  verified\t%s\n", verified)
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("benchmarks: writing the summary table: %w", err)
		}
	}
	if len(sums) > 0 {
		b.WriteString("\nspread is ± half the min-max range across rounds, as a percentage of the median; MB = 10^6 bytes\n")
	}
	if fails := dataCheckFailures(r); len(fails) > 0 {
		b.WriteString("\n")
		for _, f := range fails {
			fmt.Fprintf(&b, "DATA CHECK FAILED: %s\n", f)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("benchmarks: writing the summary table: %w", err)
	}
	return nil
}

// compareRow is one figure of a summary, named for display.
type compareRow struct {
	name string
	c    Compare
}

// compareRows lists the direct/proxied figures of s in display order.
func compareRows(s Summary) []compareRow {
	return []compareRow{
		{"produce MB/s", s.ProduceMBPerSec},
		{"produce rec/s", s.ProduceRecsPerSec},
		{"consume MB/s", s.ConsumeMBPerSec},
		{"consume rec/s", s.ConsumeRecsPerSec},
		{"latency p50 ms", s.LatencyP50Ms},
		{"latency p99 ms", s.LatencyP99Ms},
		{"latency p99.9 ms", s.LatencyP999Ms},
	}
}

// The helpers below format figures for both the text table and the HTML
// report, so the two always print a number the same way.

// sig3 formats v to three significant digits, with a k, M or G suffix from a
// thousand up, and "n/a" for NaN and infinities.
func sig3(v float64) string {
	if !finiteFloat(v) {
		return "n/a"
	}
	if v == 0 {
		return "0"
	}
	v = roundSig(v, 3)
	suffix := ""
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if math.Abs(v) >= u.div {
			v, suffix = v/u.div, u.suffix
			break
		}
	}
	decimals := 2 - int(math.Floor(math.Log10(math.Abs(v))+1e-9))
	if decimals < 0 {
		decimals = 0
	}
	return strconv.FormatFloat(v, 'f', decimals, 64) + suffix
}

// roundSig rounds v to n significant digits.
func roundSig(v float64, n int) float64 {
	if v == 0 || !finiteFloat(v) {
		return v
	}
	scale := math.Pow(10, float64(n-1)-math.Floor(math.Log10(math.Abs(v))))
	return math.Round(v*scale) / scale
}

// finiteFloat reports whether v is neither NaN nor an infinity.
func finiteFloat(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// ratioText formats the proxied/direct ratio of c, or "n/a" when there is no
// direct figure to divide by.
func ratioText(c Compare) string {
	if c.Direct.Median == 0 || !finiteFloat(c.Ratio) || c.Ratio == 0 && c.Proxied.Median != 0 {
		return "n/a"
	}
	return sig3(c.Ratio)
}

// spreadText formats the spread of s as ± half its min-max range, in percent
// of the median.
func spreadText(s Stat) string {
	if s.Median == 0 || !finiteFloat(s.Spread) {
		return "n/a"
	}
	return "±" + sig3(s.Spread*100/2) + "%"
}

// cpuPerGBText formats proxy CPU seconds per GB with its spread.
func cpuPerGBText(s Stat) string {
	if s.Median == 0 || !finiteFloat(s.Median) {
		return "not measured"
	}
	return sig3(s.Median) + " (" + spreadText(s) + ")"
}

// saturatedText names what limited throughput, or says it is not known.
func saturatedText(s string) string {
	if s == "" {
		return "not determined"
	}
	return s
}

// sizeLabel writes a record size the way the --sweep flag reads it: 100 B,
// 1 KiB, 16 KiB, 1 MiB, with three significant digits when it is not a whole
// number of KiB or MiB.
func sizeLabel(n int) string {
	switch {
	case n < 1024:
		return strconv.Itoa(n) + " B"
	case n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n%(1<<10) == 0 && n < 1<<20:
		return strconv.Itoa(n>>10) + " KiB"
	case n < 1<<20:
		return sig3(float64(n)/(1<<10)) + " KiB"
	default:
		return sig3(float64(n)/(1<<20)) + " MiB"
	}
}

// upstreamName is the upstream as the report names it.
func upstreamName(u string) string {
	if u == "" {
		return "unknown"
	}
	return u
}

// upstreamMeaning says in a sentence what figures measured against the
// upstream u mean.
func upstreamMeaning(u string) string {
	switch u {
	case "kfake":
		return "franz-go's fake Kafka broker in a child process; the real protocol, but records stay in memory, with none of a real cluster's disk or network cost"
	case "sink":
		return "an in-memory broker fast enough that the proxy is the bottleneck; the figures are the proxy's own ceiling, not what a real cluster would do"
	case "external":
		return "an existing cluster (--direct) and a proxy in front of it (--proxy); the figures include that cluster, its network and its machines"
	case "":
		return "the report does not say which upstream was measured"
	default:
		return "an upstream this report does not know"
	}
}

// startedText formats when a run started.
func startedText(t time.Time) string {
	if t.IsZero() {
		return "start time unknown"
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

// machineText describes the machine in one line.
func machineText(m Machine) string {
	var parts []string
	cpus := "CPU count unknown"
	if m.CPUs > 0 {
		cpus = strconv.Itoa(m.CPUs) + " CPUs"
	}
	if m.CPUModel != "" {
		cpus += " (" + m.CPUModel + ")"
	}
	parts = append(parts, cpus)
	if m.GOOS != "" || m.GOARCH != "" {
		parts = append(parts, m.GOOS+"/"+m.GOARCH)
	}
	if m.GoVersion != "" {
		parts = append(parts, m.GoVersion)
	}
	return strings.Join(parts, ", ")
}

// sortedSummaries returns the summaries ordered by record size.
func sortedSummaries(in []Summary) []Summary {
	out := append([]Summary(nil), in...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].RecordSize < out[j].RecordSize })
	return out
}

// roundsCountText says how many rounds of each mode ran at a record size,
// and how many of them failed.
func roundsCountText(rounds []Round, size int) string {
	var d, p, failed int
	for _, rd := range rounds {
		if rd.RecordSize != size {
			continue
		}
		switch rd.Mode {
		case Direct:
			d++
		case Proxied:
			p++
		}
		if roundFailed(rd) {
			failed++
		}
	}
	out := fmt.Sprintf("%d direct and %d proxied rounds", d, p)
	if failed > 0 {
		out += fmt.Sprintf(", %d failed", failed)
	}
	return out
}

// roundName identifies a round in a failure message.
func roundName(rd Round) string {
	return fmt.Sprintf("round %d (%s, %s)", rd.Index, rd.Mode, sizeLabel(rd.RecordSize))
}

// roundFailed reports whether rd did not get back every record intact or
// ended in an error; either way its figures are not to be trusted.
func roundFailed(rd Round) bool { return !rd.Verified || rd.Error != "" }

// roundErrorText is why a round failed verification.
func roundErrorText(rd Round) string {
	if rd.Error != "" {
		return rd.Error
	}
	return "the consumed records did not match what was produced"
}

// dataCheckFailures lists every round that did not verify, and every record
// size whose summary says so without a failed round to show for it.
func dataCheckFailures(r *Report) []string {
	var out []string
	failedSize := map[int]bool{}
	for _, rd := range r.Rounds {
		if roundFailed(rd) {
			out = append(out, roundName(rd)+": "+roundErrorText(rd))
			failedSize[rd.RecordSize] = true
		}
	}
	for _, s := range sortedSummaries(r.Summary) {
		if !s.AllRoundsVerified && !failedSize[s.RecordSize] {
			out = append(out, "record size "+sizeLabel(s.RecordSize)+": not all rounds verified")
		}
	}
	return out
}
