package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// syncBuffer is a bytes.Buffer safe to write from the command's goroutine
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBrokerSink runs `pipemesh broker --sink` with a pre-created topic,
// reads the broker addresses it prints, and round-trips records with kgo
// through them; cancelling the context stops it cleanly.
func TestBrokerSink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runBroker(ctx, []string{"--sink", "--listen", "127.0.0.1:0", "--topic", "t:3"}, &out, io.Discard)
	}()
	var addrs []string
	re := regexp.MustCompile(`sink Kafka broker \(retention 1GiB\) running: 3 brokers at (.+)\n`)
	require.Eventually(t, func() bool {
		m := re.FindStringSubmatch(out.String())
		if m == nil {
			return false
		}
		addrs = strings.Split(m[1], ", ")
		return true
	}, 10*time.Second, 10*time.Millisecond, "no broker addresses printed: %q", out.String())
	require.Len(t, addrs, 3)
	assert.Contains(t, out.String(), "topic t (3 partitions)")
	assert.Contains(t, out.String(), "Front it with: pipemesh serve --kafka-upstream "+addrs[0])

	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("t"))
	require.NoError(t, err)
	defer cl.Close()
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	const n = 300
	for i := range n {
		r := &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "value %d", i)}
		require.NoError(t, cl.ProduceSync(rctx, r).FirstErr())
		assert.Less(t, r.Partition, int32(3), "the pre-created topic has 3 partitions")
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(addrs[0]), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		"t": {0: kgo.NewOffset().AtStart(), 1: kgo.NewOffset().AtStart(), 2: kgo.NewOffset().AtStart()},
	}), kgo.FetchMaxWait(200*time.Millisecond))
	require.NoError(t, err)
	defer cons.Close()
	seen := map[string]string{}
	for len(seen) < n {
		fs := cons.PollFetches(rctx)
		require.NoError(t, rctx.Err(), "timed out with %d of %d records", len(seen), n)
		fs.EachError(func(topic string, p int32, err error) { t.Errorf("fetching %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			_, dup := seen[string(r.Key)]
			assert.False(t, dup, "record %s twice", r.Key)
			seen[string(r.Key)] = string(r.Value)
		})
	}
	for i := range n {
		assert.Equal(t, fmt.Sprintf("value %d", i), seen[fmt.Sprintf("k%d", i)])
	}

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("pipemesh broker --sink did not stop when its context ended")
	}
}

func TestBrokerSinkFlags(t *testing.T) {
	var errOut bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"broker", "--help"}, io.Discard, &errOut))
	for _, s := range []string{"-sink", "-sink-retention", "no consumer groups", "transactions"} {
		assert.Contains(t, errOut.String(), s)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sink", "--sink-retention", "lots"}, `--sink-retention: "lots" is not a size`},
		{[]string{"--sink", "--sink-retention", "1KiB"}, "--sink-retention 1KiB: want at least 1MiB"},
		{[]string{"--sink", "--listen", "127.0.0.1:0", "--topic", "a:1", "--topic", "a:2"}, `topic "a": it already exists`},
	} {
		err := runBroker(context.Background(), tc.args, io.Discard, io.Discard)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want)
	}
}
