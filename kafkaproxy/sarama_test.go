package kafkaproxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// saramaVersion is the Kafka version sarama is told the cluster runs: the
// newest sarama knows (4.3 for v1.61.1). Sarama still negotiates every
// request version down from the proxy's ApiVersions answer, so this exercises
// the newest request versions sarama, the proxy and kfake have in common.
var saramaVersion = sarama.MaxVersion

// saramaRecord is the record number i of a producer named src: binary keys,
// values and headers of varying length, so any byte the proxy mangled or
// dropped shows.
func saramaRecord(src string, i int) (key, value []byte, headers []sarama.RecordHeader) {
	key = fmt.Appendf(nil, "%s-%05d\x00\xff", src, i)
	value = make([]byte, 1+(i*37)%700)
	for j := range value {
		value[j] = byte(i*7 + j)
	}
	seq := binary.BigEndian.AppendUint64(nil, uint64(i))
	headers = []sarama.RecordHeader{
		{Key: []byte("seq"), Value: seq},
		{Key: []byte("src"), Value: []byte(src)},
		{Key: []byte("bin\x01"), Value: bytes.Repeat([]byte{0, byte(i), 0xfe}, i%5)},
	}
	return key, value, headers
}

func saramaConfig(t *testing.T) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = saramaVersion
	cfg.ClientID = "pipemesh-sarama-test"
	cfg.Net.DialTimeout = 5 * time.Second
	cfg.Metadata.Retry.Backoff = 50 * time.Millisecond
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Retry.Max = 0 // a retry could duplicate a record and hide a proxy fault
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	require.NoError(t, cfg.Validate())
	return cfg
}

type saramaWant struct {
	value   []byte
	headers []sarama.RecordHeader
}

// saramaCollector is a sarama.ConsumerGroupHandler that keeps every record
// by key and counts how often each key came.
type saramaCollector struct {
	want map[string]saramaWant

	mu     sync.Mutex
	seen   map[string]int
	bad    []string
	all    chan struct{}
	closed bool
}

func (c *saramaCollector) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (c *saramaCollector) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (c *saramaCollector) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case <-sess.Context().Done():
			return nil
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			c.record(m)
			sess.MarkMessage(m, "")
		}
	}
}

func (c *saramaCollector) record(m *sarama.ConsumerMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := string(m.Key)
	w, ok := c.want[k]
	switch {
	case !ok:
		c.bad = append(c.bad, fmt.Sprintf("unexpected key %q at %s/%d@%d", k, m.Topic, m.Partition, m.Offset))
	case !bytes.Equal(w.value, m.Value):
		c.bad = append(c.bad, fmt.Sprintf("key %q: value differs (%d bytes, want %d)", k, len(m.Value), len(w.value)))
	case !saramaHeadersEqual(w.headers, m.Headers):
		c.bad = append(c.bad, fmt.Sprintf("key %q: %d headers differ from the %d sent", k, len(m.Headers), len(w.headers)))
	}
	c.seen[k]++
	if len(c.seen) == len(c.want) && !c.closed {
		c.closed = true
		close(c.all)
	}
}

func saramaHeadersEqual(want []sarama.RecordHeader, got []*sarama.RecordHeader) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if got[i] == nil || !bytes.Equal(want[i].Key, got[i].Key) || !bytes.Equal(want[i].Value, got[i].Value) {
			return false
		}
	}
	return true
}

// TestSaramaProduceConsumeGroup sends 5,000 records with a sarama
// SyncProducer (uncompressed) and 5,000 with an AsyncProducer (zstd) through
// the proxy, then reads them back with a sarama consumer group through the
// proxy: every record must arrive exactly once, key, value and headers byte
// for byte. Sarama's metadata must only name proxy listeners.
func TestSaramaProduceConsumeGroup(t *testing.T) {
	const (
		topic = "sarama"
		n     = 5000
	)
	e := startEnv(t, withTopic(topic, 6))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	want := make(map[string]saramaWant, 2*n)

	// Sync producer, no compression, batches of 250 per SendMessages.
	cfg := saramaConfig(t)
	sp, err := sarama.NewSyncProducer([]string{e.addr}, cfg)
	require.NoError(t, err)
	var batch []*sarama.ProducerMessage
	for i := range n {
		k, v, h := saramaRecord("sync", i)
		want[string(k)] = saramaWant{v, h}
		batch = append(batch, &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(k), Value: sarama.ByteEncoder(v), Headers: h})
		if len(batch) == 250 {
			require.NoError(t, sp.SendMessages(batch))
			for _, m := range batch {
				require.GreaterOrEqual(t, m.Offset, int64(0))
			}
			batch = batch[:0]
		}
	}
	require.NoError(t, sp.Close())

	// Async producer, zstd.
	acfg := saramaConfig(t)
	acfg.Producer.Compression = sarama.CompressionZSTD
	acfg.Producer.Flush.Messages = 100
	acfg.Producer.Flush.Frequency = 5 * time.Millisecond
	ap, err := sarama.NewAsyncProducer([]string{e.addr}, acfg)
	require.NoError(t, err)
	var wg sync.WaitGroup
	var succeeded int
	var perrs []error
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range ap.Successes() {
			succeeded++
		}
	}()
	go func() {
		defer wg.Done()
		for err := range ap.Errors() {
			perrs = append(perrs, err)
		}
	}()
	for i := range n {
		k, v, h := saramaRecord("async", i)
		want[string(k)] = saramaWant{v, h}
		select {
		case ap.Input() <- &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(k), Value: sarama.ByteEncoder(v), Headers: h}:
		case <-ctx.Done():
			t.Fatal("timed out feeding the async producer")
		}
	}
	ap.AsyncClose()
	wg.Wait()
	require.Empty(t, perrs)
	require.Equal(t, n, succeeded)

	// Sarama's view of the cluster must be the proxy's listeners only.
	cl, err := sarama.NewClient([]string{e.addr}, saramaConfig(t))
	require.NoError(t, err)
	require.NoError(t, cl.RefreshMetadata(topic))
	proxyAddrs := slices.Collect(maps.Values(e.proxy.BrokerAddrs()))
	var seenAddrs []string
	for _, b := range cl.Brokers() {
		seenAddrs = append(seenAddrs, b.Addr())
		assert.Contains(t, proxyAddrs, b.Addr(), "sarama was told a broker address that is not a proxy listener")
	}
	assert.Len(t, seenAddrs, len(proxyAddrs))
	for _, up := range e.cluster.ListenAddrs() {
		assert.NotContains(t, seenAddrs, up)
	}
	require.NoError(t, cl.Close())

	// Consume with a group.
	col := &saramaCollector{want: want, seen: make(map[string]int), all: make(chan struct{})}
	gcfg := saramaConfig(t)
	group, err := sarama.NewConsumerGroup([]string{e.addr}, "sarama-group", gcfg)
	require.NoError(t, err)
	gctx, gcancel := context.WithCancel(ctx)
	consumeDone := make(chan error, 1)
	go func() {
		for {
			if err := group.Consume(gctx, []string{topic}, col); err != nil {
				consumeDone <- err
				return
			}
			if gctx.Err() != nil {
				consumeDone <- nil
				return
			}
		}
	}()
	var groupErrs []error
	errsDone := make(chan struct{})
	go func() {
		defer close(errsDone)
		for err := range group.Errors() {
			groupErrs = append(groupErrs, err)
		}
	}()
	select {
	case <-col.all:
	case err := <-consumeDone:
		t.Fatalf("consumer group stopped early: %v", err)
	case <-ctx.Done():
		col.mu.Lock()
		got := len(col.seen)
		col.mu.Unlock()
		t.Fatalf("timed out: %d of %d records consumed", got, len(want))
	}
	// Give any duplicate a moment to show up.
	time.Sleep(500 * time.Millisecond)
	gcancel()
	require.NoError(t, <-consumeDone)
	require.NoError(t, group.Close())
	<-errsDone
	assert.Empty(t, groupErrs)

	requireClientTrafficProxied(t, e, "Produce", "Fetch", "FindCoordinator", "JoinGroup", "SyncGroup", "Heartbeat", "OffsetCommit", "OffsetFetch")

	col.mu.Lock()
	defer col.mu.Unlock()
	assert.Empty(t, col.bad)
	require.Len(t, col.seen, len(want))
	var dups []string
	for k, c := range col.seen {
		if c != 1 {
			dups = append(dups, fmt.Sprintf("%q x%d", k, c))
		}
	}
	slices.Sort(dups)
	assert.Empty(t, dups, "records delivered more than once: %s", strings.Join(dups, ", "))
}
