package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/benchmarks"
	"github.com/pipemesh/pipemesh/internal/devbroker"
)

var (
	benchBuildOnce sync.Once
	benchBinDir    string
	benchBin       string
	benchBuildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchBinDir != "" {
		os.RemoveAll(benchBinDir)
	}
	os.Exit(code)
}

// useBuiltBinary points the bench command at a pipemesh binary built from
// this tree (the test binary cannot run `broker` or `serve`).
func useBuiltBinary(t *testing.T) {
	t.Helper()
	benchBuildOnce.Do(func() {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			benchBuildErr = err
			return
		}
		if benchBinDir, err = os.MkdirTemp("", "pipemesh-cmd-test-"); err != nil {
			benchBuildErr = err
			return
		}
		benchBin = filepath.Join(benchBinDir, "pipemesh")
		cmd := exec.Command("go", "build", "-o", benchBin, "./cmd/pipemesh")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := cmd.CombinedOutput(); err != nil {
			benchBuildErr = &benchBuildFailure{err, string(out)}
		}
	})
	require.NoError(t, benchBuildErr, "building the pipemesh binary")
	t.Cleanup(func() { executable = os.Executable })
	executable = func() (string, error) { return benchBin, nil }
}

type benchBuildFailure struct {
	err error
	out string
}

func (e *benchBuildFailure) Error() string { return e.err.Error() + "\n" + e.out }

func TestBenchListsBenchmarks(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(context.Background(), []string{"bench"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "kafka ")
	assert.Contains(t, errOut.String(), "Usage: pipemesh bench <benchmark>")

	out.Reset()
	assert.Equal(t, 0, run(context.Background(), []string{"bench", "--help"}, &out, &errOut))
	assert.Contains(t, out.String(), "kafka ")

	errOut.Reset()
	assert.Equal(t, 2, run(context.Background(), []string{"bench", "nosuch"}, &out, &errOut))
	assert.Contains(t, errOut.String(), `unknown benchmark "nosuch"`)

	var usage bytes.Buffer
	run(context.Background(), nil, io.Discard, &usage)
	assert.Contains(t, usage.String(), "bench ", "pipemesh's own usage lists bench")
}

func TestBenchKafkaHelpExplainsTheMeasurement(t *testing.T) {
	var errOut bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"bench", "kafka", "--help"}, io.Discard, &errOut))
	help := errOut.String()
	for _, want := range []string{"Usage: pipemesh bench kafka", "A B A B", "median", "ratio", "spread",
		"checksum", "exits non-zero", "Examples:", "--target sink --record-size 10KiB"} {
		assert.Contains(t, help, want)
	}
	for _, f := range []string{"direct", "proxy", "proxy-pid", "target", "record-size", "records", "duration",
		"partitions", "producers", "consumers", "compression", "acks", "linger", "rate", "rounds", "sweep", "json", "report"} {
		assert.Contains(t, help, "  -"+f+" ", "help lists --%s", f)
	}
}

func TestBenchKafkaFlags(t *testing.T) {
	parse := func(args ...string) (benchmarks.Config, error) {
		fs := flag.NewFlagSet("bench kafka", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var f benchFlags
		f.register(fs)
		require.NoError(t, fs.Parse(args))
		return f.resolve(fs)
	}
	c, err := parse()
	require.NoError(t, err)
	assert.Equal(t, benchmarks.DefaultConfig(), c, "no flags: the standard workload")

	c, err = parse("--record-size", "64KiB", "--duration", "10s", "--rate", "2000", "--acks", "1",
		"--compression", "zstd", "--linger", "5ms", "--partitions", "12", "--producers", "2", "--consumers", "3", "--rounds", "5")
	require.NoError(t, err)
	assert.Equal(t, 64<<10, c.RecordSize)
	assert.Equal(t, 10*time.Second, c.Duration)
	assert.Zero(t, c.Records, "a duration replaces the default count")
	assert.Equal(t, 2000, c.Rate)
	assert.Equal(t, "1", c.Acks)
	assert.Equal(t, "zstd", c.Compression)
	assert.Equal(t, 5*time.Millisecond, c.Linger)
	assert.Equal(t, []int{12, 2, 3, 5}, []int{c.Partitions, c.Producers, c.Consumers, c.Rounds})

	c, err = parse("--sweep", "record-size=100,1KiB,16KiB,256KiB")
	require.NoError(t, err)
	assert.Equal(t, []int{100, 1024, 16384, 262144}, c.Sweep)

	c, err = parse("--direct", "127.0.0.1:9092", "--proxy", "127.0.0.1:19092", "--proxy-pid", "42")
	require.NoError(t, err)
	assert.Equal(t, 42, c.ProxyPID)
}

func TestBenchKafkaFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--direct", "127.0.0.1:9092"}, "--direct and --proxy go together"},
		{[]string{"--records", "10", "--duration", "1s"}, "--records and --duration both given"},
		{[]string{"--record-size", "1KB"}, `--record-size: "1KB" is not a size`},
		{[]string{"--record-size", "0"}, "--record-size 0: want 1 byte to 16MiB"},
		{[]string{"--sweep", "partitions=1,2"}, "--sweep \"partitions=1,2\": want record-size=SIZE,SIZE,..."},
		{[]string{"--sweep", "record-size=1KiB", "--record-size", "2KiB"}, "--record-size and --sweep both given"},
		{[]string{"--compression", "brotli"}, `--compression "brotli": want none, gzip, snappy, lz4 or zstd`},
		{[]string{"--acks", "0"}, "--acks 0: no acknowledgement"},
		{[]string{"--target", "redpanda"}, `--target "redpanda": want sink or kfake`},
		{[]string{"--consumers", "8"}, "--consumers 8 is more than --partitions 6"},
		{[]string{"--rounds", "0"}, "--partitions, --producers, --consumers and --rounds must be at least 1"},
		{[]string{"--rate", "-1"}, "--rate -1"},
		{[]string{"--proxy-pid", "42"}, "--proxy-pid is for an external proxy"},
		{[]string{"--direct", "a:1", "--proxy", "b:2", "--target", "sink"}, "--target picks the embedded upstream"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var errOut bytes.Buffer
			code := run(context.Background(), append([]string{"bench", "kafka"}, tt.args...), io.Discard, &errOut)
			assert.Equal(t, 1, code)
			assert.Contains(t, errOut.String(), "pipemesh bench: "+tt.want)
		})
	}
	var errOut bytes.Buffer
	assert.Equal(t, 2, run(context.Background(), []string{"bench", "kafka", "--recrods", "5"}, io.Discard, &errOut))
	assert.Contains(t, errOut.String(), "flag provided but not defined: -recrods")
}

func TestBenchKafkaRunWritesTableJSONAndReport(t *testing.T) {
	useBuiltBinary(t)
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.html")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "kafka", "--records", "2000", "--rounds", "1",
		"--json", jsonPath, "--report", htmlPath}, &out, &errOut)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())

	stdout := out.String()
	assert.Contains(t, stdout, "produce MB/s")
	assert.Contains(t, stdout, "proxied/direct")
	assert.Contains(t, stdout, "JSON:   "+jsonPath)
	assert.Contains(t, stdout, "report: "+htmlPath)
	assert.Contains(t, errOut.String(), "round 1/1 proxied 1KiB: consume ", "plain progress lines on a non-terminal")

	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep benchmarks.Report
	require.NoError(t, json.Unmarshal(b, &rep))
	assert.Equal(t, "kfake", rep.Upstream)
	assert.Equal(t, int64(2000), rep.Config.Records)
	require.Len(t, rep.Rounds, 2)
	for _, rd := range rep.Rounds {
		assert.True(t, rd.Verified, rd.Error)
	}
	require.Len(t, rep.Summary, 1)
	assert.True(t, rep.Summary[0].AllRoundsVerified)

	page, err := os.ReadFile(htmlPath)
	require.NoError(t, err)
	assert.Contains(t, string(page), "<svg")
}

func TestBenchKafkaFailsWhenTheSetupCannotStart(t *testing.T) {
	t.Cleanup(func() { executable = os.Executable })
	executable = func() (string, error) { return "/bin/false", nil }
	var errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "kafka", "--records", "10", "--rounds", "1"}, io.Discard, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "pipemesh bench: benchmarks: the kfake broker (pid ")
}

func TestBenchKafkaExitsNonZeroWhenADataCheckFails(t *testing.T) {
	// --proxy is a second cluster that gets every topic the first one
	// does: the proxied round's records come back from it, but the cluster
	// at --direct, whose end offsets the harness checks, never got them.
	direct, err := devbroker.Start(devbroker.Config{Brokers: 1})
	require.NoError(t, err)
	defer direct.Close()
	other, err := devbroker.Start(devbroker.Config{Brokers: 1})
	require.NoError(t, err)
	defer other.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(other.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	otherAdmin := kadm.NewClient(cl)
	direct.ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		for _, tp := range req.(*kmsg.CreateTopicsRequest).Topics {
			_, err := otherAdmin.CreateTopic(context.Background(), tp.NumPartitions, -1, nil, tp.Topic)
			assert.NoError(t, err)
		}
		return nil, nil, false
	})

	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "kafka", "--direct", direct.ListenAddrs()[0], "--proxy", other.ListenAddrs()[0],
		"--records", "300", "--rounds", "1", "--partitions", "2"}, &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, out.String(), "DATA CHECK FAILED", "the table shows the failure")
	assert.Contains(t, errOut.String(), "pipemesh bench: 1 of 2 rounds failed; their figures are left out of the summary")
	assert.Contains(t, errOut.String(), "round 1 proxied 1KiB: consume via ")
	assert.Contains(t, errOut.String(), "the topic's partitions end at 0 records in all, 300 were produced")
}
