package config

import (
	"fmt"
	"strings"

	"github.com/pipemesh/pipemesh/protocol"
)

// The compression:, quotas: and limits: sections have the shape the policy
// file will give them (docs/compression.md, docs/quotas.md), so they move
// there unchanged once it exists. Names follow Kafka's where Kafka has one
// (compression.type's codec names, compression.<codec>.level, resource
// pattern types literal and prefixed).

// CompressionRule recompresses Produce batches for matching topics.
type CompressionRule struct {
	Topic string `yaml:"topic"`
	// Pattern is literal (the default) or prefixed, as in Kafka ACLs.
	Pattern       string `yaml:"pattern"`
	Codec         string `yaml:"codec"`
	Level         int    `yaml:"level"`
	MinBatchBytes Bytes  `yaml:"min_batch_bytes"`
}

// QuotaRule limits a principal, or a principal's traffic to some topics.
type QuotaRule struct {
	Principal             string  `yaml:"principal"`
	Topic                 string  `yaml:"topic"`
	Pattern               string  `yaml:"pattern"`
	ProduceBytesPerSecond Bytes   `yaml:"produce_bytes_per_second"`
	FetchBytesPerSecond   Bytes   `yaml:"fetch_bytes_per_second"`
	RequestsPerSecond     float64 `yaml:"requests_per_second"`
}

// Limits bound the proxy's memory.
type Limits struct {
	MemoryBytes                   Bytes `yaml:"memory_bytes"`
	MaxInflightBytesPerConnection Bytes `yaml:"max_inflight_bytes_per_connection"`
}

// Prefixed reports whether the rule's pattern is prefixed.
func (r CompressionRule) Prefixed() bool { return r.Pattern == "prefixed" }

// Prefixed reports whether the rule's pattern is prefixed.
func (r QuotaRule) Prefixed() bool { return r.Pattern == "prefixed" }

// levelRange is the levels each codec takes, as Kafka's
// compression.<codec>.level does; 0 always means the codec's default.
var levelRange = map[protocol.Codec][2]int{
	protocol.CodecGzip: {1, 9},
	protocol.CodecLZ4:  {1, 17},
	protocol.CodecZstd: {-131072, 22},
}

func validPattern(p string) bool { return p == "" || p == "literal" || p == "prefixed" }

func (f *File) validateRules(lines lineIndex) error {
	seen := map[string]int{}
	for i, r := range f.Compression {
		at := func(key string) int { return lines.at(fmt.Sprintf("compression.%d.%s", i, key)) }
		name := fmt.Sprintf("compression[%d]", i)
		if !validPattern(r.Pattern) {
			return fmt.Errorf("%d: %s.pattern %q: want literal or prefixed", at("pattern"), name, r.Pattern)
		}
		if r.Topic == "" && !r.Prefixed() {
			return fmt.Errorf("%d: %s names no topic; give topic (with pattern: prefixed for a prefix)", at("topic"), name)
		}
		if r.Codec == "" {
			return fmt.Errorf("%d: %s has no codec; want none, gzip, snappy, lz4 or zstd", at("codec"), name)
		}
		c, err := protocol.ParseCodec(r.Codec)
		if err != nil {
			return fmt.Errorf("%d: %s.codec: %w", at("codec"), name, err)
		}
		if r.Level != 0 {
			lr, ok := levelRange[c]
			if !ok {
				return fmt.Errorf("%d: %s.level: %s has no levels; leave level out", at("level"), name, c)
			}
			if r.Level < lr[0] || r.Level > lr[1] {
				return fmt.Errorf("%d: %s.level %d: %s levels run from %d to %d", at("level"), name, r.Level, c, lr[0], lr[1])
			}
		}
		key := r.Pattern + "\x00" + r.Topic
		if r.Pattern == "" {
			key = "literal\x00" + r.Topic
		}
		if j, dup := seen[key]; dup {
			return fmt.Errorf("%d: %s covers the same topics as compression[%d]; merge them", at("topic"), name, j)
		}
		seen[key] = i
	}
	for i, q := range f.Quotas {
		at := func(key string) int { return lines.at(fmt.Sprintf("quotas.%d.%s", i, key)) }
		name := fmt.Sprintf("quotas[%d]", i)
		if err := checkPrincipal(q.Principal); err != nil {
			return fmt.Errorf("%d: %s.principal: %w", at("principal"), name, err)
		}
		if !validPattern(q.Pattern) {
			return fmt.Errorf("%d: %s.pattern %q: want literal or prefixed", at("pattern"), name, q.Pattern)
		}
		if q.Pattern != "" && q.Topic == "" && !q.Prefixed() {
			return fmt.Errorf("%d: %s has a pattern but no topic", at("pattern"), name)
		}
		if q.RequestsPerSecond < 0 {
			return fmt.Errorf("%d: %s.requests_per_second must not be negative", at("requests_per_second"), name)
		}
		if q.ProduceBytesPerSecond == 0 && q.FetchBytesPerSecond == 0 && q.RequestsPerSecond == 0 {
			return fmt.Errorf("%d: %s sets no rate; give produce_bytes_per_second, fetch_bytes_per_second or requests_per_second", at("principal"), name)
		}
		if (q.Topic != "" || q.Prefixed()) && q.RequestsPerSecond > 0 {
			return fmt.Errorf("%d: %s.requests_per_second limits a principal, not a topic; put it in a rule without topic", at("requests_per_second"), name)
		}
	}
	if m := f.Limits.MemoryBytes; m != 0 && m < 1<<20 {
		return fmt.Errorf("%d: limits.memory_bytes %d is below 1MiB; leave it out for the default (a quarter of the machine's memory)", lines.at("limits.memory_bytes"), m)
	}
	return nil
}

// checkPrincipal accepts "*", "Type:*" and "Type:name".
func checkPrincipal(p string) error {
	if p == "" {
		return fmt.Errorf("missing; want User:name, User:* or *")
	}
	if p == "*" {
		return nil
	}
	typ, name, ok := strings.Cut(p, ":")
	if !ok || typ == "" || name == "" {
		return fmt.Errorf("%q: want Type:name (User:alice), Type:* (User:*) or *", p)
	}
	return nil
}
