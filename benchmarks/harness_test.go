package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// harnessBinDir holds the pipemesh binary the tests build; TestMain removes it.
var harnessBinDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if harnessBinDir != "" {
		os.RemoveAll(harnessBinDir)
	}
	os.Exit(code)
}

var (
	harnessBuildOnce sync.Once
	harnessBin       string
	harnessBuildErr  error
)

// pipemeshBinary builds ./cmd/pipemesh once per test run, as the embedded
// broker and proxy run it.
func pipemeshBinary(t *testing.T) string {
	t.Helper()
	harnessBuildOnce.Do(func() {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			harnessBuildErr = err
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(gomod)))
		if harnessBinDir, err = os.MkdirTemp("", "pipemesh-bench-test-"); err != nil {
			harnessBuildErr = err
			return
		}
		harnessBin = filepath.Join(harnessBinDir, "pipemesh")
		cmd := exec.Command("go", "build", "-o", harnessBin, "./cmd/pipemesh")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			harnessBuildErr = &buildError{err: err, out: string(out)}
		}
	})
	require.NoError(t, harnessBuildErr, "building the pipemesh binary")
	return harnessBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// tinyConfig is a workload small enough for tests.
func tinyConfig() Config {
	c := DefaultConfig()
	c.Records, c.RecordSize, c.Rounds, c.Partitions = 3000, 512, 1, 3
	return c
}

// assertRoundSane checks the figures of a verified round.
func assertRoundSane(t *testing.T, rd Round) {
	t.Helper()
	assert.True(t, rd.Verified, "round %d %s: %s", rd.Index, rd.Mode, rd.Error)
	assert.Empty(t, rd.Error)
	assert.Positive(t, rd.Produce.MBPerSec)
	assert.Positive(t, rd.Produce.RecordsPerSec)
	assert.Positive(t, rd.Consume.MBPerSec)
	assert.Positive(t, rd.Consume.RecordsPerSec)
	assert.Equal(t, int64(rd.RecordSize+keySize)*rd.Records, rd.Bytes)
	l := rd.Latency
	assert.Positive(t, l.P50)
	assert.LessOrEqual(t, l.P50, l.P99)
	assert.LessOrEqual(t, l.P99, l.P999)
	assert.LessOrEqual(t, l.P999, l.Max)
	require.Len(t, rd.LatencyHistogram, len(LatencyBuckets))
	var n int64
	for _, c := range rd.LatencyHistogram {
		n += c
	}
	assert.Equal(t, rd.Records, n, "every acknowledged record is in the histogram")
}

// assertFinite checks every ratio and stat of the summaries is a number
// JSON can carry.
func assertFinite(t *testing.T, sums []Summary) {
	t.Helper()
	for _, s := range sums {
		for _, c := range []Compare{s.ProduceMBPerSec, s.ProduceRecsPerSec, s.ConsumeMBPerSec, s.ConsumeRecsPerSec, s.LatencyP50Ms, s.LatencyP99Ms, s.LatencyP999Ms} {
			for _, v := range []float64{c.Ratio, c.Direct.Median, c.Direct.Spread, c.Proxied.Median, c.Proxied.Spread} {
				assert.False(t, math.IsNaN(v) || math.IsInf(v, 0), "summary figure %v", v)
			}
		}
	}
	_, err := json.Marshal(sums)
	assert.NoError(t, err)
}

func TestRunEmbeddedKfake(t *testing.T) {
	bin := pipemeshBinary(t)
	var progress bytes.Buffer
	rep, err := Run(context.Background(), tinyConfig(), RunOptions{Binary: bin, Progress: &progress})
	require.NoError(t, err, progress.String())
	assert.Equal(t, "kfake", rep.Upstream)
	assert.Positive(t, rep.Machine.CPUs)
	assert.NotEmpty(t, rep.Machine.GoVersion)
	require.Len(t, rep.Rounds, 2)
	assert.Equal(t, Direct, rep.Rounds[0].Mode, "direct first, then proxied")
	assert.Equal(t, Proxied, rep.Rounds[1].Mode)
	for _, rd := range rep.Rounds {
		assertRoundSane(t, rd)
		assert.Equal(t, int64(3000), rd.Records)
		assert.Positive(t, rd.CPUSeconds[roleBroker], "broker CPU in %s round", rd.Mode)
		assert.Positive(t, rd.CPUSeconds[roleClients], "clients CPU in %s round", rd.Mode)
		assert.Contains(t, rd.CPUSeconds, roleOther, "the rest of the machine's busy time")
	}
	direct, proxied := rep.Rounds[0], rep.Rounds[1]
	assert.NotContains(t, direct.CPUSeconds, roleProxy, "the proxy carries no traffic in a direct round")
	assert.Zero(t, direct.ProxyCPUPerGB)
	assert.Positive(t, proxied.CPUSeconds[roleProxy])
	assert.Positive(t, proxied.ProxyCPUPerGB)

	require.Len(t, rep.Summary, 1)
	s := rep.Summary[0]
	assert.Equal(t, 512, s.RecordSize)
	assert.True(t, s.AllRoundsVerified)
	assert.Positive(t, s.ProduceMBPerSec.Ratio)
	assert.Positive(t, s.ConsumeMBPerSec.Ratio)
	assert.Positive(t, s.LatencyP99Ms.Ratio)
	assert.InDelta(t, proxied.ProxyCPUPerGB, s.ProxyCPUPerGB.Median, 1e-9)
	assert.NotEmpty(t, s.Saturated)
	assertFinite(t, rep.Summary)

	out := progress.String()
	assert.Contains(t, out, "round 1/1 direct 512B: produce ")
	assert.Contains(t, out, "round 1/1 proxied 512B: consume ")
	assert.Contains(t, out, "3000 records verified")
	assert.NotContains(t, out, "\r", "plain lines when not a terminal")
}

func TestRunSweepSummarisesEachSize(t *testing.T) {
	bin := pipemeshBinary(t)
	cfg := tinyConfig()
	cfg.Records = 1000
	cfg.Sweep = []int{100, 2048}
	rep, err := Run(context.Background(), cfg, RunOptions{Binary: bin})
	require.NoError(t, err)
	require.Len(t, rep.Rounds, 4)
	require.Len(t, rep.Summary, 2)
	assert.Equal(t, 100, rep.Summary[0].RecordSize)
	assert.Equal(t, 2048, rep.Summary[1].RecordSize)
	for i, want := range []struct {
		size int
		mode Mode
	}{{100, Direct}, {100, Proxied}, {2048, Direct}, {2048, Proxied}} {
		assert.Equal(t, want.size, rep.Rounds[i].RecordSize)
		assert.Equal(t, want.mode, rep.Rounds[i].Mode)
		assertRoundSane(t, rep.Rounds[i])
	}
	assertFinite(t, rep.Summary)
}

// sinkAvailable reports whether the binary has `broker --sink`.
func sinkAvailable(t *testing.T, bin string) bool {
	out, _ := exec.Command(bin, "broker", "--help").CombinedOutput()
	return strings.Contains(string(out), "-sink")
}

func TestRunEmbeddedSink(t *testing.T) {
	bin := pipemeshBinary(t)
	if !sinkAvailable(t, bin) {
		t.Skip("pipemesh broker has no --sink yet")
	}
	cfg := tinyConfig()
	cfg.Target = "sink"
	cfg.RecordSize = 4096
	rep, err := Run(context.Background(), cfg, RunOptions{Binary: bin})
	require.NoError(t, err)
	assert.Equal(t, "sink", rep.Upstream)
	require.Len(t, rep.Rounds, 2)
	for _, rd := range rep.Rounds {
		assertRoundSane(t, rd)
	}
	assert.Positive(t, rep.Rounds[1].ProxyCPUPerGB)
	assertFinite(t, rep.Summary)
}

// startCluster runs a 3-broker kfake cluster in this process.
func startCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := devbroker.Start(devbroker.Config{Brokers: 3, Options: opts})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// startProxy runs a proxy in front of c in this process and returns its
// bootstrap address.
func startProxy(t *testing.T, c *kfake.Cluster) string {
	t.Helper()
	p, err := kafkaproxy.New(kafkaproxy.Config{Listen: "127.0.0.1:0", BrokerPortBase: -1,
		Upstreams: c.ListenAddrs(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p.Addr()
}

func TestRunExternalSetup(t *testing.T) {
	c := startCluster(t)
	cfg := tinyConfig()
	cfg.Direct, cfg.Proxy = c.ListenAddrs()[0], startProxy(t, c)
	cfg.Records = 2000
	rep, err := Run(context.Background(), cfg, RunOptions{})
	require.NoError(t, err)
	assert.Equal(t, "external", rep.Upstream)
	require.Len(t, rep.Rounds, 2)
	for _, rd := range rep.Rounds {
		assertRoundSane(t, rd)
		assert.NotContains(t, rd.CPUSeconds, roleProxy, "no --proxy-pid, no proxy CPU")
		assert.NotContains(t, rd.CPUSeconds, roleBroker)
		assert.NotContains(t, rd.CPUSeconds, roleOther, "the setup may share the machine: no telling other load from it")
		assert.Zero(t, rd.ProxyCPUPerGB)
	}
	assertFinite(t, rep.Summary)
}

func TestRunReportsRecordsTheClusterDidNotKeep(t *testing.T) {
	// The "proxy" is a second cluster that gets every topic the first one
	// does: the proxied round's records all come back from it, but the
	// first cluster, where the harness checks the end offsets, never got
	// them.
	direct, other := startCluster(t), startCluster(t)
	otherAdmin := adminFor(t, other)
	direct.ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		for _, tp := range req.(*kmsg.CreateTopicsRequest).Topics {
			_, err := otherAdmin.CreateTopic(context.Background(), tp.NumPartitions, -1, nil, tp.Topic)
			assert.NoError(t, err)
		}
		return nil, nil, false // and create it here too
	})
	cfg := tinyConfig()
	cfg.Direct, cfg.Proxy, cfg.Records = direct.ListenAddrs()[0], other.ListenAddrs()[0], 500
	rep, err := Run(context.Background(), cfg, RunOptions{})
	require.ErrorIs(t, err, ErrRoundsFailed)
	assert.Contains(t, err.Error(), "1 of 2 rounds failed")
	require.Len(t, rep.Rounds, 2)
	assert.True(t, rep.Rounds[0].Verified)
	assert.False(t, rep.Rounds[1].Verified)
	assert.Contains(t, rep.Rounds[1].Error, "data check failed: the topic's partitions end at 0 records in all, 500 were produced")
	assert.False(t, rep.Summary[0].AllRoundsVerified)
	assert.Len(t, rep.FailedRounds(), 1)
}

func TestRunChildThatDiesIsReported(t *testing.T) {
	cfg := tinyConfig()
	_, err := Run(context.Background(), cfg, RunOptions{Binary: "/bin/false"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the kfake broker (pid ")
	assert.Contains(t, err.Error(), "exited")
}

func TestRunInterruptedLeavesNoChildren(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	bin := pipemeshBinary(t)
	cfg := tinyConfig()
	cfg.Duration, cfg.Records = time.Minute, 0
	ctx, cancel := context.WithCancel(context.Background())
	var progress syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg, RunOptions{Binary: bin, Progress: &progress})
		done <- err
	}()
	require.Eventually(t, func() bool { return strings.Contains(progress.String(), "producing") }, 30*time.Second, 10*time.Millisecond)
	assert.NotEmpty(t, childrenOf(os.Getpid(), bin), "broker and proxy run as children")
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	assert.Empty(t, childrenOf(os.Getpid(), bin), "no broker or proxy left behind")
}

// adminFor is an admin client for c.
func adminFor(t *testing.T, c *kfake.Cluster) *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// childrenOf lists the pids of live children of ppid running bin.
func childrenOf(ppid int, bin string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 || f[0] == "Z" || f[1] != strconv.Itoa(ppid) {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == bin {
			out = append(out, pid)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunPacesWithRateAndDuration(t *testing.T) {
	c := startCluster(t)
	cfg := tinyConfig()
	cfg.Direct, cfg.Proxy = c.ListenAddrs()[0], startProxy(t, c)
	cfg.Records, cfg.Duration, cfg.Rate = 0, time.Second, 400
	rep, err := Run(context.Background(), cfg, RunOptions{})
	require.NoError(t, err)
	require.Len(t, rep.Rounds, 2)
	for _, rd := range rep.Rounds {
		assertRoundSane(t, rd)
		assert.InDelta(t, 400, rd.Records, 40, "about rate x duration records")
		assert.LessOrEqual(t, rd.Produce.RecordsPerSec, 440.0, "never faster than --rate")
		assert.GreaterOrEqual(t, rd.Produce.Duration, 990*time.Millisecond, "produces for --duration")
		assert.Less(t, rd.Produce.Duration, 2*time.Second)
	}
}

func TestRunSplitsWorkAmongClients(t *testing.T) {
	c := startCluster(t)
	cfg := tinyConfig()
	cfg.Direct, cfg.Proxy = c.ListenAddrs()[0], startProxy(t, c)
	cfg.Records, cfg.Producers, cfg.Consumers, cfg.Compression, cfg.Acks = 2000, 3, 2, "lz4", "1"
	rep, err := Run(context.Background(), cfg, RunOptions{})
	require.NoError(t, err)
	for _, rd := range rep.Rounds {
		assertRoundSane(t, rd)
		assert.Equal(t, int64(2000), rd.Records)
	}
}

func TestRunStopsWhenAChildDies(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	bin := pipemeshBinary(t)
	cfg := tinyConfig()
	cfg.Duration, cfg.Records, cfg.Rate = time.Minute, 0, 1000
	var progress syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), cfg, RunOptions{Binary: bin, Progress: &progress})
		done <- err
	}()
	require.Eventually(t, func() bool { return strings.Contains(progress.String(), "producing") }, 30*time.Second, 10*time.Millisecond)
	var proxy int
	for _, pid := range childrenOf(os.Getpid(), bin) {
		if cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); bytes.Contains(cmdline, []byte("serve")) {
			proxy = pid
		}
	}
	require.NotZero(t, proxy, "the proxy runs as a child")
	p, err := os.FindProcess(proxy)
	require.NoError(t, err)
	require.NoError(t, p.Kill())
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "the proxy (pid "+strconv.Itoa(proxy)+") exited: signal: killed")
	case <-time.After(20 * time.Second):
		t.Fatal("Run went on after the proxy died")
	}
	assert.Empty(t, childrenOf(os.Getpid(), bin), "the broker is stopped too")
}
