package kafkaproxy_test

// End-to-end tests with the franz-go client (kgo) talking only to the proxy:
// every codec, transactions with read_committed, KIP-848 consumer groups,
// and partition leaders moving under a running producer and consumer.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// e2eClient is a kgo client bootstrapped at the proxy only, closed with t.
func e2eClient(t testing.TB, e *env, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.addr)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// e2eWant is what was produced for one key.
type e2eWant struct {
	value   []byte
	headers []kgo.RecordHeader
}

// e2eRecord builds record i of a run: a unique key, a value of 0 to ~160
// bytes whose content varies with i (repetitive text, random bytes, mixed,
// long runs, sometimes empty), and one or two headers, one of them binary.
func e2eRecord(prefix string, i int) (*kgo.Record, e2eWant) {
	r := rand.New(rand.NewPCG(uint64(i), 0x9e3779b97f4a7c15))
	var v []byte
	n := r.IntN(160)
	switch i % 5 {
	case 0: // repetitive text: compresses well
		for len(v) < n {
			v = fmt.Appendf(v, "order=%d status=shipped;", i%1000)
		}
		v = v[:n]
	case 1: // random bytes, zero and high bytes included
		v = make([]byte, n)
		for j := range v {
			v[j] = byte(r.Uint32())
		}
	case 2: // half text, half random
		v = fmt.Appendf(v, "{\"id\":%d,\"blob\":\"", i)
		for range n / 2 {
			v = append(v, byte(r.Uint32()))
		}
		v = append(v, "\"}"...)
	case 3: // a long run of one byte
		v = bytes.Repeat([]byte{byte(i)}, n)
	case 4:
		if i%10 == 4 {
			v = []byte{} // empty value
		} else {
			v = []byte(strconv.Itoa(i))
		}
	}
	h := []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}}
	if i%3 != 0 {
		trace := make([]byte, 8+i%9)
		for j := range trace {
			trace[j] = byte(r.Uint32())
		}
		h = append(h, kgo.RecordHeader{Key: "trace-bin", Value: trace})
	}
	key := []byte(fmt.Sprintf("%s-%07d", prefix, i))
	return &kgo.Record{Key: key, Value: v, Headers: h}, e2eWant{value: v, headers: h}
}

// e2eSink checks consumed records against what was produced: every record
// must be one that was produced, identical byte for byte (key, value,
// headers), and seen once.
type e2eSink struct {
	mu         sync.Mutex
	want       map[string]e2eWant
	seen       map[string]int
	byPart     map[int32][]int64 // offsets seen, per partition
	got        int
	dups       int
	unexpected int
	mismatched int
	problems   []string // the first few, for the failure message
}

func newE2ESink(want map[string]e2eWant) *e2eSink {
	return &e2eSink{want: want, seen: make(map[string]int, len(want)), byPart: make(map[int32][]int64)}
}

func (s *e2eSink) problem(format string, args ...any) {
	if len(s.problems) < 10 {
		s.problems = append(s.problems, fmt.Sprintf(format, args...))
	}
}

func (s *e2eSink) add(r *kgo.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := string(r.Key)
	s.got++
	s.byPart[r.Partition] = append(s.byPart[r.Partition], r.Offset)
	s.seen[k]++
	if s.seen[k] > 1 {
		s.dups++
		s.problem("duplicate %q at partition %d offset %d", k, r.Partition, r.Offset)
		return
	}
	w, ok := s.want[k]
	if !ok {
		s.unexpected++
		s.problem("record %q at partition %d offset %d was never produced", k, r.Partition, r.Offset)
		return
	}
	if !bytes.Equal(w.value, r.Value) {
		s.mismatched++
		s.problem("value of %q: got %d bytes %x, want %d bytes %x", k, len(r.Value), e2eHead(r.Value), len(w.value), e2eHead(w.value))
		return
	}
	if !e2eHeadersEqual(w.headers, r.Headers) {
		s.mismatched++
		s.problem("headers of %q: got %v, want %v", k, r.Headers, w.headers)
	}
}

func e2eHead(b []byte) []byte { return b[:min(len(b), 24)] }

func e2eHeadersEqual(a, b []kgo.RecordHeader) bool {
	return slices.EqualFunc(a, b, func(x, y kgo.RecordHeader) bool {
		return x.Key == y.Key && bytes.Equal(x.Value, y.Value)
	})
}

func (s *e2eSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

// check asserts that every wanted record was seen exactly once and nothing
// else was seen.
func (s *e2eSink) check(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var missing []string
	for k := range s.want {
		if s.seen[k] == 0 {
			missing = append(missing, k)
		}
	}
	slices.Sort(missing)
	assert.Zero(t, s.dups, "duplicates; first problems: %v", s.problems)
	assert.Zero(t, s.unexpected, "records never produced; first problems: %v", s.problems)
	assert.Zero(t, s.mismatched, "records that differ from what was produced; first problems: %v", s.problems)
	assert.Empty(t, missing[:min(len(missing), 10)], "%d of %d records never arrived", len(missing), len(s.want))
	assert.Equal(t, len(s.want), s.got, "records consumed")
}

// checkOffsets asserts that each partition's records came in offset order
// with no offset twice, and returns the count per partition.
func (s *e2eSink) checkOffsets(t testing.TB) map[int32]int64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int32]int64, len(s.byPart))
	for p, offs := range s.byPart {
		assert.True(t, slices.IsSorted(offs), "partition %d offsets out of order", p)
		assert.Len(t, slices.Compact(slices.Clone(offs)), len(offs), "partition %d has an offset twice", p)
		out[p] = int64(len(offs))
	}
	return out
}

// e2eConsume polls cl into sink until it holds n records or ctx ends. Fetch
// errors fail the test.
func e2eConsume(ctx context.Context, t testing.TB, cl *kgo.Client, sink *e2eSink, n int) {
	t.Helper()
	for sink.count() < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before %v", sink.count(), n, ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Errorf("fetch error on %s/%d: %v", topic, p, err)
		})
		fs.EachRecord(sink.add)
	}
}

// e2eEndOffsets asks the partition leaders, through the proxy, for the end
// offset of every partition of topic.
func e2eEndOffsets(ctx context.Context, t testing.TB, cl *kgo.Client, topic string, partitions int32) map[int32]int64 {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for p := range partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = -1 // latest
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	out := make(map[int32]int64)
	for _, shard := range cl.RequestSharded(ctx, req) {
		require.NoError(t, shard.Err)
		for _, t2 := range shard.Resp.(*kmsg.ListOffsetsResponse).Topics {
			for _, p := range t2.Partitions {
				require.Zero(t, p.ErrorCode, "ListOffsets %s/%d", topic, p.Partition)
				out[p.Partition] = p.Offset
			}
		}
	}
	require.Len(t, out, int(partitions))
	return out
}

// e2eNoProtocolErrors asserts that the proxy closed no connection because a
// frame could not be read or rewritten.
func e2eNoProtocolErrors(t testing.TB, e *env) {
	t.Helper()
	for _, reason := range []string{"client_protocol_error", "upstream_protocol_error", "rewrite_failed"} {
		assert.Zero(t, proxyCounter(t, e, "pipemesh_kafka_connections_closed_total", "reason", reason),
			"connections the proxy closed with reason %s", reason)
	}
}

func e2eWithBrokerOptions(opts ...kfake.Opt) envOpt {
	return func(_ *kafkaproxy.Config, d *devbroker.Config) { d.Options = append(d.Options, opts...) }
}

// TestKgoE2ECodecs produces 100,000 records over 12 partitions with each
// codec and consumes them with a consumer group, all through the proxy.
func TestKgoE2ECodecs(t *testing.T) {
	const (
		records    = 100_000
		partitions = 12
	)
	for _, tc := range []struct {
		name  string
		codec kgo.CompressionCodec
		id    uint8 // batch attribute codec
	}{
		{"none", kgo.NoCompression(), 0},
		{"gzip", kgo.GzipCompression(), 1},
		{"snappy", kgo.SnappyCompression(), 2},
		{"lz4", kgo.Lz4Compression(), 3},
		{"zstd", kgo.ZstdCompression(), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := "codec-" + tc.name
			e := startEnv(t, withTopic(topic, partitions))
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()

			want := make(map[string]e2eWant, records)
			var produced [5]atomic.Int64 // batches written, by codec
			prod := e2eClient(t, e,
				kgo.DefaultProduceTopic(topic),
				kgo.ProducerBatchCompression(tc.codec),
				kgo.ProducerLinger(5*time.Millisecond),
				kgo.WithHooks(e2eBatchHook{produced: &produced}),
			)
			var perr atomic.Value
			for i := range records {
				r, w := e2eRecord(topic, i)
				want[string(r.Key)] = w
				prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
					if err != nil {
						perr.CompareAndSwap(nil, err)
					}
				})
			}
			require.NoError(t, prod.Flush(ctx))
			if err, _ := perr.Load().(error); err != nil {
				t.Fatalf("produce: %v", err)
			}

			var fetched [5]atomic.Int64
			cons := e2eClient(t, e,
				kgo.ConsumeTopics(topic),
				kgo.ConsumerGroup("g-"+topic),
				kgo.WithHooks(e2eBatchHook{fetched: &fetched}),
			)
			sink := newE2ESink(want)
			e2eConsume(ctx, t, cons, sink, records)
			sink.check(t)

			perPart := sink.checkOffsets(t)
			assert.Len(t, perPart, partitions, "records reached every partition")
			end := e2eEndOffsets(ctx, t, cons, topic, partitions)
			for p := range int32(partitions) {
				assert.Equal(t, end[p], perPart[p], "partition %d: records consumed vs end offset", p)
			}

			// The batches really went over the wire with the codec (kgo sends
			// a batch uncompressed when compressing does not shrink it).
			assert.Positive(t, produced[tc.id].Load(), "batches produced with codec %d", tc.id)
			assert.Positive(t, fetched[tc.id].Load(), "batches fetched with codec %d", tc.id)
			if tc.id == 0 {
				for c := 1; c < 5; c++ {
					assert.Zero(t, fetched[c].Load(), "batches fetched with codec %d", c)
				}
			}
			e2eNoProtocolErrors(t, e)
		})
	}
}

// e2eBatchHook counts batches by codec as kgo writes and reads them.
type e2eBatchHook struct{ produced, fetched *[5]atomic.Int64 }

func (h e2eBatchHook) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	if h.produced != nil && m.CompressionType < 5 {
		h.produced[m.CompressionType].Add(1)
	}
}

func (h e2eBatchHook) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	if h.fetched != nil && m.CompressionType < 5 {
		h.fetched[m.CompressionType].Add(1)
	}
}

// TestKgoE2ETransactions commits some transactions and aborts others through
// the proxy; a read_committed consumer group sees exactly the committed
// records, once, while a read_uncommitted consumer sees the aborted ones too.
func TestKgoE2ETransactions(t *testing.T) {
	const (
		topic      = "txn"
		partitions = 4
		txns       = 12
		perTxn     = 250
	)
	e := startEnv(t, withTopic(topic, partitions))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	prod := e2eClient(t, e,
		kgo.TransactionalID("pipemesh-e2e-txn"),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	committed := make(map[string]e2eWant)
	all := make(map[string]e2eWant)
	i := 0
	run := func(commit bool, recs []*kgo.Record, wants []e2eWant) {
		t.Helper()
		require.NoError(t, prod.BeginTransaction())
		for j, r := range recs {
			all[string(r.Key)] = wants[j]
			if commit {
				committed[string(r.Key)] = wants[j]
			}
		}
		require.NoError(t, prod.ProduceSync(ctx, recs...).FirstErr())
		require.NoError(t, prod.Flush(ctx))
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		require.NoError(t, prod.EndTransaction(ctx, end))
	}
	aborted := 0
	for b := range txns {
		commit := b%3 != 1
		var recs []*kgo.Record
		var wants []e2eWant
		for range perTxn {
			r, w := e2eRecord(fmt.Sprintf("txn%02d", b), i)
			r.Partition = int32(i % partitions)
			recs, wants = append(recs, r), append(wants, w)
			i++
		}
		if !commit {
			aborted += perTxn
		}
		run(commit, recs, wants)
	}
	// A last committed record per partition: once a consumer has it, it has
	// read everything before it.
	var recs []*kgo.Record
	var wants []e2eWant
	for p := range int32(partitions) {
		r, w := e2eRecord("end", int(p))
		r.Partition = p
		recs, wants = append(recs, r), append(wants, w)
	}
	run(true, recs, wants)
	require.Positive(t, aborted)

	consumeToEnd := func(cl *kgo.Client, want map[string]e2eWant) *e2eSink {
		t.Helper()
		sink := newE2ESink(want)
		ends := map[int32]bool{}
		for len(ends) < partitions {
			fs := cl.PollFetches(ctx)
			require.NoError(t, ctx.Err(), "consumed %d records, end markers from %d partitions", sink.count(), len(ends))
			fs.EachError(func(topic string, p int32, err error) { t.Errorf("fetch %s/%d: %v", topic, p, err) })
			fs.EachRecord(func(r *kgo.Record) {
				sink.add(r)
				if strings.HasPrefix(string(r.Key), "end-") {
					ends[r.Partition] = true
				}
			})
		}
		return sink
	}

	rc := e2eClient(t, e, kgo.ConsumeTopics(topic), kgo.ConsumerGroup("g-txn"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	sink := consumeToEnd(rc, committed)
	sink.check(t)
	// Nothing more comes: poll a little past the end markers.
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	fs := rc.PollFetches(short)
	cancelShort()
	assert.Zero(t, fs.NumRecords(), "records after the last committed transaction")

	ru := e2eClient(t, e, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	usink := consumeToEnd(ru, all)
	usink.check(t)
	assert.Equal(t, len(committed)+aborted, usink.count(), "read_uncommitted sees aborted records too")
	e2eNoProtocolErrors(t, e)
}

// TestKgoE2EConsumerGroupKIP848 runs a two-member consumer group on the
// KIP-848 protocol (ConsumerGroupHeartbeat, server-side assignment) through
// the proxy.
func TestKgoE2EConsumerGroupKIP848(t *testing.T) {
	const (
		topic      = "g848"
		partitions = 12
		records    = 20_000
	)
	e := startEnv(t, withTopic(topic, partitions),
		e2eWithBrokerOptions(kfake.BrokerConfigs(map[string]string{"group.consumer.heartbeat.interval.ms": "200"})))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	want := make(map[string]e2eWant, records)
	recs := make([]*kgo.Record, 0, records)
	for i := range records {
		r, w := e2eRecord(topic, i)
		want[string(r.Key)] = w
		recs = append(recs, r)
	}
	sink := newE2ESink(want)

	type member struct {
		mu    sync.Mutex
		owned map[int32]bool
		got   map[int32]int // records per partition
		cl    *kgo.Client
	}
	members := make([]*member, 2)
	var wg sync.WaitGroup
	for i := range members {
		m := &member{owned: map[int32]bool{}, got: map[int32]int{}}
		update := func(add bool) func(context.Context, *kgo.Client, map[string][]int32) {
			return func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
				m.mu.Lock()
				defer m.mu.Unlock()
				for _, p := range ps[topic] {
					if add {
						m.owned[p] = true
					} else {
						delete(m.owned, p)
					}
				}
			}
		}
		m.cl = e2eClient(t, e,
			kgo.ConsumeTopics(topic),
			kgo.ConsumerGroup("g848"),
			kgo.ServerSideBalancer(),
			kgo.ClientID(fmt.Sprintf("member-%d", i)),
			kgo.OnPartitionsAssigned(update(true)),
			kgo.OnPartitionsRevoked(update(false)),
			kgo.OnPartitionsLost(update(false)),
		)
		members[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && sink.count() < records {
				fs := m.cl.PollFetches(ctx)
				fs.EachError(func(topic string, p int32, err error) {
					if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("member %d fetch %s/%d: %v", i, topic, p, err)
					}
				})
				fs.EachRecord(func(r *kgo.Record) {
					m.mu.Lock()
					m.got[r.Partition]++
					m.mu.Unlock()
					sink.add(r)
				})
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()

	// Produce only once the group is stable, each member owning half the
	// partitions: a rebalance with records in flight may replay some,
	// which is the protocol's at-least-once, not the proxy's doing.
	stable := func() bool {
		union := map[int32]int{}
		for _, m := range members {
			m.mu.Lock()
			n := len(m.owned)
			for p := range m.owned {
				union[p]++
			}
			m.mu.Unlock()
			if n != partitions/2 {
				return false
			}
		}
		return len(union) == partitions
	}
	require.Eventually(t, stable, 60*time.Second, 50*time.Millisecond, "group never settled on 6+6 partitions")

	prod := e2eClient(t, e, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	require.NoError(t, prod.ProduceSync(ctx, recs...).FirstErr())
	require.Eventually(t, func() bool { return sink.count() >= records }, 90*time.Second, 20*time.Millisecond,
		"consumed %d of %d", sink.count(), records)
	cancel()
	wg.Wait()
	sink.check(t)
	for i, m := range members {
		m.mu.Lock()
		for p, n := range m.got {
			assert.True(t, m.owned[p], "member %d consumed %d records of partition %d it does not own", i, n, p)
		}
		assert.Len(t, m.got, partitions/2, "member %d consumed from its partitions", i)
		m.mu.Unlock()
	}

	// The group really ran on KIP-848 through the proxy.
	assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_requests_total", "api", "ConsumerGroupHeartbeat"))
	assert.Zero(t, proxyCounter(t, e, "pipemesh_kafka_requests_total", "api", "JoinGroup"))
	assert.Zero(t, proxyCounter(t, e, "pipemesh_kafka_requests_total", "api", "SyncGroup"))
	e2eNoProtocolErrors(t, e)
}

// TestKgoE2ELeaderMoves produces and consumes continuously through the proxy
// while partition leaders move between brokers several times. Nothing is
// lost or duplicated, and after every move both clients follow: the consumer
// reads, for every partition, records that only the new leader can have
// written (the broker stamps each batch with the leader epoch).
func TestKgoE2ELeaderMoves(t *testing.T) {
	const (
		topic      = "moving"
		partitions = 6
		rounds     = 6
	)
	e := startEnv(t, withTopic(topic, partitions))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		mu       sync.Mutex // guards want (read by sink.add) and epochs
		want     = map[string]e2eWant{}
		epochs   = map[int32]int32{} // highest leader epoch consumed, per partition
		produced atomic.Int64
		acked    atomic.Int64
		perr     atomic.Value
		consErrs []string
	)
	sink := newE2ESink(want)
	prod := e2eClient(t, e, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(2*time.Millisecond))
	cons := e2eClient(t, e, kgo.ConsumeTopics(topic), kgo.ConsumerGroup("g-moving"),
		e2eNoReset(), kgo.FetchMaxWait(250*time.Millisecond))

	stop := make(chan struct{})
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Registered before it is produced: the consumer may see a
			// record before the producer hears it was acknowledged.
			r, w := e2eRecord(topic, i)
			mu.Lock()
			want[string(r.Key)] = w
			mu.Unlock()
			produced.Add(1)
			prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					perr.CompareAndSwap(nil, err)
					return
				}
				acked.Add(1)
			})
			if i%100 == 99 {
				time.Sleep(2 * time.Millisecond) // steady, bounded traffic
			}
		}
	}()
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			mu.Lock()
			fs.EachError(func(topic string, p int32, err error) {
				if ctx.Err() == nil {
					consErrs = append(consErrs, fmt.Sprintf("%s/%d: %v", topic, p, err))
				}
			})
			fs.EachRecord(func(r *kgo.Record) {
				sink.add(r)
				epochs[r.Partition] = max(epochs[r.Partition], r.LeaderEpoch)
			})
			mu.Unlock()
		}
	}()
	// followed reports whether the consumer has read, on every partition, a
	// record written in at least the given leader epoch.
	followed := func(epoch map[int32]int32) bool {
		mu.Lock()
		defer mu.Unlock()
		for p, want := range epoch {
			if epochs[p] < want {
				return false
			}
		}
		return len(epochs) == partitions
	}

	// Moves start once the consumer reads every partition: a move while
	// kgo is still listing a partition's start offset is another test.
	require.Eventually(t, func() bool { return followed(nil) }, 30*time.Second, 10*time.Millisecond,
		"consumer never read every partition")
	moves := 0
	for round := range rounds {
		epoch := map[int32]int32{}
		for p := range int32(partitions) {
			from := e.cluster.LeaderFor(topic, p)
			to := (from + 1) % 3
			require.NoError(t, e.cluster.MoveTopicPartition(topic, p, to))
			require.Equal(t, to, e.cluster.LeaderFor(topic, p))
			moves++
		}
		// What clients are told through the proxy: the new leader and its
		// epoch, behind the proxy's own listener for it.
		meta := e2eTopicMetadata(ctx, t, prod, topic)
		for _, mp := range meta.Partitions {
			require.Equal(t, e.cluster.LeaderFor(topic, mp.Partition), mp.Leader, "partition %d leader", mp.Partition)
			epoch[mp.Partition] = mp.LeaderEpoch
		}
		require.Eventually(t, func() bool { return followed(epoch) }, 30*time.Second, 10*time.Millisecond,
			"round %d: the clients did not follow the new leaders (epochs %v)", round, epoch)
	}
	close(stop)
	<-prodDone
	require.NoError(t, prod.Flush(ctx))
	if err, _ := perr.Load().(error); err != nil {
		t.Fatalf("produce: %v", err)
	}
	require.EqualValues(t, produced.Load(), acked.Load())
	total := int(acked.Load())
	require.Eventually(t, func() bool { return sink.count() >= total }, 60*time.Second, 10*time.Millisecond,
		"consumed fewer records than the %d produced", total)
	// Anything extra (a duplicate) would arrive right behind.
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-consDone
	sink.check(t)
	assert.Empty(t, consErrs, "fetch errors surfaced to the consumer")

	perPart := sink.checkOffsets(t)
	ectx, ecancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ecancel()
	end := e2eEndOffsets(ectx, t, prod, topic, partitions)
	for p := range int32(partitions) {
		assert.Equal(t, end[p], perPart[p], "partition %d: records consumed vs end offset", p)
	}
	// The NOT_LEADER answers carried the new leader's endpoint (KIP-951),
	// which the proxy rewrote to its own listener.
	for _, api := range []string{"Produce", "Fetch"} {
		assert.Positive(t, proxyCounter(t, e, "pipemesh_kafka_responses_rewritten_total", "api", api), "%s responses rewritten", api)
	}
	t.Logf("%d records through %d leader moves", total, moves)
	e2eNoProtocolErrors(t, e)
}

// e2eNoReset is for consumers that live through kfake.MoveTopicPartition.
// kfake answers OffsetForLeaderEpoch with UNDEFINED_EPOCH_OFFSET (-1) after
// a move until a batch is written in the new epoch (its epoch cache is built
// from batches only; a real broker records the epoch at election). kgo's
// default reaction to -1 is to reset to the start of the partition and read
// it all again, duplicates included; the same happens without the proxy.
// With NoResetOffset kgo keeps its position instead, and a real
// out-of-range still surfaces as a fetch error. NoResetOffset alone starts
// at the end, whatever its doc says; AtStart is needed.
func e2eNoReset() kgo.Opt { return kgo.ConsumeResetOffset(kgo.NoResetOffset().AtStart()) }

// e2eTopicMetadata asks for one topic's metadata through cl.
func e2eTopicMetadata(ctx context.Context, t testing.TB, cl *kgo.Client, topic string) kmsg.MetadataResponseTopic {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	require.Zero(t, resp.Topics[0].ErrorCode)
	return resp.Topics[0]
}
