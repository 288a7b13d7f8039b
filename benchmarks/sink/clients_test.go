package sink

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// TestSaramaRoundTrip produces with a sarama SyncProducer (uncompressed)
// and an AsyncProducer (zstd), then reads every partition back with sarama
// partition consumers from the oldest offset: every record once, byte for
// byte, at the offset its produce was acknowledged with.
func TestSaramaRoundTrip(t *testing.T) {
	s := startSink(t, Config{})
	const topic, n, partitions = "sarama", 3000, 3
	require.NoError(t, s.CreateTopic(topic, partitions))
	config := func() *sarama.Config {
		cfg := sarama.NewConfig()
		cfg.Version = sarama.MaxVersion
		cfg.ClientID = "sink-sarama-test"
		cfg.Producer.RequiredAcks = sarama.WaitForAll
		cfg.Producer.Return.Successes = true
		cfg.Producer.Retry.Max = 0
		cfg.Consumer.Return.Errors = true
		cfg.Consumer.MaxWaitTime = 100 * time.Millisecond
		cfg.Metadata.Retry.Backoff = 50 * time.Millisecond
		require.NoError(t, cfg.Validate())
		return cfg
	}
	type where struct {
		partition int32
		offset    int64
	}
	wantAt := make(map[string]where, 2*n)
	wantValue := make(map[string][]byte, 2*n)
	message := func(src string, i int) *sarama.ProducerMessage {
		r := testRecord(topic, i)
		k := src + "-" + string(r.Key)
		wantValue[k] = r.Value
		return &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(k), Value: sarama.ByteEncoder(r.Value),
			Headers: []sarama.RecordHeader{{Key: []byte("h"), Value: r.Headers[0].Value}}}
	}

	sp, err := sarama.NewSyncProducer(s.Addrs(), config())
	require.NoError(t, err)
	var batch []*sarama.ProducerMessage
	for i := range n {
		batch = append(batch, message("sync", i))
		if len(batch) == 250 || i == n-1 {
			require.NoError(t, sp.SendMessages(batch))
			for _, m := range batch {
				wantAt[string(m.Key.(sarama.StringEncoder))] = where{m.Partition, m.Offset}
			}
			batch = batch[:0]
		}
	}
	require.NoError(t, sp.Close())

	acfg := config()
	acfg.Producer.Compression = sarama.CompressionZSTD
	acfg.Producer.Flush.Messages = 100
	acfg.Producer.Flush.Frequency = 5 * time.Millisecond // without it a partial batch waits forever
	ap, err := sarama.NewAsyncProducer(s.Addrs(), acfg)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ap.Successes() {
			wantAt[string(m.Key.(sarama.StringEncoder))] = where{m.Partition, m.Offset}
		}
	}()
	go func() {
		for err := range ap.Errors() {
			t.Errorf("async produce: %v", err)
		}
	}()
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range n {
		msgs[i] = message("async", i)
	}
	for _, m := range msgs {
		ap.Input() <- m
	}
	ap.AsyncClose()
	<-done
	require.Len(t, wantAt, 2*n)

	consumer, err := sarama.NewConsumer(s.Addrs(), config())
	require.NoError(t, err)
	defer consumer.Close()
	seen := 0
	for p := range int32(partitions) {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		require.NoError(t, err)
		hw := pc.HighWaterMarkOffset()
		next := int64(0)
		timeout := time.After(30 * time.Second)
		for next < hw || hw == 0 {
			select {
			case m := <-pc.Messages():
				k := string(m.Key)
				require.Equal(t, next, m.Offset, "partition %d offsets must be contiguous", p)
				require.Equal(t, wantAt[k], where{m.Partition, m.Offset}, "key %s", k)
				require.Equal(t, wantValue[k], m.Value, "key %s", k)
				require.Len(t, m.Headers, 1)
				next++
				seen++
				hw = max(hw, pc.HighWaterMarkOffset())
			case err := <-pc.Errors():
				t.Fatalf("consuming partition %d: %v", p, err)
			case <-timeout:
				t.Fatalf("partition %d: timed out at offset %d of %d", p, next, hw)
			}
		}
		require.NoError(t, pc.Close())
	}
	assert.Equal(t, 2*n, seen)
}

// kcatTool returns kcat's path, skipping the test when it is not installed
// unless PIPEMESH_REQUIRE_EXTERNAL=1 (as CI sets where it is).
func kcatTool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("PIPEMESH_REQUIRE_EXTERNAL") == "1" {
			t.Fatalf("kcat is not installed and PIPEMESH_REQUIRE_EXTERNAL=1: %v", err)
		}
		t.Skipf("kcat is not installed (set PIPEMESH_REQUIRE_EXTERNAL=1 to fail instead): %v", err)
	}
	return path
}

func runKcat(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcatTool(t), args...)
	cmd.WaitDelay = 2 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "kcat %s\nstderr:\n%s", strings.Join(args, " "), stderr.Bytes())
	return stdout.Bytes()
}

// TestKcatRoundTrip produces keyed lines with kcat (librdkafka, idempotent
// and lz4) and reads them back with kcat from assigned partitions, no group.
func TestKcatRoundTrip(t *testing.T) {
	kcatTool(t)
	s := startSink(t, Config{})
	const topic, n = "kcat", 2000
	require.NoError(t, s.CreateTopic(topic, 4))
	base := []string{"-b", s.Addrs()[0], "-X", "socket.timeout.ms=10000", "-m", "15"}
	want := make(map[string]string, n)
	var in bytes.Buffer
	for i := range n {
		k, v := fmt.Sprintf("key-%04d", i), fmt.Sprintf("value %d ünïcødé %s", i, strings.Repeat("x", i%97))
		want[k] = v
		fmt.Fprintf(&in, "%s|%s\n", k, v)
	}
	runKcat(t, in.Bytes(), append(base, "-P", "-t", topic, "-K", "|",
		"-X", "acks=all", "-X", "enable.idempotence=true", "-X", "compression.codec=lz4", "-X", "linger.ms=5")...)
	out := runKcat(t, nil, append(base, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%p\t%o\t%k\t%s\n")...)

	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	require.Len(t, lines, n)
	next := map[string]int{}
	for _, line := range lines {
		parts := strings.Split(line, "\t")
		require.Len(t, parts, 4, "line %q", line)
		p, off, k, v := parts[0], parts[1], parts[2], parts[3]
		assert.Equal(t, fmt.Sprint(next[p]), off, "partition %s offsets must be contiguous", p)
		next[p]++
		assert.Equal(t, want[k], v, "key %s", k)
		delete(want, k)
	}
	assert.Empty(t, want, "records not consumed")
}

// TestThroughProxy runs a kgo produce and consume round trip through a
// pipemesh proxy in front of the sink, as the benchmark harness does.
func TestThroughProxy(t *testing.T) {
	s := startSink(t, Config{})
	p, err := kafkaproxy.New(kafkaproxy.Config{
		Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: s.Addrs(), Logger: testLogger(t),
	})
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-served)
	})
	require.Eventually(t, func() bool { ok, _ := p.Ready(); return ok }, 10*time.Second, 10*time.Millisecond)

	const topic, n = "proxied", 5000
	pcl := newClient(t, []string{p.Addr()}, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	want := produceAll(t, pcl, topic, n)
	got := consumeAll(t, []string{p.Addr()}, topic, DefaultPartitions, n)
	requireSame(t, want, got)
	hw := 0
	for _, tp := range s.topics.byName(topic).parts {
		_, end, _ := tp.offsets()
		hw += int(end)
	}
	assert.Equal(t, n, hw, "the records must have gone through to the sink")
}
