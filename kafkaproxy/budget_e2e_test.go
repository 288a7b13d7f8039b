package kafkaproxy_test

// End-to-end tests of the memory limits: consumers that stop reading do not
// grow the proxy's heap past its budget, and what they asked for all arrives
// once they read again; a connection at its in-flight cap stops being read
// and loses nothing.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/protocol"
)

// TestHelperBrokerProcess is not a test: it is the broker of
// TestMemoryBudgetStalledConsumers, run in a child process so that the
// broker's own buffers do not count in the heap the test measures.
func TestHelperBrokerProcess(t *testing.T) {
	if os.Getenv("PIPEMESH_HELPER_BROKER") != "1" {
		t.Skip("run by TestMemoryBudgetStalledConsumers")
	}
	c, err := devbroker.Start(devbroker.Config{Brokers: 1, Topics: []devbroker.Topic{{Name: "big", Partitions: 1}}})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ADDR", c.ListenAddrs()[0])
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	c.Close()
}

// childBroker starts TestHelperBrokerProcess and returns its address.
func childBroker(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBrokerProcess$")
	cmd.Env = append(os.Environ(), "PIPEMESH_HELPER_BROKER=1")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	require.True(t, ok, "child broker said %q", line)
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return addr
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMemoryBudgetStalledConsumers: six consumers each ask for two 8 MiB
// fetch responses and then stop reading. Without a budget the proxy would
// hold a whole response for each (48 MiB); with a 12 MiB budget its live
// heap grows by no more than the budget (plus a little for buffers), and
// the budget gauge never passes its total. Once the consumers read again,
// every response arrives, in order, byte for byte what the broker returns.
func TestMemoryBudgetStalledConsumers(t *testing.T) {
	if testing.Short() {
		t.Skip("moves ~100 MB over loopback")
	}
	const (
		budget   = 12 << 20
		respSize = 8 << 20
		conns    = 6
		perConn  = 2
		slack    = 8 << 20 // read and write buffers, the test's own clients
	)
	upstream := childBroker(t)
	e := startProxyOnly(t, []string{upstream}, func(c *kafkaproxy.Config) {
		c.Limits.MemoryBytes = budget
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 8 MiB of incompressible records, produced straight to the broker.
	direct, err := kgo.NewClient(kgo.SeedBrokers(upstream), kgo.DefaultProduceTopic("big"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	require.NoError(t, err)
	rnd := rand.New(rand.NewPCG(1, 2))
	var recs []*kgo.Record
	for range 64 {
		v := make([]byte, 128<<10)
		for i := range v {
			v[i] = byte(rnd.Uint32())
		}
		recs = append(recs, &kgo.Record{Value: v})
	}
	require.NoError(t, direct.ProduceSync(ctx, recs...).FirstErr())
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr("big")
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, direct)
	require.NoError(t, err)
	topicID := mresp.Topics[0].TopicID

	fetch := func(corr int32) []byte {
		req := kmsg.NewPtrFetchRequest()
		req.Version = 16 // read whole by the proxy: it may carry leader endpoints
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 0, 1, respSize
		rt := kmsg.NewFetchRequestTopic()
		rt.TopicID = topicID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LogStartOffset = respSize, -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		return kmsg.NewRequestFormatter(kmsg.FormatterClientID("stalled")).AppendRequest(nil, req, corr)
	}
	// What the broker answers, for comparison.
	want := recordsOf(t, rawRoundTrip(t, upstream, fetch(1)))
	require.Greater(t, len(want), respSize/2)
	wantSum := sha256.Sum256(want)
	direct.Close()

	base := liveHeap()
	var stalled []net.Conn
	for i := range conns {
		c, err := net.Dial("tcp", e.proxy.BrokerAddrs()[0])
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.(*net.TCPConn).SetReadBuffer(64<<10))
		for j := range perConn {
			_, err := c.Write(fetch(int32(100*i + j)))
			require.NoError(t, err)
		}
		stalled = append(stalled, c)
	}
	// Let the proxy read what it will; meanwhile track the live heap and
	// the budget in use.
	var peak uint64
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		peak = max(peak, liveHeap())
		used := proxyCounter(t, &env{registry: e.registry}, "pipemesh_kafka_memory_budget_bytes", "state", "used")
		assert.LessOrEqual(t, used, float64(budget), "budget in use")
		time.Sleep(100 * time.Millisecond)
	}
	growth := int64(peak) - int64(base)
	t.Logf("live heap: %d MiB before, peak %d MiB with %d stalled consumers (+%.1f MiB; budget %d MiB, unbudgeted would hold %d MiB)",
		base>>20, peak>>20, conns, float64(growth)/(1<<20), budget>>20, conns*respSize>>20)
	assert.LessOrEqual(t, growth, int64(budget+slack), "proxy heap growth with stalled consumers")
	assert.Positive(t, proxyCounter(t, &env{registry: e.registry}, "pipemesh_kafka_memory_budget_waits_total", "", ""),
		"connections waited for memory")

	// The consumers read again (all at once: the one holding the memory
	// must drain before the others get it): everything they asked for
	// arrives.
	var wg sync.WaitGroup
	for i, c := range stalled {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Minute)))
			r := bufio.NewReaderSize(c, 1<<20)
			for j := range perConn {
				body, err := rawReadFrameErr(r)
				if !assert.NoError(t, err, "conn %d response %d", i, j) {
					return
				}
				assert.Equal(t, int32(100*i+j), protocol.ResponseCorrelationID(body), "conn %d response %d", i, j)
				assert.Equal(t, wantSum, sha256.Sum256(recordsOf(t, body)), "conn %d response %d: records differ from the broker's", i, j)
			}
		}()
	}
	wg.Wait()
	assert.Eventually(t, func() bool {
		return proxyCounter(t, &env{registry: e.registry}, "pipemesh_kafka_memory_budget_bytes", "state", "used") == 0
	}, 5*time.Second, 10*time.Millisecond, "the budget is all given back")
}

// startProxyOnly runs a proxy in front of upstreams that the test started.
func startProxyOnly(t *testing.T, upstreams []string, fn func(*kafkaproxy.Config)) *env {
	t.Helper()
	e := &env{capture: &capture{}}
	e.registry = prometheus.NewRegistry()
	cfg := kafkaproxy.Config{Listen: "127.0.0.1:0", BrokerPortBase: -1, Logger: testLogger(t), Registerer: e.registry, Upstreams: upstreams}
	fn(&cfg)
	p, err := kafkaproxy.New(cfg)
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	e.proxy, e.addr = p, p.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { ok, _ := p.Ready(); return ok }, 10*time.Second, 10*time.Millisecond)
	return e
}

func rawReadFrame(t *testing.T, r io.Reader) []byte {
	t.Helper()
	body, err := rawReadFrameErr(r)
	require.NoError(t, err)
	return body
}

func rawReadFrameErr(r io.Reader) ([]byte, error) {
	var sz [4]byte
	if _, err := io.ReadFull(r, sz[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(sz[:]))
	_, err := io.ReadFull(r, body)
	return body, err
}

func rawRoundTrip(t *testing.T, addr string, frame []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(frame)
	require.NoError(t, err)
	return rawReadFrame(t, c)
}

// recordsOf returns the record bytes of a Fetch v16 response body.
func recordsOf(t *testing.T, body []byte) []byte {
	t.Helper()
	off, err := protocol.ResponseBodyOffset(body, true)
	require.NoError(t, err)
	var out []byte
	_, err = protocol.WalkFetchResponse(16, body[off:], func(pd protocol.PartitionData) {
		require.Zero(t, pd.ErrorCode)
		out = append(out, pd.Records...)
	})
	require.NoError(t, err)
	return out
}

// TestInflightCapPerConnection: with a 16 KiB cap on request bytes in
// flight, a producer pipelining larger requests is held back (the proxy
// stops reading it until answers come) and every record arrives once.
func TestInflightCapPerConnection(t *testing.T) {
	e := startEnv(t, withTopic("capped", 3), withProxyConfig(func(c *kafkaproxy.Config) {
		c.Limits.MaxInflightBytesPerConnection = 16 << 10
	}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := e2eClient(t, e, kgo.DefaultProduceTopic("capped"), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.MaxProduceRequestsInflightPerBroker(5), kgo.ProducerBatchMaxBytes(48<<10), kgo.DisableIdempotentWrite())
	const n = 3000
	value := bytes.Repeat([]byte("v"), 1000)
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%05d", i), Value: value})
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
	assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_inflight_cap_waits_total", "", ""), "the cap held a connection back")
	// The client may read the last answer a moment before the proxy counts
	// it as given back.
	assert.Eventually(t, func() bool {
		return proxyCounter(t, e, "pipemesh_kafka_inflight_request_bytes", "", "") == 0
	}, 5*time.Second, 5*time.Millisecond, "in-flight bytes all given back once answered")
	seen := quotaConsumeKeys(ctx, t, e, "capped", n)
	assert.Len(t, seen, n)
	for k, c := range seen {
		assert.Equal(t, 1, c, "key %s", k)
	}
}
