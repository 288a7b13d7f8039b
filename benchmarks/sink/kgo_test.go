package sink

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestKgoRoundTrip produces 20,000 records with keys, values and headers
// over 6 auto-created partitions with kgo's default idempotent producer and
// acks=all, then reads them back with directly assigned partitions from
// the start: every record once, byte for byte, at the offset its produce
// was acknowledged with, offsets contiguous.
func TestKgoRoundTrip(t *testing.T) {
	s := startSink(t, Config{})
	const topic, n = "roundtrip", 20000
	pcl := newClient(t, s.Addrs(), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic(topic))
	want := produceAll(t, pcl, topic, n)
	parts := make(map[int32]int)
	for _, w := range want {
		parts[w.partition]++
	}
	assert.Len(t, parts, DefaultPartitions, "records should spread over every partition")
	got := consumeAll(t, s.Addrs(), topic, DefaultPartitions, n)
	requireSame(t, want, got)
}

// fetchBatchCodecs records the compression codec of every fetched batch.
type fetchBatchCodecs struct {
	mu     sync.Mutex
	codecs map[uint8]int
}

func (h *fetchBatchCodecs) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.codecs[m.CompressionType]++
}

// TestKgoCompression round-trips records with each compression codec: the
// sink stores batches as sent, so the consumer must decompress the
// producer's own batches (every fetched batch carries the codec) and get
// identical records. kgo checks each batch's CRC, so the header fields the
// sink sets must be outside it.
func TestKgoCompression(t *testing.T) {
	s := startSink(t, Config{})
	for _, tc := range []struct {
		name  string
		codec kgo.CompressionCodec
		attr  uint8
	}{
		{"none", kgo.NoCompression(), 0},
		{"gzip", kgo.GzipCompression(), 1},
		{"snappy", kgo.SnappyCompression(), 2},
		{"lz4", kgo.Lz4Compression(), 3},
		{"zstd", kgo.ZstdCompression(), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "codec-" + tc.name
			const n = 2000
			pcl := newClient(t, s.Addrs(), kgo.ProducerBatchCompression(tc.codec), kgo.ProducerLinger(5*time.Millisecond))
			want := produceAll(t, pcl, topic, n)
			hook := &fetchBatchCodecs{codecs: map[uint8]int{}}
			got := consumeAll(t, s.Addrs(), topic, DefaultPartitions, n, kgo.WithHooks(hook))
			requireSame(t, want, got)
			hook.mu.Lock()
			defer hook.mu.Unlock()
			// kgo sends a batch uncompressed when compressing does not
			// make it smaller, so codec 0 may show up too.
			assert.Positive(t, hook.codecs[tc.attr], "batches must come back with the producer's codec: %v", hook.codecs)
			for codec := range hook.codecs {
				assert.Contains(t, []uint8{0, tc.attr}, codec, "a batch came back with codec %d: %v", codec, hook.codecs)
			}
		})
	}
}

// TestAcksZero produces with acks=0 (no responses at all) and then reads
// every record back.
func TestAcksZero(t *testing.T) {
	s := startSink(t, Config{})
	const topic, n = "acks0", 3000
	require.NoError(t, s.CreateTopic(topic, 3))
	pcl := newClient(t, s.Addrs(), kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := make(map[string][]byte, n)
	for i := range n {
		r := testRecord(topic, i)
		want[string(r.Key)] = r.Value
		pcl.Produce(ctx, r, func(_ *kgo.Record, err error) { assert.NoError(t, err) })
	}
	require.NoError(t, pcl.Flush(ctx))
	got := consumeAll(t, s.Addrs(), topic, 3, n)
	count := 0
	for p, recs := range got {
		for i, r := range recs {
			require.Equal(t, int64(i), r.Offset, "partition %d", p)
			require.Equal(t, want[string(r.Key)], r.Value)
			count++
		}
	}
	require.Equal(t, n, count)
}

// TestKgoAdmin creates and deletes topics with kgo's admin requests, as
// kadm does.
func TestKgoAdmin(t *testing.T) {
	s := startSink(t, Config{Brokers: 2})
	cl := newClient(t, s.Addrs())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	created := createTopics(ctx, t, cl, map[string]int32{"a": 4, "b": -1})
	require.Equal(t, map[string]int16{"a": 0, "b": 0}, created)
	meta := metadata(ctx, t, cl, "a", "b")
	assert.Equal(t, 4, meta["a"])
	assert.Equal(t, DefaultPartitions, meta["b"])
	again := createTopics(ctx, t, cl, map[string]int32{"a": 4, "bad/name": 1})
	assert.Equal(t, map[string]int16{"a": 36, "bad/name": 17}, again) // TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION

	require.Equal(t, map[string]int16{"a": 0, "missing": 3}, deleteTopics(ctx, t, cl, "a", "missing"))
	assert.Nil(t, s.topics.byName("a"))
	assert.NotNil(t, s.topics.byName("b"))
}

func createTopics(ctx context.Context, t *testing.T, cl *kgo.Client, topics map[string]int32) map[string]int16 {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	for name, n := range topics {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, n, -1
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	out := make(map[string]int16)
	for _, rt := range resp.Topics {
		out[rt.Topic] = rt.ErrorCode
		if rt.ErrorCode == 0 {
			assert.Equal(t, topics[rt.Topic] == -1, rt.NumPartitions == DefaultPartitions, "topic %s", rt.Topic)
			assert.NotEqual(t, [16]byte{}, rt.TopicID)
		}
	}
	return out
}

func deleteTopics(ctx context.Context, t *testing.T, cl *kgo.Client, names ...string) map[string]int16 {
	t.Helper()
	req := kmsg.NewPtrDeleteTopicsRequest()
	for _, name := range names {
		rt := kmsg.NewDeleteTopicsRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
		req.TopicNames = append(req.TopicNames, name)
	}
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	out := make(map[string]int16)
	for _, rt := range resp.Topics {
		out[*rt.Topic] = rt.ErrorCode
	}
	return out
}

// metadata returns the partition count of each named topic.
func metadata(ctx context.Context, t *testing.T, cl *kgo.Client, topics ...string) map[string]int {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	for _, name := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	out := make(map[string]int)
	for _, rt := range resp.Topics {
		require.Zero(t, rt.ErrorCode, "topic %s", *rt.Topic)
		out[*rt.Topic] = len(rt.Partitions)
	}
	return out
}
