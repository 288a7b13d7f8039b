package benchmarks

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// writeTable renders r with WriteTable and splits it into lines with runs of
// spaces collapsed, so assertions do not depend on column widths.
func writeTable(t *testing.T, r *Report) (string, []string) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTable(&buf, r); err != nil {
		t.Fatalf("WriteTable: %v", err)
	}
	out := buf.String()
	for _, bad := range []string{"NaN", "Inf"} {
		if strings.Contains(out, bad) {
			t.Errorf("table contains %q:\n%s", bad, out)
		}
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return out, lines
}

// hasLine reports whether lines holds want exactly.
func hasLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func TestWriteTableSummarisesEachRecordSize(t *testing.T) {
	out, lines := writeTable(t, reportFixture())
	for _, want := range []string{
		"pipemesh bench kafka: 2026-09-20 14:03:11 UTC, 8 CPUs (AMD EPYC 7B13), linux/amd64, go1.26.8",
		"record size 100 B (3 direct and 3 proxied rounds)",
		"record size 1 KiB (3 direct and 3 proxied rounds)",
		"record size 16 KiB (3 direct and 3 proxied rounds)",
		"direct proxied proxied/direct spread direct/proxied",
		"produce MB/s 210 189 0.900 ±3.00% / ±3.00%",
		"produce rec/s 205k 185k 0.900 ±3.00% / ±3.00%",
		"consume MB/s 800 720 0.900 ±3.00% / ±3.00%",
		"consume rec/s 48.8k 43.9k 0.900 ±3.00% / ±3.00%",
		"latency p50 ms 0.800 1.10 1.38 ±3.00% / ±3.00%",
		"latency p99 ms 3.20 4.40 1.38 ±3.00% / ±3.00%",
		"latency p99.9 ms 7.20 9.90 1.38 ±3.00% / ±3.00%",
		"proxy CPU-s/GB 1.13 (±3.00%)",
		"saturated broker",
		"verified all rounds",
	} {
		if !hasLine(lines, want) {
			t.Errorf("table lacks line %q:\n%s", want, out)
		}
	}
	if !strings.HasPrefix(lines[1], "upstream: kfake: franz-go's fake Kafka broker in a child process") {
		t.Errorf("second line = %q, want the upstream and what it means", lines[1])
	}
	if strings.Contains(out, "DATA CHECK FAILED") {
		t.Errorf("verified report says DATA CHECK FAILED:\n%s", out)
	}
	// Record sizes come in ascending order.
	if a, b := strings.Index(out, "record size 1 KiB"), strings.Index(out, "record size 16 KiB"); a < 0 || b < a {
		t.Errorf("record sizes out of order:\n%s", out)
	}
}

func TestWriteTableShowsDataCheckFailures(t *testing.T) {
	r := reportFixture()
	failRound(r, 8, "consumed 199,990 of 200,000 records")
	failRound(r, 13, "")
	out, lines := writeTable(t, r)
	for _, want := range []string{
		"DATA CHECK FAILED: round 8 (proxied, 1 KiB): consumed 199,990 of 200,000 records",
		"DATA CHECK FAILED: round 13 (direct, 16 KiB): the consumed records did not match what was produced",
		"verified NO, see DATA CHECK FAILED below",
		"record size 1 KiB (3 direct and 3 proxied rounds, 1 failed)",
	} {
		if !hasLine(lines, want) {
			t.Errorf("table lacks line %q:\n%s", want, out)
		}
	}
	if !strings.HasPrefix(lines[len(lines)-2], "DATA CHECK FAILED") {
		t.Errorf("the failures are not the last thing printed:\n%s", out)
	}
}

func TestWriteTableRoundErrorCountsAsFailure(t *testing.T) {
	r := reportFixture()
	r.Rounds[0].Error = "produce: context deadline exceeded"
	_, lines := writeTable(t, r)
	if !hasLine(lines, "DATA CHECK FAILED: round 1 (direct, 100 B): produce: context deadline exceeded") {
		t.Errorf("a round with an error is not reported: %q", lines)
	}
}

func TestWriteTableSummaryFailureWithoutRound(t *testing.T) {
	r := reportFixture()
	r.Summary[0].AllRoundsVerified = false
	_, lines := writeTable(t, r)
	if !hasLine(lines, "DATA CHECK FAILED: record size "+sizeLabel(r.Summary[0].RecordSize)+": not all rounds verified") {
		t.Errorf("a summary that is not verified, with no failed round, is not reported: %q", lines)
	}
}

func TestWriteTableEmptyAndPartialReports(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *Report
		want []string
	}{
		{"nil", nil, []string{"no rounds measured", "upstream: unknown: the report does not say which upstream was measured"}},
		{"sink, no rounds", &Report{Upstream: "sink"}, []string{"no rounds measured", "pipemesh bench kafka: start time unknown, CPU count unknown"}},
		{"rounds, no summary", &Report{Upstream: "external", Rounds: make([]Round, 2)}, []string{"2 rounds measured but no summary computed"}},
		{"non-finite", &Report{Summary: []Summary{{
			RecordSize:      100,
			ProduceMBPerSec: Compare{Direct: Stat{Median: math.NaN(), Spread: math.Inf(1)}, Proxied: Stat{Median: 3}, Ratio: math.Inf(1)},
			ConsumeMBPerSec: Compare{Proxied: Stat{Median: 2, Spread: 0.1}, Ratio: math.NaN()},
			ProxyCPUPerGB:   Stat{Median: math.Inf(1)},
		}}}, []string{
			"produce MB/s n/a 3.00 n/a n/a / ±0%",
			"consume MB/s 0 2.00 n/a n/a / ±5.00%",
			"proxy CPU-s/GB not measured",
			"saturated not determined",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, lines := writeTable(t, tc.r)
			for _, want := range tc.want {
				if !hasLine(lines, want) {
					t.Errorf("table lacks line %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestTableSig3(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0"},
		{5, "5.00"},
		{12.345, "12.3"},
		{189.04, "189"},
		{999.4, "999"},
		{999.6, "1.00k"},
		{1234, "1.23k"},
		{123456, "123k"},
		{1.5e6, "1.50M"},
		{2.5e9, "2.50G"},
		{0.8, "0.800"},
		{0.01234, "0.0123"},
		{-2.5, "-2.50"},
		{math.NaN(), "n/a"},
		{math.Inf(1), "n/a"},
		{math.Inf(-1), "n/a"},
	} {
		if got := sig3(tc.in); got != tc.want {
			t.Errorf("sig3(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTableSizeLabel(t *testing.T) {
	for _, tc := range []struct {
		in   int
		want string
	}{
		{1, "1 B"},
		{100, "100 B"},
		{1000, "1000 B"},
		{1024, "1 KiB"},
		{1500, "1.46 KiB"},
		{16 << 10, "16 KiB"},
		{1 << 20, "1 MiB"},
		{3 << 19, "1.50 MiB"},
		{16 << 20, "16 MiB"},
	} {
		if got := sizeLabel(tc.in); got != tc.want {
			t.Errorf("sizeLabel(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTableRatioAndSpread(t *testing.T) {
	for _, tc := range []struct {
		name         string
		c            Compare
		ratio        string
		spreadDirect string
	}{
		{"normal", Compare{Direct: Stat{Median: 100, Spread: 0.05}, Proxied: Stat{Median: 95}, Ratio: 0.95}, "0.950", "±2.50%"},
		{"no direct", Compare{Proxied: Stat{Median: 95}, Ratio: math.Inf(1)}, "n/a", "n/a"},
		{"NaN ratio", Compare{Direct: Stat{Median: 1, Spread: math.NaN()}, Ratio: math.NaN()}, "n/a", "n/a"},
		{"both zero", Compare{Direct: Stat{Median: 0}}, "n/a", "n/a"},
		{"ratio not computed", Compare{Direct: Stat{Median: 10}, Proxied: Stat{Median: 9}}, "n/a", "±0%"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ratioText(tc.c); got != tc.ratio {
				t.Errorf("ratioText = %q, want %q", got, tc.ratio)
			}
			if got := spreadText(tc.c.Direct); got != tc.spreadDirect {
				t.Errorf("spreadText(direct) = %q, want %q", got, tc.spreadDirect)
			}
		})
	}
}

func TestTableTickLabel(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0"}, {200, "200"}, {1000, "1000"}, {0.30000000000000004, "0.3"}, {20000, "20k"}, {1.5e6, "1.5M"}, {math.NaN(), ""},
	} {
		if got := tickLabel(tc.in); got != tc.want {
			t.Errorf("tickLabel(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
