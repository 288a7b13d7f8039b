package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/protocol"
)

// TestResolveRules: the compression, quotas and limits sections of the
// config file reach the proxy config as written.
func TestResolveRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
kafka:
  upstream: [127.0.0.1:9092]
compression:
  - {topic: "logs.", pattern: prefixed, codec: zstd, level: 3, min_batch_bytes: 1024}
  - {topic: orders, codec: lz4}
quotas:
  - {principal: "User:*", produce_bytes_per_second: 10485760, fetch_bytes_per_second: 20971520, requests_per_second: 100}
  - {principal: "User:batch-loader", topic: "logs.", pattern: prefixed, produce_bytes_per_second: 2097152}
limits:
  memory_bytes: 536870912
  max_inflight_bytes_per_connection: 16777216
`), 0o600))
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse([]string{"--config", path}))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	assert.Equal(t, []kafkaproxy.CompressionRule{
		{Topic: "logs.", Prefixed: true, Codec: protocol.CodecZstd, Level: 3, MinBatchBytes: 1024},
		{Topic: "orders", Codec: protocol.CodecLZ4},
	}, s.proxy.Compression)
	assert.Equal(t, []kafkaproxy.QuotaRule{
		{Principal: "User:*", ProduceBytesPerSecond: 10 << 20, FetchBytesPerSecond: 20 << 20, RequestsPerSecond: 100},
		{Principal: "User:batch-loader", Topic: "logs.", Prefixed: true, ProduceBytesPerSecond: 2 << 20},
	}, s.proxy.Quotas)
	assert.Equal(t, kafkaproxy.Limits{MemoryBytes: 512 << 20, MaxInflightBytesPerConnection: 16 << 20}, s.proxy.Limits)
}
