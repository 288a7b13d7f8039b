package benchmarks

import (
	"fmt"
	"strings"
	"time"

	"github.com/pipemesh/pipemesh/internal/config"
)

// Config is one harness run.
type Config struct {
	// Direct and Proxy, when both set, measure an existing setup: a Kafka
	// bootstrap address and a proxy in front of the same cluster. When
	// empty the harness starts its own upstream (Target) and proxy.
	Direct string `json:"direct,omitempty"`
	Proxy  string `json:"proxy,omitempty"`
	// ProxyPID, for an external proxy, is the process whose CPU to sample.
	ProxyPID int `json:"proxy_pid,omitempty"`
	// Target is the embedded upstream: "kfake" (realistic) or "sink" (an
	// in-memory broker fast enough that the proxy is the bottleneck).
	Target      string        `json:"target"`
	RecordSize  int           `json:"record_size"`
	Records     int64         `json:"records"`            // per round; 0 when Duration is set
	Duration    time.Duration `json:"duration,omitempty"` // per produce phase
	Partitions  int           `json:"partitions"`
	Producers   int           `json:"producers"`
	Consumers   int           `json:"consumers"`
	Compression string        `json:"compression"` // none, gzip, snappy, lz4, zstd
	Acks        string        `json:"acks"`        // all, 1, 0
	Linger      time.Duration `json:"linger"`
	Rate        int           `json:"rate,omitempty"` // records/s over all producers; 0 = as fast as possible
	Rounds      int           `json:"rounds"`         // rounds of each mode
	// Sweep lists record sizes to run the whole comparison at; empty means
	// RecordSize only.
	Sweep []int `json:"sweep,omitempty"`
}

// DefaultConfig is the standard workload.
func DefaultConfig() Config {
	return Config{
		Target: "kfake", RecordSize: 1024, Records: 500_000, Partitions: 6,
		Producers: 1, Consumers: 1, Compression: "none", Acks: "all",
		Linger: 0, Rounds: 3,
	}
}

// Validate checks c and says what is wrong in flag terms.
func (c *Config) Validate() error {
	if (c.Direct == "") != (c.Proxy == "") {
		return fmt.Errorf("--direct and --proxy go together: give both to measure an existing setup, or neither for the embedded one")
	}
	switch c.Target {
	case "kfake", "sink":
	default:
		return fmt.Errorf("--target %q: want sink or kfake", c.Target)
	}
	switch c.Compression {
	case "none", "gzip", "snappy", "lz4", "zstd":
	default:
		return fmt.Errorf("--compression %q: want none, gzip, snappy, lz4 or zstd", c.Compression)
	}
	switch c.Acks {
	case "all", "-1", "1", "0":
	default:
		return fmt.Errorf("--acks %q: want all, 1 or 0", c.Acks)
	}
	if c.Acks == "0" {
		return fmt.Errorf("--acks 0: no acknowledgement means no produce latency and no proof of delivery; use 1 or all")
	}
	switch {
	case c.RecordSize < 1 || c.RecordSize > 16<<20:
		return fmt.Errorf("--record-size %d: want 1 byte to 16MiB", c.RecordSize)
	case c.Records <= 0 && c.Duration <= 0:
		return fmt.Errorf("give --records or --duration")
	case c.Partitions < 1, c.Producers < 1, c.Consumers < 1, c.Rounds < 1:
		return fmt.Errorf("--partitions, --producers, --consumers and --rounds must be at least 1")
	case c.Consumers > c.Partitions:
		return fmt.Errorf("--consumers %d is more than --partitions %d; the extra consumers would idle", c.Consumers, c.Partitions)
	}
	return nil
}

// ParseSweep reads "record-size=100,1KiB,16KiB", the one sweepable knob.
func ParseSweep(s string) ([]int, error) {
	key, vals, ok := strings.Cut(s, "=")
	if !ok || key != "record-size" {
		return nil, fmt.Errorf("--sweep %q: want record-size=SIZE,SIZE,... (for example record-size=100,1KiB,16KiB)", s)
	}
	var out []int
	for _, v := range strings.Split(vals, ",") {
		n, err := config.ParseBytes(v)
		if err != nil {
			return nil, fmt.Errorf("--sweep: %w", err)
		}
		out = append(out, int(n))
	}
	return out, nil
}
