package benchmarks

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestWatchConsumeGivesUp(t *testing.T) {
	watch := func(timeout, stall time.Duration, progressAt, errAt time.Duration, wait time.Duration) error {
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		var progress, errs atomic.Int64
		progress.Store(int64(progressAt))
		errs.Store(int64(errAt))
		done := make(chan struct{})
		go func() { defer close(done); watchConsume(ctx, cancel, time.Now(), timeout, stall, &progress, &errs) }()
		select {
		case <-done:
			return context.Cause(ctx)
		case <-time.After(wait):
			cancel(nil)
			<-done
			return nil
		}
	}
	err := watch(300*time.Millisecond, time.Hour, 0, 0, 10*time.Second)
	assert.EqualError(t, err, "timed out after 300ms")
	err = watch(time.Hour, 200*time.Millisecond, 0, time.Millisecond, 10*time.Second)
	assert.EqualError(t, err, "gave up after 200ms of failing fetches and no records")
	assert.NoError(t, watch(time.Hour, 200*time.Millisecond, 2*time.Millisecond, time.Millisecond, 600*time.Millisecond),
		"an error before the last records is no stall")
}

func TestCompressionCodecs(t *testing.T) {
	for name, want := range map[string]kgo.CompressionCodec{
		"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
	} {
		assert.Equal(t, want, compressionCodec(name), name)
	}
}
