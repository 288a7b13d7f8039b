package kafkaproxy_test

// End-to-end tests of the compression stage: kgo, sarama and kcat producers
// send every codec through the proxy to topics with a zstd rule; consumers of
// all three libraries read the records back byte for byte; a direct fetch
// from the broker shows the stored batches are zstd.

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/protocol"
)

var codecNames = []string{"none", "gzip", "snappy", "lz4", "zstd"}

func withCompression(rules ...kafkaproxy.CompressionRule) envOpt {
	return withProxyConfig(func(c *kafkaproxy.Config) { c.Compression = append(c.Compression, rules...) })
}

// zstdLogsRule is the example: everything under "logs." goes to the
// brokers as zstd level 3.
var zstdLogsRule = kafkaproxy.CompressionRule{Topic: "logs.", Prefixed: true, Codec: protocol.CodecZstd, Level: 3}

// textRecord is a record every client library, kcat included, can carry
// and print: text without tabs or newlines.
type textRecord struct{ key, value, src string }

func compressRecord(src string, i int) textRecord {
	var v strings.Builder
	fmt.Fprintf(&v, `{"src":"%s","seq":%d,"msg":"`, src, i)
	for j := range 20 + i%150 {
		v.WriteByte("abcdefghij klmnopqrstuvwxyz0123456789"[(i*7+j*j)%37])
	}
	v.WriteString(`"}`)
	return textRecord{key: fmt.Sprintf("%s-%05d", src, i), value: v.String(), src: src}
}

// textSink checks consumed records against those produced: each once,
// value and src header byte for byte.
type textSink struct {
	mu   sync.Mutex
	want map[string]textRecord
	seen map[string]int
	bad  []string
}

func newTextSink(want map[string]textRecord) *textSink {
	return &textSink{want: want, seen: make(map[string]int)}
}

func (s *textSink) add(key, value, src string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[key]++
	w, ok := s.want[key]
	switch {
	case !ok:
		s.bad = append(s.bad, "unexpected key "+key)
	case s.seen[key] > 1:
		s.bad = append(s.bad, "duplicate key "+key)
	case w.value != value:
		s.bad = append(s.bad, fmt.Sprintf("value of %s: got %q, want %q", key, value, w.value))
	case w.src != src:
		s.bad = append(s.bad, fmt.Sprintf("src header of %s: got %q, want %q", key, src, w.src))
	}
}

func (s *textSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func (s *textSink) check(t *testing.T, who string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Empty(t, s.bad[:min(len(s.bad), 10)], "%s: %d bad records", who, len(s.bad))
	missing := 0
	for k := range s.want {
		if s.seen[k] == 0 {
			missing++
		}
	}
	assert.Zero(t, missing, "%s: records never consumed", who)
}

// storedBatches fetches every partition of topic straight from its leader,
// bypassing the proxy, and counts the stored batches by codec (control
// batches apart), checking each header with protocol.ParseBatchHeader.
func storedBatches(ctx context.Context, t *testing.T, e *env, topic string, partitions int32) (byCodec map[protocol.Codec]int, control, transactional int) {
	t.Helper()
	direct, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer direct.Close()
	byCodec = map[protocol.Codec]int{}
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, direct)
	require.NoError(t, err)
	require.Len(t, mresp.Topics, 1)
	for p := range partitions {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 0, 64<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, mresp.Topics[0].TopicID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LogStartOffset = p, 64<<20, -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := direct.Broker(int(e.cluster.LeaderFor(topic, p))).Request(ctx, req)
		require.NoError(t, err)
		for _, ft := range resp.(*kmsg.FetchResponse).Topics {
			for _, fp := range ft.Partitions {
				require.Zero(t, fp.ErrorCode, "direct fetch of %s/%d", topic, p)
				recs := fp.RecordBatches
				for len(recs) > 0 {
					h, err := protocol.ParseBatchHeader(recs)
					require.NoError(t, err)
					require.LessOrEqual(t, h.Size(), len(recs), "whole batches only")
					require.Equal(t, int8(2), h.Magic)
					switch {
					case h.Control():
						control++
					default:
						byCodec[h.Codec()]++
						if h.Transactional() {
							transactional++
						}
					}
					recs = recs[h.Size():]
				}
			}
		}
	}
	return byCodec, control, transactional
}

// TestCompressionE2E: kgo, sarama and kcat producers each send all five
// codecs to a topic under a zstd rule; kgo, sarama and kcat consumers all
// read back exactly what was sent; the broker holds only zstd batches; a
// topic without a rule keeps what the client sent.
func TestCompressionE2E(t *testing.T) {
	kcat, lookErr := exec.LookPath("kcat")
	if lookErr != nil {
		if requireExternal() {
			t.Fatalf("kcat is not installed and PIPEMESH_REQUIRE_EXTERNAL=1: %v", lookErr)
		}
		t.Logf("kcat is not installed: its producer and consumer are left out (set PIPEMESH_REQUIRE_EXTERNAL=1 to fail instead)")
		kcat = ""
	}
	const (
		topic      = "logs.app"
		plain      = "metrics.raw"
		partitions = 3
		perCodec   = 300
	)
	e := startEnv(t, withTopic(topic, partitions), withTopic(plain, 1), withCompression(zstdLogsRule))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := map[string]textRecord{}

	// kgo, every codec.
	for ci, codec := range []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()} {
		src := "kgo-" + codecNames[ci]
		cl := e2eClient(t, e, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(2*time.Millisecond))
		var recs []*kgo.Record
		for i := range perCodec {
			r := compressRecord(src, i)
			want[r.key] = r
			recs = append(recs, &kgo.Record{Key: []byte(r.key), Value: []byte(r.value), Headers: []kgo.RecordHeader{{Key: "src", Value: []byte(src)}}})
		}
		require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr(), src)
		cl.Close()
	}
	// sarama, every codec.
	for ci, codec := range []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP, sarama.CompressionSnappy, sarama.CompressionLZ4, sarama.CompressionZSTD} {
		src := "sarama-" + codecNames[ci]
		cfg := saramaConfig(t)
		cfg.Producer.Compression = codec
		cfg.Producer.Flush.Messages = 50
		cfg.Producer.Flush.Frequency = 5 * time.Millisecond
		prod, err := sarama.NewAsyncProducer([]string{e.addr}, cfg)
		require.NoError(t, err)
		for i := range perCodec {
			r := compressRecord(src, i)
			want[r.key] = r
			prod.Input() <- &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(r.key), Value: sarama.StringEncoder(r.value),
				Headers: []sarama.RecordHeader{{Key: []byte("src"), Value: []byte(src)}}}
		}
		for range perCodec {
			select {
			case <-prod.Successes():
			case err := <-prod.Errors():
				t.Fatalf("%s: %v", src, err)
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
		require.NoError(t, prod.Close())
	}
	// kcat (librdkafka), every codec.
	for _, name := range codecNames {
		if kcat == "" {
			break
		}
		src := "kcat-" + name
		var in strings.Builder
		for i := range perCodec {
			r := compressRecord(src, i)
			want[r.key] = r
			fmt.Fprintf(&in, "%s|%s\n", r.key, r.value)
		}
		runTool(t, 60*time.Second, []byte(in.String()), kcat, kcatArgs(e.addr,
			"-P", "-t", topic, "-K", "|", "-H", "src="+src, "-z", name,
			"-X", "acks=all", "-X", "linger.ms=5")...)
	}
	// A topic with no rule keeps the client's codec.
	snappy := e2eClient(t, e, kgo.DefaultProduceTopic(plain), kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	require.NoError(t, snappy.ProduceSync(ctx, &kgo.Record{Value: []byte(strings.Repeat("snappy stays snappy ", 50))}).FirstErr())

	// The broker holds zstd batches only.
	byCodec, control, _ := storedBatches(ctx, t, e, topic, partitions)
	assert.Zero(t, control)
	for c, n := range byCodec {
		assert.Equal(t, protocol.CodecZstd, c, "%d stored batches are %s", n, c)
	}
	assert.Positive(t, byCodec[protocol.CodecZstd])
	plainCodecs, _, _ := storedBatches(ctx, t, e, plain, 1)
	assert.Equal(t, map[protocol.Codec]int{protocol.CodecSnappy: 1}, plainCodecs, "a topic without a rule is left alone")

	// Every source codec was rewritten, and the metrics say so.
	for _, from := range []string{"none", "gzip", "snappy", "lz4"} {
		assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_recompressed_batches_total", "from", from), "batches recompressed from %s", from)
	}
	before := proxyCounter(t, e, "pipemesh_kafka_recompression_bytes_total", "stage", "before")
	after := proxyCounter(t, e, "pipemesh_kafka_recompression_bytes_total", "stage", "after")
	t.Logf("recompressed %d bytes of batches into %d (ratio %.2f)", int(before), int(after), before/after)
	assert.Positive(t, after)
	assert.InDelta(t, before/after, proxyCounter(t, e, "pipemesh_kafka_recompression_ratio", "topic", topic), 0.001)

	total := len(want)
	// kgo consumer.
	kgoSink := newTextSink(want)
	cons := e2eClient(t, e, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for kgoSink.count() < total && ctx.Err() == nil {
		fs := cons.PollFetches(ctx)
		fs.EachError(func(tp string, p int32, err error) { t.Errorf("kgo fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			src := ""
			for _, h := range r.Headers {
				if h.Key == "src" {
					src = string(h.Value)
				}
			}
			kgoSink.add(string(r.Key), string(r.Value), src)
		})
	}
	kgoSink.check(t, "kgo")

	// sarama consumer.
	sc, err := sarama.NewConsumer([]string{e.addr}, saramaConfig(t))
	require.NoError(t, err)
	defer sc.Close()
	saramaSink := newTextSink(want)
	for p := range int32(partitions) {
		pc, err := sc.ConsumePartition(topic, p, sarama.OffsetOldest)
		require.NoError(t, err)
		go func() {
			for m := range pc.Messages() {
				src := ""
				for _, h := range m.Headers {
					if string(h.Key) == "src" {
						src = string(h.Value)
					}
				}
				saramaSink.add(string(m.Key), string(m.Value), src)
			}
		}()
		defer pc.AsyncClose()
	}
	require.Eventually(t, func() bool { return saramaSink.count() >= total }, time.Minute, 20*time.Millisecond, "sarama consumed %d of %d", saramaSink.count(), total)
	saramaSink.check(t, "sarama")

	// kcat consumer.
	if kcat == "" {
		e2eNoProtocolErrors(t, e)
		return
	}
	out := runTool(t, 90*time.Second, nil, kcat, kcatArgs(e.addr,
		"-C", "-t", topic, "-o", "beginning", "-c", fmt.Sprint(total), "-f", "%k\t%s\t%h\n")...)
	kcatSink := newTextSink(want)
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		parts := strings.Split(line, "\t")
		require.Len(t, parts, 3, "kcat line %q", line)
		kcatSink.add(parts[0], parts[1], strings.TrimPrefix(parts[2], "src="))
	}
	kcatSink.check(t, "kcat")
	e2eNoProtocolErrors(t, e)
}

// TestCompressionTransactionsAndIdempotence: a transactional kgo producer
// (lz4) commits some transactions and aborts others, and an idempotent
// sarama producer (gzip) sends on the side, all to a zstd-rule topic. Both
// succeed (their sequence numbers are per batch and kept); a read_committed
// consumer sees each committed record once and no aborted one; the broker
// holds zstd batches with the transactional bit kept, and the transaction
// markers untouched.
func TestCompressionTransactionsAndIdempotence(t *testing.T) {
	const (
		topic      = "logs.txn"
		partitions = 2
		txns       = 6
		perTxn     = 200
	)
	e := startEnv(t, withTopic(topic, partitions), withCompression(zstdLogsRule))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	prod := e2eClient(t, e, kgo.TransactionalID("pipemesh-compress-txn"), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	committed := map[string]textRecord{}
	for b := range txns {
		commit := b%3 != 1
		require.NoError(t, prod.BeginTransaction())
		var recs []*kgo.Record
		for i := range perTxn {
			r := compressRecord(fmt.Sprintf("txn%d", b), i)
			if commit {
				committed[r.key] = r
			}
			recs = append(recs, &kgo.Record{Key: []byte(r.key), Value: []byte(r.value), Headers: []kgo.RecordHeader{{Key: "src", Value: []byte(r.src)}}})
		}
		require.NoError(t, prod.ProduceSync(ctx, recs...).FirstErr())
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		require.NoError(t, prod.EndTransaction(ctx, end))
	}

	cfg := saramaConfig(t)
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Retry.Max = 3 // idempotence requires retries; the broker dedups them
	cfg.Producer.Compression = sarama.CompressionGZIP
	sp, err := sarama.NewSyncProducer([]string{e.addr}, cfg)
	require.NoError(t, err)
	var msgs []*sarama.ProducerMessage
	for i := range 500 {
		r := compressRecord("idem", i)
		committed[r.key] = r
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(r.key), Value: sarama.StringEncoder(r.value),
			Headers: []sarama.RecordHeader{{Key: []byte("src"), Value: []byte(r.src)}}})
	}
	require.NoError(t, sp.SendMessages(msgs))
	require.NoError(t, sp.Close())

	byCodec, control, txnBatches := storedBatches(ctx, t, e, topic, partitions)
	assert.Equal(t, []protocol.Codec{protocol.CodecZstd}, compressMapKeys(byCodec), "stored codecs")
	assert.Positive(t, control, "transaction markers")
	assert.Positive(t, txnBatches, "batches with the transactional bit")

	sink := newTextSink(committed)
	var got atomic.Int64
	rc := e2eClient(t, e, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	for sink.count() < len(committed) && ctx.Err() == nil {
		fs := rc.PollFetches(ctx)
		fs.EachError(func(tp string, p int32, err error) { t.Errorf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			got.Add(1)
			sink.add(string(r.Key), string(r.Value), string(r.Headers[0].Value))
		})
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	fs := rc.PollFetches(short)
	cancelShort()
	assert.Zero(t, fs.NumRecords(), "records past the committed ones")
	sink.check(t, "read_committed kgo")
	assert.Equal(t, int64(len(committed)), got.Load(), "no duplicates")
	e2eNoProtocolErrors(t, e)
}

func compressMapKeys[K comparable, V any](m map[K]V) []K {
	var out []K
	for k := range m {
		out = append(out, k)
	}
	return out
}
