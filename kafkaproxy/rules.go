package kafkaproxy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/pipemesh/pipemesh/policy"
	"github.com/pipemesh/pipemesh/protocol"
)

// CompressionRule asks the proxy to recompress Produce record batches for
// the topics it names. Topics are matched like Kafka ACL resources: the
// literal name, or every name starting with Topic when Prefixed. A literal
// match wins over a prefix, and a longer prefix over a shorter one.
type CompressionRule struct {
	Topic    string
	Prefixed bool
	// Codec is what batches are rewritten to; batches already in it pass.
	Codec protocol.Codec
	// Level is the codec's level as Kafka's compression.<codec>.level
	// takes it; 0 is the codec's default.
	Level int
	// MinBatchBytes leaves smaller batches (whole, header included) as
	// they are: rewriting a tiny batch costs more than it saves.
	MinBatchBytes int
}

// QuotaRule limits what principals matching Principal may do, per
// principal (each matching principal has its own allowance, as Kafka's
// default quotas do). With a Topic, it limits only bytes to or from the
// matching topics (literal or Prefixed), all of them together. Zero rates
// are unlimited. Enforced as Kafka brokers do (KIP-219): responses carry
// throttle_time_ms and the proxy stops reading from the connection for that
// long.
type QuotaRule struct {
	// Principal is "User:name", "User:*" (every user) or "*".
	Principal string
	Topic     string
	Prefixed  bool

	ProduceBytesPerSecond int64
	FetchBytesPerSecond   int64
	// RequestsPerSecond counts every request but ApiVersions and the SASL
	// handshake. Only principal-wide rules (no Topic) may set it.
	RequestsPerSecond float64
}

// Limits bound the proxy's memory.
type Limits struct {
	// MemoryBytes is the process-wide budget for frames the proxy holds
	// whole (to rewrite or recompress them) and the buffers that
	// recompression uses. Over it, connections stop being read until
	// memory is given back. Default: a quarter of the machine's (or
	// cgroup's) memory, between 64 MiB and 4 GiB.
	MemoryBytes int64
	// MaxInflightBytesPerConnection bounds the request bytes one
	// connection may have sent on to the broker without an answer yet;
	// past it the proxy reads no more from that client until answers
	// come back. Default 16 MiB. One request is always let through, however
	// large, so that a frame above the cap cannot wedge the connection.
	MaxInflightBytesPerConnection int64
}

// Default Limits.
const (
	DefaultMaxInflightBytesPerConnection = 16 << 20
	minDefaultMemoryBytes                = 64 << 20
	maxDefaultMemoryBytes                = 4 << 30
)

// topicMatcher finds the most specific rule for a topic: a literal match,
// or else the longest matching prefix. Lookups do not allocate.
type topicMatcher[R any] struct {
	literal  map[string]*R
	prefixes []prefixRule[R] // longest first
}

type prefixRule[R any] struct {
	prefix []byte
	rule   *R
}

func (m *topicMatcher[R]) add(topic string, prefixed bool, r *R) {
	if !prefixed {
		if m.literal == nil {
			m.literal = make(map[string]*R)
		}
		m.literal[topic] = r
		return
	}
	m.prefixes = append(m.prefixes, prefixRule[R]{prefix: []byte(topic), rule: r})
	slices.SortStableFunc(m.prefixes, func(a, b prefixRule[R]) int { return len(b.prefix) - len(a.prefix) })
}

func (m *topicMatcher[R]) match(topic []byte) *R {
	if r, ok := m.literal[string(topic)]; ok {
		return r
	}
	for _, p := range m.prefixes {
		if bytes.HasPrefix(topic, p.prefix) {
			return p.rule
		}
	}
	return nil
}

func (m *topicMatcher[R]) matchString(topic string) *R {
	if r, ok := m.literal[topic]; ok {
		return r
	}
	for _, p := range m.prefixes {
		if len(topic) >= len(p.prefix) && topic[:len(p.prefix)] == string(p.prefix) {
			return p.rule
		}
	}
	return nil
}

func (m *topicMatcher[R]) empty() bool { return len(m.literal) == 0 && len(m.prefixes) == 0 }

// validateRules checks rules given in code; the config file's own checks
// name the file and line first.
func validateRules(comp []CompressionRule, quotas []QuotaRule, lim Limits) error {
	seen := map[string]bool{}
	for i, r := range comp {
		if r.Topic == "" && !r.Prefixed {
			return fmt.Errorf("kafkaproxy: compression rule %d names no topic (a prefixed rule with topic \"\" matches all)", i+1)
		}
		if r.Codec < protocol.CodecNone || r.Codec > protocol.CodecZstd {
			return fmt.Errorf("kafkaproxy: compression rule %d: %v is not a codec", i+1, r.Codec)
		}
		if r.MinBatchBytes < 0 {
			return fmt.Errorf("kafkaproxy: compression rule %d: min_batch_bytes must not be negative", i+1)
		}
		key := fmt.Sprint(r.Prefixed, r.Topic)
		if seen[key] {
			return fmt.Errorf("kafkaproxy: compression rule %d: a rule for topic %q (prefixed=%v) is already given", i+1, r.Topic, r.Prefixed)
		}
		seen[key] = true
	}
	for i, q := range quotas {
		if err := validPrincipal(q.Principal); err != nil {
			return fmt.Errorf("kafkaproxy: quota rule %d: %w", i+1, err)
		}
		if q.ProduceBytesPerSecond < 0 || q.FetchBytesPerSecond < 0 || q.RequestsPerSecond < 0 {
			return fmt.Errorf("kafkaproxy: quota rule %d: rates must not be negative (0 is unlimited)", i+1)
		}
		if (q.Topic != "" || q.Prefixed) && q.RequestsPerSecond > 0 {
			return fmt.Errorf("kafkaproxy: quota rule %d: requests_per_second applies to a principal, not to a topic", i+1)
		}
	}
	if lim.MemoryBytes < 0 || lim.MaxInflightBytesPerConnection < 0 {
		return fmt.Errorf("kafkaproxy: limits must not be negative (0 takes the default)")
	}
	return nil
}

// validPrincipal accepts "*", "Type:*" and "Type:name".
func validPrincipal(p string) error {
	if p == "*" {
		return nil
	}
	typ, name, ok := strings.Cut(p, ":")
	if !ok || typ == "" || name == "" {
		return fmt.Errorf("principal %q: want Type:name (User:alice), Type:* (User:*) or *", p)
	}
	return nil
}

// principalMatch ranks how specifically pattern names principal: 0 no
// match, 1 "*", 2 "Type:*", 3 the literal principal.
func principalMatch(pattern, principal string) int {
	switch {
	case pattern == principal:
		return 3
	case pattern == "*":
		return 1
	case strings.HasSuffix(pattern, ":*") && strings.HasPrefix(principal, pattern[:len(pattern)-1]):
		return 2
	}
	return 0
}

// FileRules converts the compression: and quotas: sections as the policy
// file (and the config file) hold them, checked by policy.CheckRules, into
// the proxy's rules.
func FileRules(comp []policy.CompressionRule, quotas []policy.QuotaRule) ([]CompressionRule, []QuotaRule, error) {
	var cs []CompressionRule
	for i, r := range comp {
		codec, err := protocol.ParseCodec(r.Codec)
		if err != nil {
			return nil, nil, fmt.Errorf("compression[%d]: %w", i, err)
		}
		cs = append(cs, CompressionRule{
			Topic: r.Topic, Prefixed: r.Prefixed(), Codec: codec, Level: r.Level, MinBatchBytes: int(r.MinBatchBytes),
		})
	}
	var qs []QuotaRule
	for _, q := range quotas {
		qs = append(qs, QuotaRule{
			Principal: q.Principal, Topic: q.Topic, Prefixed: q.Prefixed(),
			ProduceBytesPerSecond: int64(q.ProduceBytesPerSecond), FetchBytesPerSecond: int64(q.FetchBytesPerSecond),
			RequestsPerSecond: q.RequestsPerSecond,
		})
	}
	return cs, qs, nil
}
