package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/flightproxy"
	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// TestFlightServeEndToEnd runs 'pipemesh flight-server' and 'pipemesh serve'
// with only a Flight upstream, then the demo's Spark-style job through the
// proxy, and checks its result and the pipemesh_flight_* metrics.
func TestFlightServeEndToEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	srvDone := make(chan int, 1)
	go func() {
		srvDone <- run(ctx, []string{"flight-server", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--batches-per-chunk", "3", "--log-level", "warn"}, &out, io.Discard)
	}()
	re := regexp.MustCompile(`Flight dataset service at (grpc://\S+),`)
	require.Eventually(t, func() bool { return re.MatchString(out.String()) }, 10*time.Second, 10*time.Millisecond)
	upstream := re.FindStringSubmatch(out.String())[1]

	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse([]string{"--flight-listen", "127.0.0.1:0", "--flight-upstream", upstream, "--admin-listen", "127.0.0.1:0"}))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	require.True(t, s.noKafka, "no Kafka upstream: the Kafka proxy is off")
	proxies := make(chan *flightproxy.Proxy, 1)
	s.onFlight = func(p *flightproxy.Proxy) { proxies <- p }
	admins := make(chan string, 1)
	serveDone := make(chan error, 1)
	go func() {
		serveDone <- serve(ctx, s, slog.New(slog.DiscardHandler), func(_ *kafkaproxy.Proxy, a *admin.Server) { admins <- a.Addr() })
	}()
	p, adm := <-proxies, <-admins

	c, err := dialFlight(p.Addr())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, putTrips(ctx, c))
	res, err := runFareReport(ctx, c)
	require.NoError(t, err)
	assert.Equal(t, int64(demoTripRows), res.rows)
	assert.Equal(t, expectedFareTotal(), res.total())
	assert.Equal(t, (demoTripRows/demoTripsBatch+2)/3, res.endpoints, "one endpoint per chunk of 3 batches")

	resp, err := http.Get("http://" + adm + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), `pipemesh_flight_rows_total{dataset="trips",direction="read",principal="User:ANONYMOUS"} 200000`)
	assert.Contains(t, string(body), `pipemesh_flight_rows_total{dataset="trips",direction="write",principal="User:ANONYMOUS"} 200000`)

	cancel()
	require.NoError(t, <-serveDone)
	assert.Equal(t, 0, <-srvDone)
}

func TestFlightCompressionRules(t *testing.T) {
	r, err := compressionRules(map[string]string{"*": "lz4", "reports/": "zstd", "reports/raw/": "none"})
	require.NoError(t, err)
	for dataset, want := range map[string]flightproxy.Compression{
		"trips": flightproxy.LZ4Frame, "reports/q1": flightproxy.ZSTD, "reports/raw/x": flightproxy.Passthrough,
	} {
		assert.Equal(t, want, r.FlightCompression(dataset), dataset)
	}
	_, err = compressionRules(map[string]string{"x": "snappy"})
	assert.ErrorContains(t, err, `compression "snappy": want none, lz4 or zstd`)
}

func TestFlightFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--flight-listen", "127.0.0.1:1"}, "no Flight upstream"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-max-message-bytes", "10"}, "want 1MiB to 2GiB"},
		{nil, "no upstream Kafka cluster"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-ticket-key-file", "/nonexistent/key"}, "--flight-ticket-key-file"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-compress", "lz4"}, "want PREFIX=CODEC"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-tls-client-ca", "ca.pem"}, "mTLS runs over TLS"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-tls-cert", "c.pem"}, "go together"},
		{[]string{"--flight-upstream", "grpc://127.0.0.1:1", "--flight-tls-cert", "missing.pem", "--flight-tls-key", "missing.key"}, "missing.pem"},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		var f serveFlags
		f.register(fs)
		require.NoError(t, fs.Parse(tc.args))
		_, err := f.resolve(fs)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
}
