package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/internal/devbroker"
)

// The demo's other services, so the lineage view opens on a lively graph:
// several producing services, a stream processor (consume, enrich,
// produce), and consumer groups reading one or several topics. Rates are
// relative to --rate (the orders producer's).
var demoTopics = []devbroker.Topic{
	{Name: demoTopic, Partitions: 6},
	{Name: "payments", Partitions: 3},
	{Name: "inventory", Partitions: 2},
	{Name: "clickstream", Partitions: 6},
	{Name: "orders-enriched", Partitions: 3},
}

type demoService struct {
	client, topic string
	rateX         float64 // times --rate
	size          int     // value bytes
}

var demoServices = []demoService{
	{"payments-service", "payments", 1.5, 180},
	{"inventory-service", "inventory", 0.3, 400},
	{"web-frontend", "clickstream", 4, 600},
}

type demoConsumerGroup struct {
	client, group string
	topics        []string
}

var demoGroups = []demoConsumerGroup{
	{"fraud-detector", "fraud-detection", []string{demoTopic, "payments"}},
	{"warehouse-sync", "warehouse", []string{"inventory"}},
	{"analytics-loader", "analytics", []string{"clickstream", "orders-enriched"}},
	{"notifier", "notifications", []string{"orders-enriched"}},
}

// runServices runs the demo's other services through the proxy at
// bootstrap until ctx ends. Their errors are logged, not fatal: the orders
// pipeline is the one the demo checks.
func runServices(ctx context.Context, bootstrap string, rate int, log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, p := range demoServices {
		cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ClientID(p.client), kgo.DefaultProduceTopic(p.topic))
		if err != nil {
			log.Warn("demo service not started", "client_id", p.client, "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			every := time.Duration(float64(time.Second) / max(float64(rate)*p.rateX, 0.2))
			tick := time.NewTicker(every)
			defer tick.Stop()
			pad := strings.Repeat("x", p.size)
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				v := fmt.Appendf(nil, `{"seq":%d,"at":%q,"data":%q}`, i, time.Now().Format(time.RFC3339Nano), pad[:rand.IntN(len(pad))])
				cl.Produce(ctx, &kgo.Record{Value: v}, nil)
			}
		}()
	}
	for _, g := range demoGroups {
		cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ClientID(g.client), kgo.ConsumerGroup(g.group),
			kgo.ConsumeTopics(g.topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))
		if err != nil {
			log.Warn("demo service not started", "client_id", g.client, "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for ctx.Err() == nil {
				cl.PollFetches(ctx)
			}
		}()
	}
	// The stream processor: reads orders in its group and writes each one,
	// enriched, to orders-enriched.
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ClientID("order-enricher"), kgo.ConsumerGroup("order-enricher"),
		kgo.ConsumeTopics(demoTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.DefaultProduceTopic("orders-enriched"))
	if err != nil {
		log.Warn("demo service not started", "client_id", "order-enricher", "err", err)
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			v := append(r.Value[:len(r.Value):len(r.Value)], fmt.Appendf(nil, `{"region":"eu-%d"}`, r.Partition)...)
			cl.Produce(ctx, &kgo.Record{Key: r.Key, Value: v}, nil)
		})
	}
}
