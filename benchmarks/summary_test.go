package benchmarks

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// summaryRound is a verified round with the given figures.
func summaryRound(mode Mode, size int, produceMB float64, p99 time.Duration, cpu map[string]float64) Round {
	return Round{
		Mode: mode, RecordSize: size, Verified: true,
		Produce:    Phase{Duration: time.Second, MBPerSec: produceMB, RecordsPerSec: produceMB * 1000},
		Consume:    Phase{Duration: time.Second, MBPerSec: 2 * produceMB, RecordsPerSec: 2000 * produceMB},
		Latency:    Latency{P50: p99 / 2, P99: p99, P999: 2 * p99, Max: 3 * p99},
		CPUSeconds: cpu,
		ProxyCPUPerGB: func() float64 {
			if mode == Proxied {
				return 0.5
			}
			return 0
		}(),
	}
}

func TestSummarizeMediansRatiosAndSpread(t *testing.T) {
	cpu := map[string]float64{"broker": 1.9, "proxy": 0.6, "clients": 0.8} // over 2 s
	rounds := []Round{
		summaryRound(Direct, 1024, 100, 2*time.Millisecond, nil),
		summaryRound(Proxied, 1024, 90, 3*time.Millisecond, cpu),
		summaryRound(Direct, 1024, 120, 2*time.Millisecond, nil),
		summaryRound(Proxied, 1024, 80, 3*time.Millisecond, cpu),
		summaryRound(Direct, 1024, 110, 4*time.Millisecond, nil),
		summaryRound(Proxied, 1024, 85, 6*time.Millisecond, cpu),
	}
	sums := Summarize(rounds, 4)
	require.Len(t, sums, 1)
	s := sums[0]
	assert.Equal(t, 1024, s.RecordSize)
	assert.True(t, s.AllRoundsVerified)
	assert.Equal(t, Stat{Median: 110, Min: 100, Max: 120, Spread: 20.0 / 110}, s.ProduceMBPerSec.Direct)
	assert.Equal(t, Stat{Median: 85, Min: 80, Max: 90, Spread: 10.0 / 85}, s.ProduceMBPerSec.Proxied)
	assert.InDelta(t, 85.0/110, s.ProduceMBPerSec.Ratio, 1e-12)
	assert.InDelta(t, 170.0/220, s.ConsumeMBPerSec.Ratio, 1e-12)
	assert.InDelta(t, 1.5, s.LatencyP99Ms.Ratio, 1e-12, "latency ratio is proxied over direct: above 1 is worse")
	assert.InDelta(t, 3.0, s.LatencyP99Ms.Proxied.Median, 1e-12)
	assert.Equal(t, 0.5, s.ProxyCPUPerGB.Median)
	assert.Equal(t, "broker (0.95 of a core)", s.Saturated)
}

func TestSummarizeLeavesFailedRoundsOut(t *testing.T) {
	bad := summaryRound(Proxied, 100, 1, time.Millisecond, nil)
	bad.Verified, bad.Error = false, "data check failed: 1 record(s) lost"
	rounds := []Round{
		summaryRound(Direct, 100, 50, time.Millisecond, nil),
		bad,
		summaryRound(Direct, 200, 50, time.Millisecond, nil),
		summaryRound(Proxied, 200, 40, time.Millisecond, nil),
	}
	sums := Summarize(rounds, 2)
	require.Len(t, sums, 2)
	assert.False(t, sums[0].AllRoundsVerified)
	assert.Zero(t, sums[0].ProduceMBPerSec.Proxied.Median, "the failed round's figure is not used")
	assert.Zero(t, sums[0].ProduceMBPerSec.Ratio, "no ratio without a proxied figure")
	assert.True(t, sums[1].AllRoundsVerified)
	assert.InDelta(t, 0.8, sums[1].ProduceMBPerSec.Ratio, 1e-12)
}

func TestStatOfEvenCountAndZero(t *testing.T) {
	assert.Equal(t, Stat{Median: 2.5, Min: 1, Max: 4, Spread: 3 / 2.5}, statOf([]float64{4, 1, 3, 2}))
	assert.Equal(t, Stat{}, statOf(nil))
	assert.Equal(t, Stat{}, statOf([]float64{0, 0}))
}

func TestSaturated(t *testing.T) {
	round := func(cpu map[string]float64) Round {
		return summaryRound(Proxied, 1, 1, time.Millisecond, cpu) // 2 s of wall
	}
	tests := []struct {
		name   string
		cpus   int
		rounds []Round
		want   string
	}{
		{"one process near a core", 2, []Round{round(map[string]float64{"broker": 1.94, "proxy": 0.4, "clients": 0.6})}, "broker (0.97 of a core)"},
		{"the most common answer wins", 8, []Round{
			round(map[string]float64{"proxy": 1.6, "broker": 1.0}),
			round(map[string]float64{"proxy": 1.0, "broker": 1.8}),
			round(map[string]float64{"proxy": 1.7, "broker": 1.0}),
		}, "proxy (0.80 of a core)"},
		{"all CPUs busy between them", 2, []Round{round(map[string]float64{"broker": 1.6, "proxy": 1.2, "clients": 1.2})}, "all 2 CPUs (broker 0.80, clients 0.60, proxy 0.60 of a core)"},
		{"most of the machine busy, no process near a core", 2, []Round{round(map[string]float64{"clients": 1.72, "broker": 1.1, "proxy": 0.54})}, "all 2 CPUs (clients 0.86, broker 0.55, proxy 0.27 of a core)"},
		{"a process near a core wins over a busy machine", 2, []Round{round(map[string]float64{"broker": 1.9, "clients": 1.4, "proxy": 0.6})}, "broker (0.95 of a core)"},
		{"busiest when neither", 4, []Round{round(map[string]float64{"proxy": 1.4, "broker": 0.2})}, "proxy (0.70 of a core)"},
		{"a shared machine", 2, []Round{round(map[string]float64{"other": 1.9, "clients": 1.0, "broker": 0.6})}, "other load on the machine (0.95 of a core)"},
		{"nothing busy", 2, []Round{round(map[string]float64{"broker": 0.2, "proxy": 0.1, "clients": 0.3})}, "none (clients 0.15, broker 0.10, proxy 0.05 of a core)"},
		{"CPU unknown", 2, []Round{round(nil)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, saturated(tt.rounds, tt.cpus))
		})
	}
}
