package benchmarks

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"
)

// phaseCounters are what the progress display reads while a phase runs.
type phaseCounters struct {
	records atomic.Int64
	bytes   atomic.Int64
}

// clientOpts are the options every harness client shares.
func clientOpts(addr, id string) []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(addr), kgo.ClientID(id)}
}

// compressionCodec maps --compression to the producer's codec.
func compressionCodec(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// producerOpts are the producer settings of cfg for records of size bytes.
func producerOpts(cfg Config, size int, addr, topic string) []kgo.Opt {
	opts := append(clientOpts(addr, "pipemesh-bench-producer"),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(compressionCodec(cfg.Compression)),
		kgo.ProducerLinger(cfg.Linger),
		// Records carry a key only so the consumer can check them; the
		// sticky partitioner ignores it and fills batches as a producer of
		// unkeyed records (and kafka-producer-perf-test) does.
		kgo.RecordPartitioner(kgo.StickyPartitioner()),
		// Bound the memory buffered records take at large sizes.
		kgo.MaxBufferedBytes(max(64<<20, 8*size)),
		kgo.RecordDeliveryTimeout(2*time.Minute),
	)
	if size+1024 > 1<<20 {
		// A record larger than the default 1 MiB batch gets a batch of its
		// own; whether the broker takes it is the broker's business.
		opts = append(opts, kgo.ProducerBatchMaxBytes(int32(size+1024)))
	}
	if cfg.Acks == "1" {
		// Idempotent writes need acks=all.
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	} else {
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	return opts
}

// benchRecord is a produced record with its key and start time in the same
// allocation, so producing a record allocates once.
type benchRecord struct {
	// rec must stay the first field: the promise gets *kgo.Record and
	// recovers the benchRecord around it from the same address.
	rec   kgo.Record
	start int64 // nanoseconds since the phase began, at the Produce call
	key   [keySize]byte
}

// produceResult is what a produce phase measured.
type produceResult struct {
	phase    Phase
	bytes    int64 // keys and values acknowledged
	produced tally
	latency  Latency
	hist     []int64
}

// producePhase produces cfg.Records records, or for cfg.Duration but at
// most cfg.Records when set, to topic at addr with cfg.Producers clients and
// measures throughput and latency. win, when not
// nil, is begun right before the first record and ended after the last
// acknowledgement, so client setup is outside the CPU figures.
func producePhase(ctx context.Context, cfg Config, size int, addr, topic string, p *payloads, ctr *phaseCounters, win *cpuWindow) (produceResult, error) {
	var res produceResult
	clients := make([]*kgo.Client, cfg.Producers)
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				cl.Close()
			}
		}
	}()
	for i := range clients {
		cl, err := kgo.NewClient(producerOpts(cfg, size, addr, topic)...)
		if err != nil {
			return res, fmt.Errorf("producer client: %w", err)
		}
		clients[i] = cl
	}
	// Learn the partition leaders before the clock starts.
	for _, cl := range clients {
		if err := cl.Ping(ctx); err != nil {
			return res, fmt.Errorf("producer cannot reach %s: %w", addr, err)
		}
	}

	s := &produceState{p: p, lat: newLatencyRecorder(), ctr: ctr, limit: cfg.Records, rate: cfg.Rate}
	s.promise = s.acked
	if win != nil {
		win.begin()
	}
	s.base = time.Now()
	if cfg.Duration > 0 {
		// With a duration, Records (when set) is a cap on top.
		s.deadline = s.base.Add(cfg.Duration)
	}
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, cl)
			_ = cl.Flush(ctx) // failures reach the promises
		}()
	}
	wg.Wait()
	if win != nil {
		win.end()
	}

	elapsed := time.Duration(s.lastAck.Load())
	if elapsed <= 0 {
		elapsed = time.Since(s.base)
	}
	res.produced = tally{Count: s.count.Load(), Sum: s.sum.Load()}
	res.bytes = s.bytes.Load()
	res.phase = phaseOf(elapsed, res.produced.Count, res.bytes)
	res.latency, res.hist = s.lat.result()
	if n := s.failed.Load(); n > 0 {
		first := errors.New("unknown error")
		if p := s.firstErr.Load(); p != nil {
			first = *p
		}
		return res, fmt.Errorf("%d of %d records were not acknowledged, first: %w", n, n+res.produced.Count, first)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if res.produced.Count == 0 {
		return res, errors.New("no record was produced")
	}
	return res, nil
}

// produceState is shared by the producers of one phase.
type produceState struct {
	p        *payloads
	lat      *latencyRecorder
	ctr      *phaseCounters
	promise  func(*kgo.Record, error)
	base     time.Time
	deadline time.Time // zero without a duration
	limit    int64     // records to produce at most; 0 for no limit
	rate     int       // records/s over all producers; 0 = as fast as possible

	next     atomic.Int64 // the next record index
	count    atomic.Int64 // acknowledged records
	sum      atomic.Uint64
	bytes    atomic.Int64
	lastAck  atomic.Int64 // nanoseconds since base
	failed   atomic.Int64
	firstErr atomic.Pointer[error]
}

// run produces records until the count is reached, the duration is over or
// ctx ends. Producers take indices from one counter, so records 0..n-1 are
// produced exactly once between them.
func (s *produceState) run(ctx context.Context, cl *kgo.Client) {
	var pace *time.Timer
	if s.rate > 0 {
		pace = time.NewTimer(time.Hour)
		defer pace.Stop()
	}
	for ctx.Err() == nil {
		if !s.deadline.IsZero() && !time.Now().Before(s.deadline) {
			return
		}
		idx := s.next.Add(1) - 1
		if s.limit > 0 && idx >= s.limit {
			return
		}
		if s.rate > 0 {
			due := s.base.Add(time.Duration(float64(idx) * float64(time.Second) / float64(s.rate)))
			// Due at or past the end: stop. Later indices are due later
			// still, so every producer stops here and no index below a
			// produced one goes missing.
			if !s.deadline.IsZero() && !due.Before(s.deadline) {
				return
			}
			if wait := time.Until(due); wait > 0 {
				pace.Reset(wait)
				select {
				case <-pace.C:
				case <-ctx.Done():
					return
				}
			}
		}
		br := &benchRecord{}
		binary.BigEndian.PutUint64(br.key[:], uint64(idx))
		br.rec.Key = br.key[:]
		br.rec.Value = s.p.value(uint64(idx))
		br.start = int64(time.Since(s.base))
		cl.Produce(ctx, &br.rec, s.promise)
	}
}

// acked is the promise of every record.
func (s *produceState) acked(r *kgo.Record, err error) {
	now := int64(time.Since(s.base))
	br := (*benchRecord)(unsafe.Pointer(r)) // r is the first field of a benchRecord
	if err != nil {
		if s.failed.Add(1) == 1 {
			s.firstErr.Store(&err)
		}
		return
	}
	s.lat.add(time.Duration(now - br.start))
	idx := binary.BigEndian.Uint64(br.key[:])
	s.sum.Add(s.p.hash(idx, br.key[:]))
	s.count.Add(1)
	n := int64(len(r.Key) + len(r.Value))
	s.bytes.Add(n)
	s.ctr.records.Add(1)
	s.ctr.bytes.Add(n)
	for {
		last := s.lastAck.Load()
		if now <= last || s.lastAck.CompareAndSwap(last, now) {
			break
		}
	}
}

// phaseOf turns a count of records and bytes over a duration into rates.
func phaseOf(d time.Duration, records, bytes int64) Phase {
	ph := Phase{Duration: d}
	if secs := d.Seconds(); secs > 0 {
		ph.MBPerSec = float64(bytes) / 1e6 / secs
		ph.RecordsPerSec = float64(records) / secs
	}
	return ph
}

// consumePhase reads topic at addr from the start with cfg.Consumers
// clients, partitions split among them, until produced.Count records came
// back or timeout passes, and checks every record. The checker it returns
// holds what was consumed even on error.
func consumePhase(ctx context.Context, cfg Config, addr, topic string, p *payloads, produced tally, timeout time.Duration, ctr *phaseCounters, win *cpuWindow) (Phase, *checker, error) {
	n := min(cfg.Consumers, cfg.Partitions)
	assign := make([]map[int32]kgo.Offset, n)
	for i := range assign {
		assign[i] = map[int32]kgo.Offset{}
	}
	for part := range cfg.Partitions {
		assign[part%n][int32(part)] = kgo.NewOffset().AtStart()
	}
	clients := make([]*kgo.Client, n)
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				cl.Close()
			}
		}
	}()
	checkers := make([]*checker, n)
	for i := range clients {
		cl, err := kgo.NewClient(append(clientOpts(addr, "pipemesh-bench-consumer"),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign[i]}))...)
		if err != nil {
			return Phase{}, newChecker(p, produced.Count), fmt.Errorf("consumer client: %w", err)
		}
		clients[i] = cl
		checkers[i] = newChecker(p, produced.Count)
	}

	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		total    atomic.Int64
		doneAt   atomic.Int64
		progress atomic.Int64 // when records last came, since start
		errAt    atomic.Int64 // when a fetch last failed, since start
		errMu    sync.Mutex
		lastErr  error
		wg       sync.WaitGroup
	)
	if win != nil {
		win.begin()
	}
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchConsume(cctx, cancel, start, timeout, consumeStall, &progress, &errAt)
	}()
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chk := checkers[i]
			for cctx.Err() == nil {
				fs := cl.PollFetches(cctx)
				fs.EachError(func(t string, part int32, err error) {
					if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
						return
					}
					errMu.Lock()
					lastErr = fmt.Errorf("fetching %s partition %d: %w", t, part, err)
					errMu.Unlock()
					errAt.Store(int64(time.Since(start)))
				})
				var recs, bytes int64
				fs.EachPartition(func(fp kgo.FetchTopicPartition) {
					for _, r := range fp.Records {
						chk.add(r.Partition, r.Offset, r.Key, r.Value)
						bytes += int64(len(r.Key) + len(r.Value))
					}
					recs += int64(len(fp.Records))
				})
				if recs == 0 {
					continue
				}
				progress.Store(int64(time.Since(start)))
				ctr.records.Add(recs)
				ctr.bytes.Add(bytes)
				if total.Add(recs) >= produced.Count {
					doneAt.CompareAndSwap(0, int64(time.Since(start)))
					cancel(nil)
				}
			}
		}()
	}
	wg.Wait()
	if win != nil {
		win.end()
	}

	all := newChecker(p, produced.Count)
	for _, c := range checkers {
		all.merge(c)
	}
	elapsed := time.Duration(doneAt.Load())
	if elapsed == 0 {
		elapsed = time.Since(start)
	}
	ph := phaseOf(elapsed, all.got.Count, all.bytes)
	if doneAt.Load() == 0 {
		if err := ctx.Err(); err != nil {
			return ph, all, err
		}
		msg := fmt.Sprintf("%v with %d of %d records", context.Cause(cctx), all.got.Count, produced.Count)
		if lastErr != nil {
			msg += "; last fetch error: " + lastErr.Error()
		}
		return ph, all, errors.New(msg)
	}
	return ph, all, nil
}

// consumeStall is how long fetches may fail with no record coming back
// before the consume phase gives up, rather than wait out its timeout
// (corrupt batches, for one, fail the same way on every retry).
const consumeStall = 10 * time.Second

// watchConsume ends a consume phase that runs past timeout, or that has had
// fetch errors and no records for stall. progress and errAt are nanoseconds
// since start.
func watchConsume(ctx context.Context, cancel context.CancelCauseFunc, start time.Time, timeout, stall time.Duration, progress, errAt *atomic.Int64) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Since(start)
		last := time.Duration(progress.Load())
		switch {
		case now > timeout:
			cancel(fmt.Errorf("timed out after %s", timeout))
			return
		case time.Duration(errAt.Load()) > last && now-last > stall:
			cancel(fmt.Errorf("gave up after %s of failing fetches and no records", stall))
			return
		}
	}
}
