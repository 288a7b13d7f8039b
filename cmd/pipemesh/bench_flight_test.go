package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/benchmarks"
	"github.com/pipemesh/pipemesh/flightproxy"
	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

func TestBenchFlightRunWritesTableAndJSON(t *testing.T) {
	useBuiltBinary(t)
	jsonPath := filepath.Join(t.TempDir(), "flight.json")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "flight", "--bytes", "8MiB", "--batch-rows", "8192",
		"--batches-per-chunk", "4", "--streams", "2", "--rounds", "1", "--compression", "lz4", "--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	assert.Contains(t, out.String(), "DoGet GB/s")
	assert.Contains(t, out.String(), "proxy CPU-s per GB")
	assert.Contains(t, errOut.String(), "proxied round 1: DoGet", "plain progress lines on a non-terminal")

	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep benchmarks.FlightReport
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Len(t, rep.Rounds, 2)
	for _, rd := range rep.Rounds {
		assert.True(t, rd.Verified, rd.Error)
		assert.Positive(t, rd.GetGBPerSec)
		assert.Positive(t, rd.PutGBPerSec)
	}
	assert.Positive(t, rep.Get.Ratio)
}

func TestBenchFlightWithProxyRecompression(t *testing.T) {
	useBuiltBinary(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "flight", "--bytes", "4MiB", "--batch-rows", "8192",
		"--rounds", "1", "--proxy-compress", "zstd"}, &out, &errOut)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	assert.Contains(t, errOut.String(), "re-encoded by the proxy (zstd), every batch checked value for value")
	assert.Contains(t, out.String(), "the proxy re-encoded proxied DoGet streams with zstd")
}

func TestBenchFlightFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bytes", "10"}, "--bytes 10: want at least 1MiB"},
		{[]string{"--compression", "gzip"}, `--compression "gzip": want none, lz4 or zstd`},
		{[]string{"--direct", "a:1"}, "--direct and --proxy go together"},
		{[]string{"--streams", "0"}, "--streams 0"},
		{[]string{"--proxy-compress", "gzip"}, `--proxy-compress "gzip": want lz4 or zstd`},
		{[]string{"--baseline", "udp"}, `--baseline "udp": want tcp (a plain TCP forwarder) or none`},
		{[]string{"--baseline-buffer", "64KiB"}, "--baseline-buffer sizes the forwarder of --baseline tcp; add --baseline tcp"},
		{[]string{"--baseline", "tcp", "--baseline-buffer", "1GiB"}, `--baseline-buffer "1GiB": want 0 (splice) or a size up to 64MiB`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var errOut bytes.Buffer
			assert.Equal(t, 1, run(context.Background(), append([]string{"bench", "flight"}, tc.args...), io.Discard, &errOut))
			assert.Contains(t, errOut.String(), tc.want)
		})
	}
}

func TestBenchFlightFailsWhenTheSetupCannotStart(t *testing.T) {
	t.Cleanup(func() { executable = os.Executable })
	executable = func() (string, error) { return "/bin/false", nil }
	var errOut bytes.Buffer
	assert.Equal(t, 1, run(context.Background(), []string{"bench", "flight", "--bytes", "1MiB"}, io.Discard, &errOut))
	assert.Contains(t, errOut.String(), "exited")
}

// TestBenchFlightWithTCPBaseline: --baseline tcp runs a third mode through
// 'pipemesh bench tcp-forward', checks its data like the others, and
// reports its GB/s, ratios and CPU in the table and the JSON.
func TestBenchFlightWithTCPBaseline(t *testing.T) {
	useBuiltBinary(t)
	jsonPath := filepath.Join(t.TempDir(), "flight.json")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "flight", "--bytes", "4MiB", "--batch-rows", "8192",
		"--batches-per-chunk", "3", "--streams", "2", "--rounds", "1", "--baseline", "tcp", "--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	assert.Contains(t, errOut.String(), "tcp-forward round 1: DoGet")
	assert.Contains(t, errOut.String(), "tcp-forward round 1: DoPut")
	header := strings.Fields(strings.SplitN(strings.TrimSpace(out.String()), "\n", 2)[0])
	assert.Equal(t, []string{"direct", "tcp-forward", "proxied", "tcp/direct", "proxied/direct", "proxied/tcp"}, header)
	assert.Contains(t, out.String(), "pipemesh bench tcp-forward, splice(2)")

	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep benchmarks.FlightReport
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Len(t, rep.Rounds, 3)
	var modes []benchmarks.Mode
	for _, rd := range rep.Rounds {
		modes = append(modes, rd.Mode)
		assert.True(t, rd.Verified, "%s: %s", rd.Mode, rd.Error)
		assert.Positive(t, rd.GetGBPerSec)
		assert.Positive(t, rd.PutGBPerSec)
		if rd.Mode == benchmarks.Baseline {
			assert.Positive(t, rd.ForwarderCPUPerGB, "the forwarder's CPU is measured")
			assert.Positive(t, rd.CPUSeconds["tcp forwarder"])
			assert.Zero(t, rd.ProxyCPUPerGB)
		}
	}
	assert.Equal(t, []benchmarks.Mode{benchmarks.Direct, benchmarks.Baseline, benchmarks.Proxied}, modes, "alternated in this order")
	require.NotNil(t, rep.Baseline)
	assert.Equal(t, "tcp", rep.Baseline.Kind)
	assert.Zero(t, rep.Baseline.BufferBytes)
	assert.Positive(t, rep.Baseline.GetGBPerSec.Median)
	assert.Positive(t, rep.Baseline.PutGBPerSec.Median)
	assert.Positive(t, rep.Baseline.GetRatio)
	assert.Positive(t, rep.Baseline.GetProxiedRatio)
	assert.Positive(t, rep.Baseline.CPUPerGB.Median)
	assert.Positive(t, rep.Get.Ratio)
}

// TestBenchFlightAgainstRunningServices: --direct may be a 'pipemesh
// flight-server' started with its defaults (64 batches or 64MiB per
// endpoint, not the bench's --batches-per-chunk): the check follows its
// endpoints. --baseline tcp then starts the forwarder in front of --direct,
// here with a user-space buffer.
func TestBenchFlightAgainstRunningServices(t *testing.T) {
	useBuiltBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var srvOut syncBuffer
	srvDone := make(chan int, 1)
	go func() {
		srvDone <- run(ctx, []string{"flight-server", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "warn"}, &srvOut, io.Discard)
	}()
	defer func() { cancel(); <-srvDone }()
	re := regexp.MustCompile(`Flight dataset service at grpc://(\S+),`)
	require.Eventually(t, func() bool { return re.MatchString(srvOut.String()) }, 10*time.Second, 10*time.Millisecond)
	direct := re.FindStringSubmatch(srvOut.String())[1]

	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse([]string{"--flight-listen", "127.0.0.1:0", "--flight-upstream", "grpc://" + direct, "--admin-listen", "127.0.0.1:0"}))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	proxies := make(chan *flightproxy.Proxy, 1)
	s.onFlight = func(p *flightproxy.Proxy) { proxies <- p }
	serveDone := make(chan error, 1)
	go func() {
		serveDone <- serve(ctx, s, slog.New(slog.DiscardHandler), func(*kafkaproxy.Proxy, *admin.Server) {})
	}()
	defer func() { cancel(); <-serveDone }()
	proxy := (<-proxies).Addr()

	jsonPath := filepath.Join(t.TempDir(), "flight.json")
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"bench", "flight", "--bytes", "4MiB", "--batch-rows", "1024", "--streams", "2", "--rounds", "1",
		"--direct", direct, "--proxy", proxy, "--baseline", "tcp", "--baseline-buffer", "16KiB", "--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	assert.Contains(t, out.String(), "a "+strconv.Itoa(16<<10)+"-byte read/write buffer")
	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep benchmarks.FlightReport
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Len(t, rep.Rounds, 3)
	for _, rd := range rep.Rounds {
		assert.True(t, rd.Verified, "%s: %s", rd.Mode, rd.Error)
	}
	require.NotNil(t, rep.Baseline)
	assert.Equal(t, 16<<10, rep.Baseline.BufferBytes)
	assert.Positive(t, rep.Baseline.CPUPerGB.Median, "the forwarder is the bench's own child: its CPU is measured")
}

func TestBenchTCPForwardFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "--upstream is required"},
		{[]string{"--upstream", "127.0.0.1:1", "--buffer", "1GiB"}, 1, `--buffer "1GiB": want 0 (splice) or a size up to 64MiB`},
		{[]string{"--upstream", "127.0.0.1:1", "--listen", "256.0.0.1:1"}, 1, "listen on 256.0.0.1:1"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var errOut bytes.Buffer
			assert.Equal(t, tc.code, run(context.Background(), append([]string{"bench", "tcp-forward"}, tc.args...), io.Discard, &errOut))
			assert.Contains(t, errOut.String(), tc.want)
		})
	}
}
