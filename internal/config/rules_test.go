package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// issueSketch is the rules sketch from the issue, verbatim: it must parse
// as it is, since it moves into the policy file unchanged.
const issueSketch = `
compression:
  - {topic: "logs.", pattern: prefixed, codec: zstd, level: 3, min_batch_bytes: 1024}
quotas:
  - {principal: "User:*", produce_bytes_per_second: 10485760, fetch_bytes_per_second: 20971520}
  - {principal: "User:batch-loader", topic: "logs.", pattern: prefixed, produce_bytes_per_second: 2097152}
limits:
  memory_bytes: 536870912
  max_inflight_bytes_per_connection: 16777216
`

func TestParseRulesSketch(t *testing.T) {
	f, err := Parse("mesh.yaml", []byte(issueSketch))
	require.NoError(t, err)
	assert.Equal(t, []CompressionRule{{Topic: "logs.", Pattern: "prefixed", Codec: "zstd", Level: 3, MinBatchBytes: 1024}}, f.Compression)
	assert.True(t, f.Compression[0].Prefixed())
	assert.Equal(t, []QuotaRule{
		{Principal: "User:*", ProduceBytesPerSecond: 10485760, FetchBytesPerSecond: 20971520},
		{Principal: "User:batch-loader", Topic: "logs.", Pattern: "prefixed", ProduceBytesPerSecond: 2097152},
	}, f.Quotas)
	assert.Equal(t, Limits{MemoryBytes: 512 << 20, MaxInflightBytesPerConnection: 16 << 20}, f.Limits)
}

func TestParseRulesBlockStyleAndSizes(t *testing.T) {
	f, err := Parse("mesh.yaml", []byte(`
compression:
  - topic: orders
    codec: lz4
quotas:
  - principal: User:alice
    produce_bytes_per_second: 2MiB
    requests_per_second: 50.5
limits:
  memory_bytes: 1GiB
`))
	require.NoError(t, err)
	assert.Equal(t, CompressionRule{Topic: "orders", Codec: "lz4"}, f.Compression[0])
	assert.False(t, f.Compression[0].Prefixed())
	assert.Equal(t, QuotaRule{Principal: "User:alice", ProduceBytesPerSecond: 2 << 20, RequestsPerSecond: 50.5}, f.Quotas[0])
	assert.Equal(t, Bytes(1<<30), f.Limits.MemoryBytes)
}

func TestParseRulesErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown codec", "compression:\n  - topic: a\n    codec: brotli\n", `mesh.yaml:3: compression[0].codec: unknown compression codec "brotli"`},
		{"no codec", "compression:\n  - topic: a\n", `mesh.yaml:2: compression[0] has no codec`},
		{"no topic", "compression:\n  - {codec: zstd}\n", `mesh.yaml:2: compression[0] names no topic`},
		{"bad pattern", "compression:\n  - topic: a\n    codec: zstd\n    pattern: glob\n", `mesh.yaml:4: compression[0].pattern "glob"`},
		{"level out of range", "compression:\n  - topic: a\n    codec: gzip\n    level: 12\n", `mesh.yaml:4: compression[0].level 12: gzip levels run from 1 to 9`},
		{"snappy has no level", "compression:\n  - topic: a\n    codec: snappy\n    level: 2\n", `mesh.yaml:4: compression[0].level: snappy has no levels`},
		{"duplicate", "compression:\n  - {topic: a, codec: zstd}\n  - {topic: a, pattern: literal, codec: lz4}\n", `mesh.yaml:3: compression[1] covers the same topics as compression[0]`},
		{"unknown key in a rule", "compression:\n  - topic: a\n    codec: zstd\n    compression_level: 3\n", `mesh.yaml:4: unknown key "compression_level"`},
		{"negative size", "compression:\n  - {topic: a, codec: zstd, min_batch_bytes: -1}\n", `mesh.yaml:2: "-1" is not a size`},
		{"bad principal", "quotas:\n  - principal: alice\n    produce_bytes_per_second: 1\n", `mesh.yaml:2: quotas[0].principal: "alice": want Type:name`},
		{"no principal", "quotas:\n  - produce_bytes_per_second: 1\n", `mesh.yaml:2: quotas[0].principal: missing`},
		{"no rate", "quotas:\n  - principal: User:*\n", `mesh.yaml:2: quotas[0] sets no rate`},
		{"request rate on a topic", "quotas:\n  - principal: User:*\n    topic: t\n    requests_per_second: 5\n", `mesh.yaml:4: quotas[0].requests_per_second limits a principal, not a topic`},
		{"bad rate", "quotas:\n  - principal: User:*\n    fetch_bytes_per_second: fast\n", `mesh.yaml:3: "fast" is not a size`},
		{"second rule", "quotas:\n  - {principal: User:*, fetch_bytes_per_second: 1}\n  - {principal: User, fetch_bytes_per_second: 1}\n", `mesh.yaml:3: quotas[1].principal`},
		{"tiny budget", "limits:\n  memory_bytes: 1KiB\n", `mesh.yaml:2: limits.memory_bytes 1024 is below 1MiB`},
		{"unknown limit", "limits:\n  memory: 1GiB\n", `mesh.yaml:2: unknown key "memory"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("mesh.yaml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}
