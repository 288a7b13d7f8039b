package benchmarks

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	require.NoError(t, c.Validate())
}

func TestConfigValidationSpeaksInFlags(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"direct without proxy", func(c *Config) { c.Direct = "127.0.0.1:9092" }, "--direct and --proxy go together"},
		{"unknown target", func(c *Config) { c.Target = "redpanda" }, `--target "redpanda": want sink or kfake`},
		{"unknown compression", func(c *Config) { c.Compression = "brotli" }, "--compression \"brotli\""},
		{"acks 0", func(c *Config) { c.Acks = "0" }, "--acks 0: no acknowledgement"},
		{"record size 0", func(c *Config) { c.RecordSize = 0 }, "--record-size 0"},
		{"no records nor duration", func(c *Config) { c.Records, c.Duration = 0, 0 }, "give --records or --duration"},
		{"zero rounds", func(c *Config) { c.Rounds = 0 }, "--rounds must be at least 1"},
		{"more consumers than partitions", func(c *Config) { c.Consumers = 7 }, "--consumers 7 is more than --partitions 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	c := DefaultConfig()
	c.Records, c.Duration = 0, time.Second
	assert.NoError(t, c.Validate(), "a duration instead of a count")
}

func TestParseSweep(t *testing.T) {
	got, err := ParseSweep("record-size=100,1KiB,16KiB,256KiB")
	require.NoError(t, err)
	assert.Equal(t, []int{100, 1024, 16384, 262144}, got)
	_, err = ParseSweep("partitions=1,2")
	assert.ErrorContains(t, err, "want record-size=SIZE,SIZE,...")
	_, err = ParseSweep("record-size=1KB")
	assert.ErrorContains(t, err, "--sweep: ")
}

func TestRoundsAreCappedSoTheUpstreamKeepsEveryRecord(t *testing.T) {
	assert.Equal(t, int64(maxRoundBytes/(1024+keySize)), roundRecordLimit(1024))
	assert.Equal(t, int64(1), roundRecordLimit(1<<30), "at least one record")

	c := DefaultConfig()
	c.Records, c.RecordSize = 200_000, 1024
	assert.False(t, mayExceed(c, roundRecordLimit(1024)), "200,000 x 1 KiB fits")
	assert.True(t, mayExceed(c, roundRecordLimit(100<<10)), "200,000 x 100 KiB does not")
	c.Records, c.Duration = 0, 10*time.Second
	assert.True(t, mayExceed(c, roundRecordLimit(1024)), "as fast as possible for 10s may not fit")
	c.Rate = 2000
	assert.False(t, mayExceed(c, roundRecordLimit(1024)), "2,000/s for 10s fits")
}
