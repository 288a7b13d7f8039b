package kafkaproxy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestSmokeProduceConsume(t *testing.T) {
	e := startEnv(t, withTopic("smoke", 3))
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.addr), kgo.DefaultProduceTopic("smoke"),
		kgo.ConsumeTopics("smoke"), kgo.ConsumerGroup("g1"))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 100 {
		require.NoError(t, cl.ProduceSync(ctx, kgo.StringRecord(fmt.Sprint(i))).FirstErr())
	}
	got := 0
	for got < 100 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, fs.Err0())
		got += fs.NumRecords()
	}
	require.Equal(t, 100, got)
}
