package kafkaproxy_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/lineage"
)

// recorder is a lineage.Observer that sums what it is given per edge.
type recorder struct {
	mu    sync.Mutex
	edges map[string]*recordedEdge
}

type recordedEdge struct {
	bytes, records, batches, requests, errors int64
	clients                                   map[lineage.Client]bool
}

func newRecorder() *recorder { return &recorder{edges: make(map[string]*recordedEdge)} }

func edgeName(from, to lineage.NodeRef, typ lineage.EdgeType) string {
	return from.ID() + " -" + string(typ) + "-> " + to.ID()
}

func (r *recorder) Observe(obs []lineage.Observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range obs {
		k := edgeName(o.From, o.To, o.Type)
		e := r.edges[k]
		if e == nil {
			e = &recordedEdge{clients: make(map[lineage.Client]bool)}
			r.edges[k] = e
		}
		e.bytes += o.Bytes
		e.records += o.Records
		e.batches += o.Batches
		e.requests += o.Requests
		e.errors += o.Errors
		e.clients[o.Client] = true
	}
}

func (r *recorder) edge(k string) recordedEdge {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.edges[k]; e != nil {
		c := *e
		c.clients = maps.Clone(e.clients)
		return c
	}
	return recordedEdge{}
}

func (r *recorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k := range r.edges {
		out = append(out, k)
	}
	return out
}

func withLineage(r *recorder) envOpt {
	return withProxyConfig(func(c *kafkaproxy.Config) {
		c.Telemetry.Lineage = r
		c.Telemetry.FlushInterval = 50 * time.Millisecond
	})
}

func app(name string) lineage.NodeRef { return lineage.NodeRef{Type: lineage.Application, Name: name} }
func topicRef(name string) lineage.NodeRef {
	return lineage.NodeRef{Type: lineage.Topic, Name: name}
}
func groupRef(name string) lineage.NodeRef { return lineage.NodeRef{Type: lineage.Group, Name: name} }

// waitEdge flushes the proxy until edge k has counted records, and returns
// it. Responses are counted after their last byte reaches the client, so
// the client may be done a moment before the proxy is.
func waitEdge(t *testing.T, e *env, r *recorder, k string, records int64) recordedEdge {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.proxy.Flush()
		got := r.edge(k)
		if got.records >= records || time.Now().After(deadline) {
			require.Equal(t, records, got.records, "records on %s; edges seen: %v", k, r.names())
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// batchBytes counts what kgo says it wrote and read: batches and their
// bytes on the wire (records plus the 61-byte batch header).
type batchBytes struct {
	prodBatches, prodBytes, fetchBatches, fetchBytes atomic.Int64
}

func (h *batchBytes) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	h.prodBatches.Add(1)
	h.prodBytes.Add(int64(m.CompressedBytes) + 61)
}

func (h *batchBytes) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.fetchBatches.Add(1)
	h.fetchBytes.Add(int64(m.CompressedBytes) + 61)
}

// TestObserveKgo produces small and large records (the large ones stream
// through cut-through in both directions) with kgo and consumes them in a
// consumer group: the produce and consume edges count every record, batch
// and byte that kgo wrote and read, the consumer's fetches are joined to its
// group, the KIP-511 software name is kept, and the Prometheus counters
// agree.
func TestObserveKgo(t *testing.T) {
	const topic = "obs-orders"
	rec := newRecorder()
	e := startEnv(t, withTopic(topic, 3), withLineage(rec))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	hook := &batchBytes{}
	prod := e2eClient(t, e, kgo.ClientID("orders-service"), kgo.WithHooks(hook), kgo.ProducerLinger(0))
	const small, large = 300, 6
	for i := range small + large {
		v := bytes.Repeat([]byte{byte(i)}, 100)
		if i >= small {
			v = bytes.Repeat([]byte{byte(i)}, 200<<10) // > the 64 KiB streaming head
		}
		require.NoError(t, prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: v}).FirstErr())
	}
	const n = small + large

	cons := e2eClient(t, e, kgo.ClientID("billing-service"), kgo.WithHooks(hook),
		kgo.ConsumerGroup("billing"), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := 0
	for seen < n {
		fs := cons.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consumed %d of %d", seen, n)
		fs.EachError(func(_ string, _ int32, err error) { t.Logf("fetch error: %v", err) })
		seen += fs.NumRecords()
	}
	require.Equal(t, n, seen)

	pe := waitEdge(t, e, rec, edgeName(app("orders-service"), topicRef(topic), lineage.Produces), n)
	assert.Equal(t, hook.prodBatches.Load(), pe.batches, "produced batches")
	assert.Equal(t, hook.prodBytes.Load(), pe.bytes, "produced bytes")
	assert.Zero(t, pe.errors)
	assert.GreaterOrEqual(t, pe.requests, int64(n)) // ProduceSync: one request per record

	ce := waitEdge(t, e, rec, edgeName(topicRef(topic), groupRef("billing"), lineage.Consumes), n)
	assert.Equal(t, hook.fetchBatches.Load(), ce.batches, "fetched batches")
	assert.Equal(t, hook.fetchBytes.Load(), ce.bytes, "fetched bytes")
	for c := range ce.clients {
		assert.Equal(t, "billing-service", c.ClientID)
		assert.Equal(t, "User:ANONYMOUS", c.Principal)
		assert.True(t, strings.HasPrefix(c.Software, "kgo"), "client software %q", c.Software)
		assert.Equal(t, "127.0.0.1", c.Host)
	}
	assert.Zero(t, rec.edge(edgeName(topicRef(topic), app("billing-service"), lineage.Consumes)).records,
		"no fetch of the group member may go unjoined")

	assert.Equal(t, float64(n), proxyLabeled(t, e, "pipemesh_kafka_records_total", map[string]string{"direction": "produce", "topic": topic}))
	assert.Equal(t, float64(n), proxyLabeled(t, e, "pipemesh_kafka_records_total", map[string]string{"direction": "consume", "topic": topic}))
	assert.Equal(t, float64(hook.prodBytes.Load()), proxyLabeled(t, e, "pipemesh_kafka_bytes_total", map[string]string{"direction": "produce", "topic": topic}))
	assert.Equal(t, float64(n), proxyLabeled(t, e, "pipemesh_kafka_client_records_total",
		map[string]string{"direction": "consume", "client_id": "billing-service", "group": "billing", "principal": "User:ANONYMOUS"}))
	assert.Positive(t, proxyHistogramCount(t, e, "pipemesh_kafka_request_duration_seconds", map[string]string{"api": "Produce", "scope": "total"}))
	assert.Positive(t, proxyHistogramCount(t, e, "pipemesh_kafka_request_duration_seconds", map[string]string{"api": "Fetch", "scope": "upstream"}))
	assert.Zero(t, proxyCounter(t, e, "pipemesh_kafka_observe_errors_total", "", ""))
	e2eNoProtocolErrors(t, e)
}

// TestObserveNoGroup: a consumer that assigns partitions itself, with no
// group, reads into its own application node.
func TestObserveNoGroup(t *testing.T) {
	const topic = "obs-nogroup"
	rec := newRecorder()
	e := startEnv(t, withTopic(topic, 2), withLineage(rec))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod := e2eClient(t, e, kgo.ClientID("writer"))
	const n = 50
	for range n {
		prod.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte("v")}, nil)
	}
	require.NoError(t, prod.Flush(ctx))
	cons := e2eClient(t, e, kgo.ClientID("reader"), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for seen := 0; seen < n; {
		fs := cons.PollFetches(ctx)
		require.NoError(t, ctx.Err())
		seen += fs.NumRecords()
	}
	waitEdge(t, e, rec, edgeName(app("writer"), topicRef(topic), lineage.Produces), n)
	waitEdge(t, e, rec, edgeName(topicRef(topic), app("reader"), lineage.Consumes), n)
}

// TestObserveTelemetryOff: with telemetry disabled nothing is observed and
// the per-topic metrics are not registered, while traffic flows as before.
func TestObserveTelemetryOff(t *testing.T) {
	const topic = "obs-off"
	rec := newRecorder()
	e := startEnv(t, withTopic(topic, 1), withProxyConfig(func(c *kafkaproxy.Config) {
		c.Telemetry.Disabled = true
		c.Telemetry.Lineage = rec
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod := e2eClient(t, e, kgo.ClientID("writer"))
	require.NoError(t, prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("v")}).FirstErr())
	e.proxy.Flush()
	assert.Empty(t, rec.names())
	mfs, err := e.registry.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		assert.NotEqual(t, "pipemesh_kafka_records_total", mf.GetName())
	}
}

// TestObserveSaramaGroup: sarama's producer and consumer group, joined to
// the group by the coordinator requests sarama sends.
func TestObserveSaramaGroup(t *testing.T) {
	const topic = "obs-sarama"
	rec := newRecorder()
	e := startEnv(t, withTopic(topic, 3), withLineage(rec))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cfg := saramaConfig(t)
	cfg.ClientID = "sarama-orders"
	sp, err := sarama.NewSyncProducer([]string{e.addr}, cfg)
	require.NoError(t, err)
	const n = 200
	want := make(map[string]saramaWant, n)
	var msgs []*sarama.ProducerMessage
	for i := range n {
		k, v, h := saramaRecord("obs", i)
		want[string(k)] = saramaWant{v, h}
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(k), Value: sarama.ByteEncoder(v), Headers: h})
	}
	require.NoError(t, sp.SendMessages(msgs))
	require.NoError(t, sp.Close())

	ccfg := saramaConfig(t)
	ccfg.ClientID = "sarama-billing"
	cg, err := sarama.NewConsumerGroup([]string{e.addr}, "sarama-group", ccfg)
	require.NoError(t, err)
	defer cg.Close()
	col := &saramaCollector{want: want, seen: make(map[string]int), all: make(chan struct{})}
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		for cctx.Err() == nil {
			if err := cg.Consume(cctx, []string{topic}, col); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case <-col.all:
	case <-ctx.Done():
		t.Fatal("sarama consumer group did not read every record")
	}
	waitEdge(t, e, rec, edgeName(app("sarama-orders"), topicRef(topic), lineage.Produces), n)
	ce := waitEdge(t, e, rec, edgeName(topicRef(topic), groupRef("sarama-group"), lineage.Consumes), n)
	for c := range ce.clients {
		assert.Equal(t, "sarama-billing", c.ClientID)
	}
	ccancel()
	require.NoError(t, <-done)
}

// TestObserveKcatGroup: kcat (librdkafka) produces, then consumes in a
// balanced consumer group (-G); the fetches are joined to the group.
func TestObserveKcatGroup(t *testing.T) {
	kcat := externalTool(t, "kcat")
	const topic = "obs-kcat"
	rec := newRecorder()
	e := startEnv(t, withTopic(topic, 2), withLineage(rec))
	const n = 100
	var in bytes.Buffer
	for i := range n {
		fmt.Fprintf(&in, "record-%03d\n", i)
	}
	runTool(t, 60*time.Second, in.Bytes(), kcat, kcatArgs(e.addr, "-P", "-t", topic, "-X", "client.id=kcat-writer")...)
	out := runTool(t, 60*time.Second, nil, kcat, kcatArgs(e.addr, "-G", "kcat-group", "-X", "client.id=kcat-reader",
		"-X", "auto.offset.reset=earliest", "-c", fmt.Sprint(n), "-f", "%s\n", topic)...)
	require.Len(t, strings.Split(strings.TrimSpace(string(out)), "\n"), n)
	waitEdge(t, e, rec, edgeName(app("kcat-writer"), topicRef(topic), lineage.Produces), n)
	ce := waitEdge(t, e, rec, edgeName(topicRef(topic), groupRef("kcat-group"), lineage.Consumes), n)
	for c := range ce.clients {
		assert.True(t, strings.HasPrefix(c.Software, "librdkafka"), "client software %q", c.Software)
	}
}

// proxyLabeled sums a metric's series whose labels include all of want.
func proxyLabeled(t testing.TB, e *env, metric string, want map[string]string) float64 {
	t.Helper()
	var sum float64
	for _, m := range proxySeries(t, e, metric, want) {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

func proxyHistogramCount(t testing.TB, e *env, metric string, want map[string]string) uint64 {
	t.Helper()
	var n uint64
	for _, m := range proxySeries(t, e, metric, want) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// TestObserveKgoKIP848: a consumer group on the KIP-848 protocol names its
// group only in ConsumerGroupHeartbeat; its fetches are joined to it.
func TestObserveKgoKIP848(t *testing.T) {
	const topic = "obs-848"
	rec := newRecorder()
	e := startEnv(t, withTopic(topic, 2), withLineage(rec),
		e2eWithBrokerOptions(kfake.BrokerConfigs(map[string]string{"group.consumer.heartbeat.interval.ms": "200"})))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod := e2eClient(t, e, kgo.ClientID("writer-848"))
	const n = 100
	for i := range n {
		prod.Produce(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "%d", i)}, nil)
	}
	require.NoError(t, prod.Flush(ctx))
	cons := e2eClient(t, e, kgo.ClientID("reader-848"), kgo.ConsumerGroup("g-848"), kgo.ServerSideBalancer(),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for seen := 0; seen < n; {
		fs := cons.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consumed %d of %d", seen, n)
		seen += fs.NumRecords()
	}
	assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_requests_total", "api", "ConsumerGroupHeartbeat"), "the group ran on KIP-848")
	waitEdge(t, e, rec, edgeName(topicRef(topic), groupRef("g-848"), lineage.Consumes), n)
}
