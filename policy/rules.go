package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/pipemesh/pipemesh/protocol"
)

// The compression: and quotas: sections: rules for Kafka traffic that the
// policy file holds (and, for files written before the policy file existed,
// serve's --config file: internal/config decodes the same types and runs the
// same CheckRules). Names follow Kafka's where Kafka has one
// (compression.type's codec names, compression.<codec>.level, resource
// pattern types literal and prefixed). See docs/compression.md and
// docs/quotas.md.

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

// Prefixed reports whether the rule's pattern is prefixed.
func (r CompressionRule) Prefixed() bool { return r.Pattern == "prefixed" }

// Prefixed reports whether the rule's pattern is prefixed.
func (r QuotaRule) Prefixed() bool { return r.Pattern == "prefixed" }

// Bytes is a byte count written as 1048576 or with a KiB, MiB or GiB suffix.
type Bytes int64

// ValueError is a value that does not read as its type, at its place in
// the file.
type ValueError struct {
	Pos
	Msg string
}

func (e *ValueError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// UnmarshalYAML implements yaml.Unmarshaler; a bad size is a *ValueError.
func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseBytes(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		if err == nil {
			err = fmt.Errorf("want a size: bytes (1048576) or KiB, MiB, GiB (1MiB)")
		}
		return &ValueError{Pos: Pos{n.Line, n.Column}, Msg: err.Error()}
	}
	*b = Bytes(v)
	return nil
}

// ParseBytes reads a byte count with an optional KiB, MiB or GiB suffix.
func ParseBytes(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<63-1)/mult {
		return 0, fmt.Errorf("%q is not a size; write bytes (1048576) or use KiB, MiB, GiB (1MiB)", s)
	}
	return v * mult, nil
}

// RuleIssue is one problem CheckRules found.
type RuleIssue struct {
	// Section is compression or quotas; Index the rule's place in it.
	Section string
	Index   int
	// Key is the field at fault, "" for the rule as a whole.
	Key string
	// Msg names the rule and field: `compression[0].codec: ...`.
	Msg string
}

// levelRange is the levels each codec takes, as Kafka's
// compression.<codec>.level does; 0 always means the codec's default.
var levelRange = map[protocol.Codec][2]int{
	protocol.CodecGzip: {1, 9},
	protocol.CodecLZ4:  {1, 17},
	protocol.CodecZstd: {-131072, 22},
}

func validPattern(p string) bool { return p == "" || p == "literal" || p == "prefixed" }

// CheckRules validates compression and quota rules, one issue per bad rule
// at most, in rule order. Both the policy parser and the config file's use
// it, so the two files accept exactly the same rules.
func CheckRules(comp []CompressionRule, quotas []QuotaRule) []RuleIssue {
	var out []RuleIssue
	seen := map[string]int{}
	for i, r := range comp {
		bad := func(key, format string, args ...any) {
			out = append(out, RuleIssue{"compression", i, key, fmt.Sprintf("compression[%d]", i) + fmt.Sprintf(format, args...)})
		}
		var c protocol.Codec
		var err error
		if r.Codec != "" {
			c, err = protocol.ParseCodec(r.Codec)
		}
		switch {
		case !validPattern(r.Pattern):
			bad("pattern", ".pattern %q: want literal or prefixed", r.Pattern)
		case r.Topic == "" && !r.Prefixed():
			bad("topic", " names no topic; give topic (with pattern: prefixed for a prefix)")
		case r.Codec == "":
			bad("codec", " has no codec; want none, gzip, snappy, lz4 or zstd")
		case err != nil:
			bad("codec", ".codec: %v", err)
		case r.Level != 0 && levelRange[c] == [2]int{}:
			bad("level", ".level: %s has no levels; leave level out", c)
		case r.Level != 0 && (r.Level < levelRange[c][0] || r.Level > levelRange[c][1]):
			bad("level", ".level %d: %s levels run from %d to %d", r.Level, c, levelRange[c][0], levelRange[c][1])
		default:
			key := r.Pattern + "\x00" + r.Topic
			if r.Pattern == "" {
				key = "literal\x00" + r.Topic
			}
			if j, dup := seen[key]; dup {
				bad("topic", " covers the same topics as compression[%d]; merge them", j)
			} else {
				seen[key] = i
			}
		}
	}
	for i, q := range quotas {
		bad := func(key, format string, args ...any) {
			out = append(out, RuleIssue{"quotas", i, key, fmt.Sprintf("quotas[%d]", i) + fmt.Sprintf(format, args...)})
		}
		if err := quotaPrincipal(q.Principal); err != "" {
			bad("principal", ".principal: %s", err)
			continue
		}
		switch {
		case !validPattern(q.Pattern):
			bad("pattern", ".pattern %q: want literal or prefixed", q.Pattern)
		case q.Pattern != "" && q.Topic == "" && !q.Prefixed():
			bad("pattern", " has a pattern but no topic")
		case q.RequestsPerSecond < 0 || math.IsNaN(q.RequestsPerSecond) || math.IsInf(q.RequestsPerSecond, 0):
			bad("requests_per_second", ".requests_per_second must be a number not below 0")
		case q.ProduceBytesPerSecond == 0 && q.FetchBytesPerSecond == 0 && q.RequestsPerSecond == 0:
			bad("", " sets no rate; give produce_bytes_per_second, fetch_bytes_per_second or requests_per_second")
		case (q.Topic != "" || q.Prefixed()) && q.RequestsPerSecond > 0:
			bad("requests_per_second", ".requests_per_second limits a principal, not a topic; put it in a rule without topic")
		}
	}
	return out
}

// quotaPrincipal checks a quota's principal: "*", "Type:*" or "Type:name".
func quotaPrincipal(p string) string {
	if p == "" {
		return "missing; want User:name, User:* or *"
	}
	if p == "*" {
		return ""
	}
	typ, name, ok := strings.Cut(p, ":")
	if !ok || typ == "" || name == "" {
		return fmt.Sprintf("%q: want Type:name (User:alice), Type:* (User:*) or *", p)
	}
	return ""
}

// trafficRules is what the compression: and quotas: sections of a policy
// file hold.
type trafficRules struct {
	compression []CompressionRule
	quotas      []QuotaRule
}

// Compression returns the policy's compression rules, in file order.
func (p *Policy) Compression() []CompressionRule { return p.traffic.compression }

// Quotas returns the policy's quota rules, in file order.
func (p *Policy) Quotas() []QuotaRule { return p.traffic.quotas }

// HasTrafficRules reports whether the policy sets compression or quota
// rules.
func (p *Policy) HasTrafficRules() bool {
	return len(p.traffic.compression) > 0 || len(p.traffic.quotas) > 0
}

// trafficSection parses the compression: or quotas: section at v into t,
// with every problem at its line and column: unknown keys, values of the
// wrong type, and what CheckRules finds.
func (p *parser) trafficSection(section string, k, v *yaml.Node, t *trafficRules) {
	if p.rulesIn != "" {
		p.add(k, "%s: is also set in the config file %s; keep the rules in one file: remove them there "+
			"(the policy file is reloaded on change, the config file is not)", section, p.rulesIn)
		return
	}
	var nodes []map[string]*yaml.Node // per rule: key -> value node
	var entries []*yaml.Node
	var faulty []bool // rules with issues already; not checked again
	p.seq(v, section, func(e *yaml.Node) {
		i := len(entries)
		before := len(p.issues)
		defer func() { faulty = append(faulty, len(p.issues) > before) }()
		entries = append(entries, e)
		nodes = append(nodes, map[string]*yaml.Node{})
		what := fmt.Sprintf("%s[%d]", section, i)
		var cr CompressionRule
		var qr QuotaRule
		p.mapping(e, what, func(key string, _, val *yaml.Node) bool {
			nodes[i][key] = val
			field := what + "." + key
			if section == "compression" {
				switch key {
				case "topic":
					cr.Topic = p.str(val, field)
				case "pattern":
					cr.Pattern = p.str(val, field)
				case "codec":
					cr.Codec = p.str(val, field)
				case "level":
					cr.Level = p.integer(val, field)
				case "min_batch_bytes":
					cr.MinBatchBytes = p.size(val, field)
				default:
					return false
				}
				return true
			}
			switch key {
			case "principal":
				qr.Principal = p.str(val, field)
			case "topic":
				qr.Topic = p.str(val, field)
			case "pattern":
				qr.Pattern = p.str(val, field)
			case "produce_bytes_per_second":
				qr.ProduceBytesPerSecond = p.size(val, field)
			case "fetch_bytes_per_second":
				qr.FetchBytesPerSecond = p.size(val, field)
			case "requests_per_second":
				qr.RequestsPerSecond = p.number(val, field)
			default:
				return false
			}
			return true
		})
		if section == "compression" {
			t.compression = append(t.compression, cr)
		} else {
			t.quotas = append(t.quotas, qr)
		}
	})
	var issues []RuleIssue
	if section == "compression" {
		issues = CheckRules(t.compression, nil)
	} else {
		issues = CheckRules(nil, t.quotas)
	}
	for _, is := range issues {
		if faulty[is.Index] {
			continue
		}
		n := nodes[is.Index][is.Key]
		if n == nil {
			n = entries[is.Index]
		}
		p.add(n, "%s", is.Msg)
	}
}

func (p *parser) integer(n *yaml.Node, what string) int {
	var v int
	if n.Kind != yaml.ScalarNode || n.Decode(&v) != nil {
		p.add(n, "%s: want a whole number", what)
	}
	return v
}

func (p *parser) number(n *yaml.Node, what string) float64 {
	var v float64
	if n.Kind != yaml.ScalarNode || n.Decode(&v) != nil {
		p.add(n, "%s: want a number", what)
	}
	return v
}

func (p *parser) size(n *yaml.Node, what string) Bytes {
	var b Bytes
	if err := b.UnmarshalYAML(n); err != nil {
		p.add(n, "%s: %s", what, err.(*ValueError).Msg)
	}
	return b
}
