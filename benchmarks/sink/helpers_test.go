package sink

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PIPEMESH_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// startSink starts a sink on free ports, closed when the test ends.
func startSink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := Start(cfg)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func newClient(t testing.TB, seeds []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.ClientID("sink-test")}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// testRecord is record i of a test: binary keys, values of varying length
// and headers, so any byte lost or changed shows.
func testRecord(topic string, i int) *kgo.Record {
	value := make([]byte, 1+(i*37)%900)
	for j := range value {
		value[j] = byte(i*7 + j)
	}
	return &kgo.Record{
		Topic: topic,
		Key:   fmt.Appendf(nil, "key-%06d\x00\xff", i),
		Value: value,
		Headers: []kgo.RecordHeader{
			{Key: "seq", Value: binary.BigEndian.AppendUint64(nil, uint64(i))},
			{Key: "bin\x01", Value: bytes.Repeat([]byte{0, byte(i), 0xfe}, i%4)},
		},
	}
}

// produced is where the sink put a record.
type produced struct {
	rec       *kgo.Record
	partition int32
	offset    int64
}

// produceAll produces n test records asynchronously and returns them by
// key with where the sink acknowledged them.
func produceAll(t testing.TB, cl *kgo.Client, topic string, n int) map[string]produced {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu   sync.Mutex
		out  = make(map[string]produced, n)
		errs []error
		wg   sync.WaitGroup
	)
	wg.Add(n)
	for i := range n {
		r := testRecord(topic, i)
		cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out[string(r.Key)] = produced{r, r.Partition, r.Offset}
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Len(t, out, n)
	return out
}

// consumeAll reads partitions 0 to partitions-1 of topic from the start
// with directly assigned partitions until want records came (or fails),
// and returns them in order per partition.
func consumeAll(t testing.TB, seeds []string, topic string, partitions int32, want int, opts ...kgo.Opt) map[int32][]*kgo.Record {
	t.Helper()
	offsets := make(map[int32]kgo.Offset)
	for p := range partitions {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(t, seeds, append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := make(map[int32][]*kgo.Record)
	n := 0
	for n < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("timed out: %d of %d records consumed", n, want)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Errorf("fetching %s/%d: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], r)
			n++
		})
	}
	return got
}

// requireSame checks that got holds every produced record once, at the
// partition and offset its produce was acknowledged with, byte for byte,
// and that each partition's offsets run contiguously from 0.
func requireSame(t testing.TB, want map[string]produced, got map[int32][]*kgo.Record) {
	t.Helper()
	seen := make(map[string]bool, len(want))
	total := 0
	for p, recs := range got {
		for i, r := range recs {
			total++
			require.Equal(t, int64(i), r.Offset, "partition %d: offsets must run contiguously from 0", p)
			k := string(r.Key)
			w, ok := want[k]
			require.True(t, ok, "unexpected key %q", k)
			require.False(t, seen[k], "key %q consumed twice", k)
			seen[k] = true
			assert.Equal(t, w.partition, r.Partition, "key %q", k)
			assert.Equal(t, w.offset, r.Offset, "key %q", k)
			assert.Equal(t, w.rec.Value, r.Value, "key %q: value", k)
			require.Len(t, r.Headers, len(w.rec.Headers), "key %q: headers", k)
			for j, h := range w.rec.Headers {
				assert.Equal(t, h.Key, r.Headers[j].Key, "key %q header %d", k, j)
				assert.True(t, bytes.Equal(h.Value, r.Headers[j].Value), "key %q header %d value", k, j)
			}
		}
	}
	require.Equal(t, len(want), total)
}
