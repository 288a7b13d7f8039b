package sink

import (
	"context"
	"crypto/rand"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/internal/devbroker"
)

// benchTarget is a broker implementation under benchmark.
type benchTarget struct {
	name  string
	start func(b *testing.B) (addrs []string, stop func())
}

const benchTopic, benchPartitions = "bench", 6

var benchTargets = []benchTarget{
	{"sink", func(b *testing.B) ([]string, func()) {
		s, err := Start(Config{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.CreateTopic(benchTopic, benchPartitions); err != nil {
			b.Fatal(err)
		}
		return s.Addrs(), s.Close
	}},
	{"kfake", func(b *testing.B) ([]string, func()) {
		c, err := devbroker.Start(devbroker.Config{Topics: []devbroker.Topic{{Name: benchTopic, Partitions: benchPartitions}}})
		if err != nil {
			b.Fatal(err)
		}
		return c.ListenAddrs(), c.Close
	}},
}

var benchSizes = []struct {
	name string
	size int
}{{"1KiB", 1 << 10}, {"100KiB", 100 << 10}}

func benchClient(b *testing.B, addrs []string, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(addrs...),
		kgo.DefaultProduceTopic(benchTopic),
		kgo.ProducerBatchCompression(kgo.NoCompression()), // measure the broker, not the codec
	}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	return cl
}

// produceN produces n records of value, acks=all, idempotent (kgo's
// defaults), waits for every acknowledgement, and returns each partition's
// end offset.
func produceN(b *testing.B, cl *kgo.Client, value []byte, n int) map[int32]int64 {
	ctx := context.Background()
	var (
		mu     sync.Mutex
		failed error
		ends   = make(map[int32]int64)
	)
	for range n {
		cl.Produce(ctx, &kgo.Record{Value: value}, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil && failed == nil {
				failed = err
			}
			ends[r.Partition] = max(ends[r.Partition], r.Offset+1)
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if failed != nil {
		b.Fatal(failed)
	}
	return ends
}

// BenchmarkProduce is kgo produce throughput (acks=all, idempotent,
// uncompressed, 6 partitions over 3 brokers) against the sink and against
// kfake: b.N records of each size, all acknowledged.
func BenchmarkProduce(b *testing.B) {
	for _, tg := range benchTargets {
		for _, sz := range benchSizes {
			b.Run(tg.name+"/"+sz.name, func(b *testing.B) {
				addrs, stop := tg.start(b)
				cl := benchClient(b, addrs)
				value := make([]byte, sz.size)
				rand.Read(value)
				produceN(b, cl, value, 100) // connect and learn metadata
				b.SetBytes(int64(sz.size))
				b.ResetTimer()
				produceN(b, cl, value, b.N)
				b.StopTimer()
				cl.Close()
				stop()
			})
		}
	}
}

// BenchmarkFetch is kgo consume throughput with directly assigned
// partitions against the sink and against kfake: a 256 MiB data set
// produced once per target and size is read over and over, each partition
// going back to offset 0 as soon as its end was read, until b.N records
// came.
func BenchmarkFetch(b *testing.B) {
	const dataBytes = 256 << 20
	for _, tg := range benchTargets {
		for _, sz := range benchSizes {
			addrs, stop := tg.start(b)
			value := make([]byte, sz.size)
			rand.Read(value)
			pcl := benchClient(b, addrs)
			ends := produceN(b, pcl, value, dataBytes/sz.size)
			pcl.Close()
			b.Run(tg.name+"/"+sz.name, func(b *testing.B) {
				start := make(map[int32]kgo.Offset)
				for p := range int32(benchPartitions) {
					start[p] = kgo.NewOffset().At(0)
				}
				cl := benchClient(b, addrs,
					kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{benchTopic: start}),
					kgo.FetchMaxWait(100*time.Millisecond))
				defer cl.Close()
				b.SetBytes(int64(sz.size))
				b.ResetTimer()
				ctx := context.Background()
				for got := 0; got < b.N; {
					fs := cl.PollFetches(ctx)
					fs.EachError(func(topic string, p int32, err error) { b.Fatalf("fetching %s/%d: %v", topic, p, err) })
					reset := map[int32]kgo.EpochOffset{}
					fs.EachRecord(func(r *kgo.Record) {
						got++
						if r.Offset == ends[r.Partition]-1 {
							reset[r.Partition] = kgo.EpochOffset{Epoch: -1, Offset: 0}
						}
					})
					if len(reset) > 0 {
						cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{benchTopic: reset})
					}
				}
				b.StopTimer()
			})
			stop()
		}
	}
}
