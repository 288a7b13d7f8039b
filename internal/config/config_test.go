package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseValid(t *testing.T) {
	f, err := Parse("mesh.yaml", []byte(`
kafka:
  listen: 127.0.0.1:19092
  upstream: [127.0.0.1:9092, 127.0.0.1:9093]
  advertise_host: proxy.example
  broker_port_base: 20000
  max_frame_bytes: 64MiB
  idle_timeout: 5m
  dial_timeout: 3s
  max_in_flight: 100
  metadata_refresh: 1m
admin:
  listen: 127.0.0.1:9999
log:
  level: debug
  format: json
`))
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:19092", f.Kafka.Listen)
	assert.Equal(t, HostList{"127.0.0.1:9092", "127.0.0.1:9093"}, f.Kafka.Upstream)
	assert.Equal(t, "proxy.example", f.Kafka.AdvertiseHost)
	assert.Equal(t, 20000, f.Kafka.BrokerPortBase)
	assert.Equal(t, Bytes(64<<20), f.Kafka.MaxFrameBytes)
	assert.Equal(t, Duration(5*time.Minute), f.Kafka.IdleTimeout)
	assert.Equal(t, Duration(3*time.Second), f.Kafka.DialTimeout)
	assert.Equal(t, 100, f.Kafka.MaxInFlight)
	assert.Equal(t, Duration(time.Minute), f.Kafka.MetadataRefresh)
	assert.Equal(t, "127.0.0.1:9999", f.Admin.Listen)
	assert.Equal(t, "debug", f.Log.Level)
	assert.Equal(t, "json", f.Log.Format)
}

func TestUpstreamAsString(t *testing.T) {
	f, err := Parse("mesh.yaml", []byte("kafka:\n  upstream: 127.0.0.1:9092, 127.0.0.1:9093\n"))
	require.NoError(t, err)
	assert.Equal(t, HostList{"127.0.0.1:9092", "127.0.0.1:9093"}, f.Kafka.Upstream)
}

func TestParseEmptyFile(t *testing.T) {
	f, err := Parse("empty.yaml", nil)
	require.NoError(t, err)
	assert.Equal(t, File{}, *f)
}

func TestParseErrorsNameFileAndLine(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "kafka:\n  listen: 127.0.0.1:1\n  upstreams: [a:1]\n", `mesh.yaml:3: unknown key "upstreams"`},
		{"unknown section", "kafak:\n  listen: x\n", `mesh.yaml:1: unknown key "kafak"`},
		{"bad duration", "kafka:\n  idle_timeout: ten minutes\n", `mesh.yaml:2: "ten minutes" is not a duration`},
		{"bad size", "kafka:\n  max_frame_bytes: lots\n", `mesh.yaml:2: "lots" is not a size`},
		{"listen not host:port", "kafka:\n  upstream: [a:1]\n  listen: 19092\n", `mesh.yaml:3: kafka.listen "19092" is not host:port`},
		{"upstream not host:port", "kafka:\n\n  upstream:\n    - a:1\n    - broker1\n", `mesh.yaml:5: kafka.upstream entry "broker1" is not host:port`},
		{"upstream string not host:port", "kafka:\n  upstream: a:1,broker1\n", `mesh.yaml:2: kafka.upstream entry "broker1" is not host:port`},
		{"upstream map", "kafka:\n  upstream: {a: 1}\n", `mesh.yaml:2: kafka.upstream: want host:port`},
		{"port base out of range", "kafka:\n  broker_port_base: 70000\n", `mesh.yaml:2: kafka.broker_port_base 70000`},
		{"wrong type", "kafka:\n  max_in_flight: many\n", `mesh.yaml:2: cannot unmarshal`},
		{"log level", "log:\n  format: text\n  level: loud\n", `mesh.yaml:3: log.level "loud"`},
		{"not yaml", "kafka:\n  listen: [\n", `mesh.yaml:2: did not find expected node content`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("mesh.yaml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "1KiB": 1024, "64KiB": 64 << 10, "100MiB": 100 << 20, "1GiB": 1 << 30, "5 MiB": 5 << 20, "10B": 10} {
		got, err := ParseBytes(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "1TB", "MiB", "1.5MiB"} {
		_, err := ParseBytes(in)
		assert.Error(t, err, in)
	}
}
