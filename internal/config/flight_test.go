package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFlightSection(t *testing.T) {
	f, err := Parse("p.yaml", []byte(`
flight:
  listen: 127.0.0.1:18815
  advertise: grpc://flight.example.com:443
  max_message_bytes: 64MiB
  upstreams:
    - name: lake
      url: grpc://127.0.0.1:8815
    - name: sales
      url: grpc+tls://sales.internal:8815
      path_prefix: sales
`))
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:18815", f.Flight.Listen)
	assert.Equal(t, Bytes(64<<20), f.Flight.MaxMessageBytes)
	assert.Equal(t, []FlightUpstream{
		{Name: "lake", URL: "grpc://127.0.0.1:8815"},
		{Name: "sales", URL: "grpc+tls://sales.internal:8815", PathPrefix: "sales"},
	}, f.Flight.Upstreams)

	for _, tc := range []struct{ yaml, want string }{
		{"flight:\n  upstreams:\n    - name: x\n", "p.yaml:3: flight.upstreams entry has no url"},
		{"flight:\n  upstreams:\n    - url: http://x:1\n", "p.yaml:3: flight.upstreams url \"http://x:1\""},
		{"flight:\n  upstream: grpc://x:1\n", "upstream"},
	} {
		_, err := Parse("p.yaml", []byte(tc.yaml))
		require.Error(t, err, tc.yaml)
		assert.Contains(t, err.Error(), tc.want)
	}
}
