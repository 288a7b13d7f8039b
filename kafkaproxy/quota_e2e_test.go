package kafkaproxy_test

// End-to-end tests of quotas: throttle_time_ms in responses, clients that
// see it (kgo's throttle hook, sarama's throttle metric), a rate held to its
// quota while an unlimited client on the same proxy is not throttled at all,
// and nothing accepted lost.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/kafkaproxy"
)

func withQuotas(rules ...kafkaproxy.QuotaRule) envOpt {
	return withProxyConfig(func(c *kafkaproxy.Config) { c.Quotas = append(c.Quotas, rules...) })
}

// throttleHook counts the throttles kgo reports (KIP-219 throttle_time_ms).
type throttleHook struct {
	n     atomic.Int64
	total atomic.Int64 // milliseconds
}

func (h *throttleHook) OnBrokerThrottle(_ kgo.BrokerMetadata, d time.Duration, _ bool) {
	h.n.Add(1)
	h.total.Add(d.Milliseconds())
}

var _ kgo.HookBrokerThrottle = (*throttleHook)(nil)

// timedProducer produces records of valueBytes to topic as fast as kgo lets
// it for d, or until maxBytes are acknowledged, and reports the keys and
// bytes acknowledged within d.
type timedProducer struct {
	cl    *kgo.Client
	hook  *throttleHook
	mu    sync.Mutex
	acked map[string]int // key -> times acknowledged
	bytes atomic.Int64   // acknowledged within the window
	late  atomic.Int64   // acknowledged after it
	errs  atomic.Int64
}

func newTimedProducer(t *testing.T, e *env, topic string) *timedProducer {
	tp := &timedProducer{hook: &throttleHook{}, acked: map[string]int{}}
	// Uncompressed, so that bytes on the wire (what quotas count, as in
	// Kafka) are the bytes produced.
	tp.cl = e2eClient(t, e, kgo.DefaultProduceTopic(topic), kgo.WithHooks(tp.hook), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.MaxBufferedBytes(2<<20), kgo.ProducerBatchMaxBytes(256<<10), kgo.ProducerLinger(time.Millisecond))
	return tp
}

func (tp *timedProducer) run(ctx context.Context, name string, valueBytes int, d time.Duration, maxBytes int64) {
	value := []byte(strings.Repeat("q", valueBytes))
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end) && tp.bytes.Load() < maxBytes && ctx.Err() == nil; i++ {
		key := fmt.Sprintf("%s-%07d", name, i)
		tp.cl.Produce(ctx, &kgo.Record{Key: []byte(key), Value: value}, func(r *kgo.Record, err error) {
			if err != nil {
				tp.errs.Add(1)
				return
			}
			tp.mu.Lock()
			tp.acked[string(r.Key)]++
			tp.mu.Unlock()
			n := int64(len(r.Key) + len(r.Value))
			if time.Now().Before(end) {
				tp.bytes.Add(n)
			} else {
				tp.late.Add(n)
			}
		})
	}
	_ = tp.cl.Flush(ctx)
}

// consumeKeys reads topic from the start through the proxy until it has n
// records, and returns how often each key came.
func quotaConsumeKeys(ctx context.Context, t *testing.T, e *env, topic string, n int) map[string]int {
	t.Helper()
	cl := e2eClient(t, e, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]int{}
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consumed %d of %d from %s", got, n, topic)
		fs.EachError(func(tp string, p int32, err error) { t.Errorf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Key)]++; got++ })
	}
	return seen
}

// TestQuotaProduceHeldWhileOthersRun: a producer to topics under a 2 MiB/s
// produce quota gets at most about 2 MiB/s over 10 s, and kgo sees the
// throttle; a producer on the same proxy to a topic without a quota is
// never throttled and gets further. Every acknowledged record of both is
// stored exactly once.
func TestQuotaProduceHeldWhileOthersRun(t *testing.T) {
	const (
		quota  = 2 << 20
		window = 10 * time.Second
	)
	e := startEnv(t, withTopic("limited.t", 1), withTopic("free.t", 1),
		withQuotas(kafkaproxy.QuotaRule{Principal: "User:*", Topic: "limited.", Prefixed: true, ProduceBytesPerSecond: quota}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	limited := newTimedProducer(t, e, "limited.t")
	free := newTimedProducer(t, e, "free.t")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); limited.run(ctx, "limited", 8<<10, window, 1<<40) }()
	go func() { defer wg.Done(); free.run(ctx, "free", 8<<10, window, 48<<20) }()
	wg.Wait()

	got := limited.bytes.Load()
	rate := float64(got) / window.Seconds()
	t.Logf("limited: %.2f MiB/s over %s (quota %.2f MiB/s), %d throttles totalling %d ms; free: %.2f MiB acknowledged, %d throttles",
		rate/(1<<20), window, float64(quota)/(1<<20), limited.hook.n.Load(), limited.hook.total.Load(), float64(free.bytes.Load())/(1<<20), free.hook.n.Load())
	// The quota allows one second of burst on top of the rate, and a
	// request or two in flight when the window closes; 30% covers that.
	assert.LessOrEqual(t, float64(got), 1.3*quota*window.Seconds(), "bytes acknowledged to the limited producer in %s", window)
	assert.Positive(t, limited.hook.n.Load(), "kgo's throttle hook fired for the limited producer")
	assert.Zero(t, free.hook.n.Load(), "the producer without a quota was never throttled")
	assert.Greater(t, free.bytes.Load(), got, "the producer without a quota got further than the limited one")
	assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_throttle_seconds_total", "quota", "produce"))
	assert.Zero(t, limited.errs.Load()+free.errs.Load(), "produce errors")

	for _, tp := range []struct {
		p     *timedProducer
		topic string
	}{{limited, "limited.t"}, {free, "free.t"}} {
		tp.p.mu.Lock()
		acked := tp.p.acked
		tp.p.mu.Unlock()
		seen := quotaConsumeKeys(ctx, t, e, tp.topic, len(acked))
		assert.Len(t, seen, len(acked), "%s: records stored vs acknowledged", tp.topic)
		for k, n := range seen {
			assert.Equal(t, 1, n, "%s: key %s stored %d times", tp.topic, k, n)
			assert.Equal(t, 1, acked[k], "%s: key %s stored but acknowledged %d times", tp.topic, k, acked[k])
		}
	}
	e2eNoProtocolErrors(t, e)
}

// saramaThrottleMs sums sarama's throttle-time-in-ms histograms (sarama
// keeps one per broker).
func saramaThrottleMs(reg metrics.Registry) (count, sum int64) {
	reg.Each(func(name string, m any) {
		if h, ok := m.(metrics.Histogram); ok && strings.HasPrefix(name, "throttle-time-in-ms") {
			count += h.Count()
			sum += h.Sum()
		}
	})
	return count, sum
}

// TestQuotaSaramaSeesThrottle: sarama producing to and consuming from a
// topic under produce and fetch quotas gets throttle_time_ms in Produce and
// Fetch responses (its throttle-time-in-ms metric), and every record
// arrives once, byte for byte.
func TestQuotaSaramaSeesThrottle(t *testing.T) {
	const (
		topic = "slow.t"
		n     = 40
	)
	e := startEnv(t, withTopic(topic, 1), withQuotas(kafkaproxy.QuotaRule{
		Principal: "User:*", Topic: "slow.", Prefixed: true, ProduceBytesPerSecond: 512 << 10, FetchBytesPerSecond: 512 << 10,
	}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	pcfg := saramaConfig(t)
	pcfg.MetricRegistry = metrics.NewRegistry()
	prod, err := sarama.NewSyncProducer([]string{e.addr}, pcfg)
	require.NoError(t, err)
	want := map[string][]byte{}
	for i := range n {
		key, value, _ := saramaRecord("slow", i)
		value = append(value, make([]byte, 48<<10)...) // ~50 KB each, 2 MB in all
		want[string(key)] = value
		_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(value)})
		require.NoError(t, err)
	}
	count, sum := saramaThrottleMs(pcfg.MetricRegistry) // before Close, which drops broker metrics
	require.NoError(t, prod.Close())
	t.Logf("sarama producer: %d throttled responses, %d ms; proxy: %.1f s of produce throttle over %v responses, %v unannounced", count, sum,
		proxyCounter(t, e, "pipemesh_kafka_throttle_seconds_total", "quota", "produce"),
		proxyCounter(t, e, "pipemesh_kafka_throttled_responses_total", "", ""),
		proxyCounter(t, e, "pipemesh_kafka_throttle_unannounced_total", "", ""))
	assert.Positive(t, count, "sarama saw throttle_time_ms on Produce responses")

	ccfg := saramaConfig(t)
	ccfg.MetricRegistry = metrics.NewRegistry()
	ccfg.Consumer.Fetch.Default = 256 << 10
	cons, err := sarama.NewConsumer([]string{e.addr}, ccfg)
	require.NoError(t, err)
	defer cons.Close()
	pc, err := cons.ConsumePartition(topic, 0, sarama.OffsetOldest)
	require.NoError(t, err)
	defer pc.AsyncClose()
	seen := map[string]int{}
	for len(seen) < n {
		select {
		case m := <-pc.Messages():
			seen[string(m.Key)]++
			assert.Equal(t, want[string(m.Key)], m.Value, "value of %q", m.Key)
		case err := <-pc.Errors():
			t.Fatalf("consume: %v", err)
		case <-ctx.Done():
			t.Fatalf("consumed %d of %d: %v", len(seen), n, ctx.Err())
		}
	}
	for k, c := range seen {
		assert.Equal(t, 1, c, "key %q", k)
	}
	count, sum = saramaThrottleMs(ccfg.MetricRegistry)
	t.Logf("sarama consumer: %d throttled responses, %d ms", count, sum)
	assert.Positive(t, count, "sarama saw throttle_time_ms on Fetch responses")
	assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_throttle_seconds_total", "quota", "fetch"))
	e2eNoProtocolErrors(t, e)
}

// TestQuotaRequestRate: a principal-wide request quota throttles a client
// that sends many small requests; kgo sees the throttle and every request
// is answered.
func TestQuotaRequestRate(t *testing.T) {
	e := startEnv(t, withTopic("rr", 1), withQuotas(kafkaproxy.QuotaRule{Principal: "User:*", RequestsPerSecond: 20}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hook := &throttleHook{}
	cl := e2eClient(t, e, kgo.DefaultProduceTopic("rr"), kgo.WithHooks(hook))
	for i := range 60 {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "r%d", i)}).FirstErr())
	}
	assert.Positive(t, hook.n.Load(), "kgo's throttle hook fired")
	assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_throttle_seconds_total", "quota", "request"))
	seen := quotaConsumeKeys(ctx, t, e, "rr", 60)
	assert.Equal(t, 60, seen[""], "every record stored once")
}

// TestQuotaAcksZero: Produce with acks=0 has no response to carry a
// throttle, so the proxy pauses the connection at once; every record still
// reaches the broker, in order.
func TestQuotaAcksZero(t *testing.T) {
	const n = 200
	e := startEnv(t, withTopic("fire", 1), withQuotas(kafkaproxy.QuotaRule{Principal: "User:*", ProduceBytesPerSecond: 256 << 10}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := e2eClient(t, e, kgo.DefaultProduceTopic("fire"), kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite(),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerLinger(0))
	value := make([]byte, 8<<10)
	for i := range n {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Key: fmt.Appendf(nil, "%05d", i), Value: value}).FirstErr())
	}
	require.NoError(t, cl.Flush(ctx)) // written to the socket: the proxy may not have read it yet
	cons := e2eClient(t, e, kgo.ConsumeTopics("fire"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	next := 0
	for next < n {
		fs := cons.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consumed %d of %d", next, n)
		fs.EachRecord(func(r *kgo.Record) {
			assert.Equal(t, fmt.Sprintf("%05d", next), string(r.Key), "records in order, none lost")
			next++
		})
	}
	assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_throttle_pauses_total", "", ""), "the proxy paused the acks=0 producer")
}
