package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"serve", "--help"}, {"broker", "-h"}, {"demo", "--help"}, {"version", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), args, &out, &errOut)
			assert.Equal(t, 0, code)
			assert.Contains(t, out.String()+errOut.String(), "Usage:")
		})
	}
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"serve", "--help"}, &out, &errOut))
	for _, f := range []string{"--kafka-listen", "--kafka-upstream", "--advertise-host", "--broker-port-base", "--admin-listen", "--config", "--max-frame-bytes", "--idle-timeout"} {
		assert.Contains(t, errOut.String(), strings.TrimPrefix(f, "-"), "serve --help lists %s", f)
	}
}

func TestUnknownCommandAndFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(context.Background(), []string{"serv"}, &out, &errOut))
	assert.Contains(t, errOut.String(), `unknown command "serv"`)
	errOut.Reset()
	assert.Equal(t, 2, run(context.Background(), []string{"serve", "--kafka-lisen", "x"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "flag provided but not defined: -kafka-lisen")
	errOut.Reset()
	assert.Equal(t, 2, run(context.Background(), nil, &out, &errOut))
	assert.Contains(t, errOut.String(), "Commands:")
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"version"}, &out, io.Discard))
	assert.Regexp(t, `^pipemesh \S+ \(go1\.`, out.String())
}

func TestServeWithoutUpstreamSaysWhatToDo(t *testing.T) {
	var errOut bytes.Buffer
	code := run(context.Background(), []string{"serve", "--kafka-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, io.Discard, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "set --kafka-upstream")
}

func TestServeBadConfigNamesFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	require.NoError(t, os.WriteFile(path, []byte("kafka:\n  upstream: [127.0.0.1:9092]\n  idle_timout: 5m\n"), 0o600))
	var errOut bytes.Buffer
	assert.Equal(t, 1, run(context.Background(), []string{"serve", "--config", path}, io.Discard, &errOut))
	assert.Contains(t, errOut.String(), path+`:3: unknown key "idle_timout"`)
}

func TestResolveFlagsOverrideFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
kafka:
  listen: 127.0.0.1:29092
  upstream: [10.0.0.1:9092]
  broker_port_base: 30000
  max_frame_bytes: 1MiB
  idle_timeout: 1m
admin:
  listen: 127.0.0.1:29464
log:
  level: debug
`), 0o600))
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, s *settings)
	}{
		{"file only", []string{"--config", path}, func(t *testing.T, s *settings) {
			assert.Equal(t, "127.0.0.1:29092", s.proxy.Listen)
			assert.Equal(t, []string{"10.0.0.1:9092"}, s.proxy.Upstreams)
			assert.Equal(t, 30000, s.proxy.BrokerPortBase)
			assert.Equal(t, int32(1<<20), s.proxy.MaxFrameBytes)
			assert.Equal(t, time.Minute, s.proxy.IdleTimeout)
			assert.Equal(t, "127.0.0.1:29464", s.adminListen)
			assert.Equal(t, "debug", s.logLevel)
		}},
		{"flags win", []string{"--config", path, "--kafka-listen", "127.0.0.1:1", "--kafka-upstream", "a:1,b:2", "--idle-timeout", "2s", "--max-frame-bytes", "2MiB", "--log-level", "warn"}, func(t *testing.T, s *settings) {
			assert.Equal(t, "127.0.0.1:1", s.proxy.Listen)
			assert.Equal(t, []string{"a:1", "b:2"}, s.proxy.Upstreams)
			assert.Equal(t, 2*time.Second, s.proxy.IdleTimeout)
			assert.Equal(t, int32(2<<20), s.proxy.MaxFrameBytes)
			assert.Equal(t, "warn", s.logLevel)
			assert.Equal(t, 30000, s.proxy.BrokerPortBase, "unset flags keep the file's value")
		}},
		{"no file", []string{"--kafka-upstream", "x:1", "--kafka-upstream", "y:2"}, func(t *testing.T, s *settings) {
			assert.Equal(t, "127.0.0.1:19092", s.proxy.Listen)
			assert.Equal(t, []string{"x:1", "y:2"}, s.proxy.Upstreams)
			assert.Equal(t, admin.DefaultListen, s.adminListen)
			assert.Equal(t, int32(100<<20), s.proxy.MaxFrameBytes)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			var f serveFlags
			f.register(fs)
			require.NoError(t, fs.Parse(tt.args))
			s, err := f.resolve(fs)
			require.NoError(t, err)
			tt.check(t, s)
		})
	}
}

// TestServeEndToEnd runs serve against a kfake cluster, drives a client
// through it and reads the admin endpoints.
func TestServeEndToEnd(t *testing.T) {
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 3, Topics: []devbroker.Topic{{Name: "e2e", Partitions: 3}}})
	require.NoError(t, err)
	defer cluster.Close()
	s := &settings{adminListen: "127.0.0.1:0"}
	s.proxy = kafkaproxy.Config{Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: cluster.ListenAddrs()}
	ctx, cancel := context.WithCancel(context.Background())
	type addrs struct{ proxy, admin string }
	started := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, s, slog.New(slog.DiscardHandler), func(p *kafkaproxy.Proxy, a *admin.Server) {
			started <- addrs{p.Addr(), a.Addr()}
		})
	}()
	a := <-started
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + a.admin + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/healthz")
	assert.Equal(t, http.StatusOK, code)
	require.Eventually(t, func() bool { c, _ := get("/readyz"); return c == http.StatusOK }, 10*time.Second, 20*time.Millisecond)

	cl, err := kgo.NewClient(kgo.SeedBrokers(a.proxy), kgo.DefaultProduceTopic("e2e"), kgo.ConsumeTopics("e2e"))
	require.NoError(t, err)
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	const n = 50
	for i := range n {
		require.NoError(t, cl.ProduceSync(pctx, kgo.StringRecord(strconv.Itoa(i))).FirstErr())
	}
	seen := map[string]bool{}
	for len(seen) < n {
		fs := cl.PollFetches(pctx)
		require.NoError(t, fs.Err0())
		fs.EachRecord(func(r *kgo.Record) {
			assert.False(t, seen[string(r.Value)], "duplicate %s", r.Value)
			seen[string(r.Value)] = true
		})
	}
	cl.Close()

	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	metric := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
		require.NotNil(t, m, "metric %s in /metrics", name)
		v, err := strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		return v
	}
	assert.GreaterOrEqual(t, metric(`pipemesh_kafka_requests_total{api="Produce"}`), float64(n))
	assert.Greater(t, metric(`pipemesh_kafka_requests_total{api="Fetch"}`), 0.0)
	assert.Greater(t, metric(`pipemesh_kafka_requests_total{api="Metadata"}`), 0.0)
	assert.Greater(t, metric(`pipemesh_kafka_wire_bytes_total{direction="in"}`), float64(n))
	assert.Greater(t, metric(`pipemesh_kafka_wire_bytes_total{direction="out"}`), float64(n))
	assert.Greater(t, metric(`pipemesh_kafka_connections_accepted_total`), 0.0)
	assert.Equal(t, 3.0, metric(`pipemesh_kafka_brokers`))
	assert.Contains(t, body, `pipemesh_kafka_connections{state="open"}`)
	assert.Contains(t, body, "go_goroutines")
	assert.Contains(t, body, "process_cpu_seconds_total")

	cancel()
	require.NoError(t, <-done)
}

func TestDemoRunsPipeline(t *testing.T) {
	var out bytes.Buffer
	err := runDemo(context.Background(), []string{"--duration", "4s", "--status-every", "1s", "--rate", "50",
		"--kafka-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--flight-listen", "127.0.0.1:0"}, &out, io.Discard)
	require.NoError(t, err)
	text := out.String()
	assert.Contains(t, text, "Kafka bootstrap (through the proxy): 127.0.0.1:")
	lines := strings.Split(strings.TrimSpace(text), "\n")
	last := lines[len(lines)-1]
	var produced, consumed, behind, dupes int
	_, err = fmt.Sscanf(last[strings.Index(last, "produced"):], "produced %d orders, billing consumed %d (%d behind, %d duplicates)", &produced, &consumed, &behind, &dupes)
	require.NoError(t, err, last)
	assert.Greater(t, produced, 50, "the producer ran through the proxy")
	assert.Greater(t, consumed, 0, "the group consumed through the proxy")
	assert.Zero(t, dupes)
	assert.Regexp(t, `flight: job "fare-report" ran [1-9]\d* times; last read 200000 rows of "trips" over \d+ endpoints in parallel, wrote 5 regions`, text)
}
