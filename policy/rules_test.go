package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rulesSketch is the rules sketch of issue 5, verbatim but for limits:
// (process sizing, which stays in the config file).
const rulesSketch = `
allow_if_no_acl: true
compression:
  - {topic: "logs.", pattern: prefixed, codec: zstd, level: 3, min_batch_bytes: 1024}
quotas:
  - {principal: "User:*", produce_bytes_per_second: 10485760, fetch_bytes_per_second: 20971520}
  - {principal: "User:batch-loader", topic: "logs.", pattern: prefixed, produce_bytes_per_second: 2097152}
`

func TestParseTrafficRules(t *testing.T) {
	p := mustParse(t, rulesSketch)
	assert.Equal(t, []CompressionRule{{Topic: "logs.", Pattern: "prefixed", Codec: "zstd", Level: 3, MinBatchBytes: 1024}}, p.Compression())
	assert.Equal(t, []QuotaRule{
		{Principal: "User:*", ProduceBytesPerSecond: 10485760, FetchBytesPerSecond: 20971520},
		{Principal: "User:batch-loader", Topic: "logs.", Pattern: "prefixed", ProduceBytesPerSecond: 2097152},
	}, p.Quotas())
	assert.True(t, p.HasTrafficRules())
	// With no acls and allow_if_no_acl, every request is let through.
	assert.Equal(t, Allowed, p.Decide("User:x", OpWrite, ResTopic, "logs.a").Result)

	p = mustParse(t, `
acls:
  - {principal: "User:a", operation: WRITE, resource: topic, name: t, permission: allow}
compression:
  - topic: orders
    codec: lz4
quotas:
  - principal: User:alice
    produce_bytes_per_second: 2MiB
    requests_per_second: 50.5
`)
	assert.Equal(t, []CompressionRule{{Topic: "orders", Codec: "lz4"}}, p.Compression())
	assert.Equal(t, []QuotaRule{{Principal: "User:alice", ProduceBytesPerSecond: 2 << 20, RequestsPerSecond: 50.5}}, p.Quotas())

	p = mustParse(t, "acls:\n  - {principal: \"User:a\", operation: WRITE, resource: topic, name: t, permission: allow}\n")
	assert.False(t, p.HasTrafficRules())
}

func TestParseTrafficRuleErrors(t *testing.T) {
	const acl = "acls:\n  - {principal: \"User:a\", operation: READ, resource: topic, name: t, permission: allow}\n"
	tests := []struct {
		name, text string
		want       []string
	}{
		{"unknown codec", acl + "compression:\n  - topic: a\n    codec: brotli\n",
			[]string{`policy.yaml:5:12: compression[0].codec: unknown compression codec "brotli"`}},
		{"no codec", acl + "compression:\n  - topic: a\n", []string{`policy.yaml:4:5: compression[0] has no codec`}},
		{"no topic", acl + "compression:\n  - {codec: zstd}\n", []string{`policy.yaml:4:5: compression[0] names no topic`}},
		{"bad pattern", acl + "compression:\n  - {topic: a, codec: zstd, pattern: glob}\n",
			[]string{`policy.yaml:4:38: compression[0].pattern "glob": want literal or prefixed`}},
		{"level", acl + "compression:\n  - {topic: a, codec: gzip, level: 12}\n",
			[]string{`policy.yaml:4:36: compression[0].level 12: gzip levels run from 1 to 9`}},
		{"level not a number", acl + "compression:\n  - {topic: a, codec: gzip, level: high}\n",
			[]string{`policy.yaml:4:36: compression[0].level: want a whole number`}},
		{"snappy has no level", acl + "compression:\n  - {topic: a, codec: snappy, level: 2}\n",
			[]string{`policy.yaml:4:38: compression[0].level: snappy has no levels`}},
		{"duplicate", acl + "compression:\n  - {topic: a, codec: zstd}\n  - {topic: a, pattern: literal, codec: lz4}\n",
			[]string{`policy.yaml:5:13: compression[1] covers the same topics as compression[0]`}},
		{"unknown key", acl + "compression:\n  - {topic: a, codec: zstd, compression_level: 3}\n",
			[]string{`policy.yaml:4:29: compression[0]: unknown key "compression_level"`}},
		{"bad size", acl + "compression:\n  - {topic: a, codec: zstd, min_batch_bytes: -1}\n",
			[]string{`policy.yaml:4:46: compression[0].min_batch_bytes: "-1" is not a size`}},
		{"not a list", acl + "quotas: {principal: User:a}\n", []string{`policy.yaml:3:9: quotas: want a list`}},
		{"bad principal", acl + "quotas:\n  - principal: alice\n    produce_bytes_per_second: 1\n",
			[]string{`policy.yaml:4:16: quotas[0].principal: "alice": want Type:name`}},
		{"no principal", acl + "quotas:\n  - produce_bytes_per_second: 1\n", []string{`policy.yaml:4:5: quotas[0].principal: missing`}},
		{"no rate", acl + "quotas:\n  - principal: User:*\n", []string{`policy.yaml:4:5: quotas[0] sets no rate`}},
		{"request rate on a topic", acl + "quotas:\n  - {principal: User:*, topic: t, requests_per_second: 5}\n",
			[]string{`policy.yaml:4:56: quotas[0].requests_per_second limits a principal, not a topic`}},
		{"infinite request rate", acl + "quotas:\n  - {principal: User:*, requests_per_second: .inf}\n",
			[]string{`policy.yaml:4:46: quotas[0].requests_per_second must be a number not below 0`}},
		{"bad rate", acl + "quotas:\n  - {principal: User:*, fetch_bytes_per_second: fast}\n",
			[]string{`policy.yaml:4:49: quotas[0].fetch_bytes_per_second: "fast" is not a size`}},
		{"several", acl + "compression:\n  - {topic: a, codec: brotli}\nquotas:\n  - {principal: User, fetch_bytes_per_second: 1}\n  - {principal: User:*, fetch_bytes_per_second: 1, colour: red}\n",
			[]string{
				`policy.yaml:4:23: compression[0].codec: unknown compression codec "brotli"`,
				`policy.yaml:6:17: quotas[0].principal: "User": want Type:name`,
				`policy.yaml:7:52: quotas[1]: unknown key "colour"`,
			}},
		{"only rules, no acls", "compression:\n  - {topic: a, codec: zstd}\n",
			[]string{`policy.yaml:1:1: the policy has no acls and no principals, so every request would be denied`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("policy.yaml", []byte(tt.text), Options{Getenv: testEnv})
			require.Error(t, err)
			var pe *Error
			require.True(t, errors.As(err, &pe), "want *Error, got %T: %v", err, err)
			lines := strings.Split(err.Error(), "\n")
			require.Len(t, lines, len(tt.want), "issues:\n%s", err)
			for i, w := range tt.want {
				assert.True(t, strings.HasPrefix(lines[i], w), "issue %d:\n got %s\nwant %s...", i, lines[i], w)
			}
		})
	}
}

func TestParseTrafficRulesSetInConfigFile(t *testing.T) {
	_, err := Parse("policy.yaml", []byte(rulesSketch), Options{RulesIn: "/etc/pipemesh.yaml"})
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 2)
	assert.True(t, strings.HasPrefix(lines[0], "policy.yaml:3:1: compression: is also set in the config file /etc/pipemesh.yaml; keep the rules in one file"), lines[0])
	assert.True(t, strings.HasPrefix(lines[1], "policy.yaml:5:1: quotas: is also set in the config file /etc/pipemesh.yaml"), lines[1])
	// A policy without those sections is fine alongside such a config file.
	_, err = Parse("policy.yaml", []byte("allow_if_no_acl: true\n"), Options{RulesIn: "/etc/pipemesh.yaml"})
	require.NoError(t, err)
}

// FuzzParseTrafficRules feeds the parser policy files around the rule
// sections; the seeds run as ordinary tests.
func FuzzParseTrafficRules(f *testing.F) {
	f.Add([]byte(rulesSketch))
	f.Add([]byte("allow_if_no_acl: true\ncompression: [{topic: a, codec: zstd, level: 99}, {codec: x}, 3]\n"))
	f.Add([]byte("allow_if_no_acl: true\nquotas: [{principal: User:*, produce_bytes_per_second: 9999999999GiB, requests_per_second: .inf}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		p, err := Parse("fuzz.yaml", data, Options{Getenv: func(string) (string, bool) { return "x", true }})
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) && len(pe.Issues) == 0 {
				t.Fatal("an *Error with no issues")
			}
			return
		}
		// What parsed passes the shared checks.
		require.Empty(t, CheckRules(p.Compression(), p.Quotas()))
	})
}
