package benchmarks

import "time"

// Mode says whether a round went direct to the brokers or through the proxy
// (or, for bench flight --baseline, through the reference forwarder).
type Mode string

// The modes of a round.
const (
	Direct  Mode = "direct"
	Proxied Mode = "proxied"
	// Baseline rounds go through a plain TCP forwarder (bench flight
	// --baseline tcp): the cost of a second hop that does nothing else.
	Baseline Mode = "baseline"
)

// Round is the measurement of one workload run in one mode.
type Round struct {
	Index      int     `json:"index"`
	Mode       Mode    `json:"mode"`
	RecordSize int     `json:"record_size"`
	Records    int64   `json:"records"`
	Bytes      int64   `json:"bytes"` // record values and keys produced
	Produce    Phase   `json:"produce"`
	Consume    Phase   `json:"consume"`
	Latency    Latency `json:"produce_latency"`
	// LatencyHistogram holds produce latencies in microseconds, bucketed
	// by LatencyBuckets, for the report's distribution plot.
	LatencyHistogram []int64 `json:"produce_latency_histogram_us"`
	// CPU seconds each process spent during the round, by role
	// ("proxy", "broker", "clients"); absent when not measurable.
	CPUSeconds map[string]float64 `json:"cpu_seconds,omitempty"`
	// ProxyCPUPerGB is proxy CPU seconds per GB moved (produced plus
	// consumed); zero for direct rounds or when unknown.
	ProxyCPUPerGB float64 `json:"proxy_cpu_seconds_per_gb,omitempty"`
	// Verified is true when the consumed record count and checksum equal
	// what was produced.
	Verified bool   `json:"verified"`
	Error    string `json:"error,omitempty"`
}

// Phase is the throughput of one phase of a round.
type Phase struct {
	Duration      time.Duration `json:"duration_ns"`
	MBPerSec      float64       `json:"mb_per_sec"` // MB = 10^6 bytes
	RecordsPerSec float64       `json:"records_per_sec"`
}

// Latency is produce latency, from Produce call to acknowledgement.
type Latency struct {
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

// Stat is a median with its spread across rounds.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Spread is (max-min)/median, the relative noise of the figure.
	Spread float64 `json:"spread"`
}

// Compare sets a direct and a proxied figure side by side.
type Compare struct {
	Direct  Stat `json:"direct"`
	Proxied Stat `json:"proxied"`
	// Ratio is the proxied median over the direct median.
	Ratio float64 `json:"ratio"`
}

// Summary is the result of all rounds at one record size.
type Summary struct {
	RecordSize        int     `json:"record_size"`
	ProduceMBPerSec   Compare `json:"produce_mb_per_sec"`
	ProduceRecsPerSec Compare `json:"produce_records_per_sec"`
	ConsumeMBPerSec   Compare `json:"consume_mb_per_sec"`
	ConsumeRecsPerSec Compare `json:"consume_records_per_sec"`
	LatencyP50Ms      Compare `json:"produce_latency_p50_ms"`
	LatencyP99Ms      Compare `json:"produce_latency_p99_ms"`
	LatencyP999Ms     Compare `json:"produce_latency_p999_ms"`
	ProxyCPUPerGB     Stat    `json:"proxy_cpu_seconds_per_gb"`
	Saturated         string  `json:"saturated,omitempty"`
	AllRoundsVerified bool    `json:"all_rounds_verified"`
}

// Report is everything one `pipemesh bench kafka` run produced.
type Report struct {
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Config   Config    `json:"config"`
	Upstream string    `json:"upstream"` // "kfake", "sink" or "external"
	Rounds   []Round   `json:"rounds"`
	Summary  []Summary `json:"summary"`
}

// Machine describes where the figures were taken.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	GoVersion string `json:"go_version"`
}

// LatencyBuckets are the upper bounds, in microseconds, of the produce
// latency histogram: log-spaced from 50µs to 10s.
var LatencyBuckets = func() []int64 {
	var b []int64
	for v := 50.0; v <= 10e6; v *= 1.25 {
		b = append(b, int64(v))
	}
	return b
}()
