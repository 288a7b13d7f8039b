package kafkaproxy

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/policy"
)

// BenchmarkAuthorizedProduce measures what enforcement costs: kgo produces
// uncompressed 1 KiB records through the proxy to a blackhole kfake cluster,
// once without a policy (pass-through) and once as a SCRAM-authenticated
// principal whose every produce is decoded and checked. Compare the MB/s of
// the two in the same run.
func BenchmarkAuthorizedProduce(b *testing.B) {
	value := make([]byte, 1024)
	for i := range value {
		value[i] = byte(i * 7919 >> 3)
	}
	pol, err := policy.Parse("bench.yaml", []byte(`
principals: [{name: writer, password: writer-secret}]
acls:
  - {principal: "User:writer", operation: WRITE, resource: topic, name: bench, permission: allow}
`), policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		store *policy.Store
	}{
		{"no-policy", nil},
		{"policy-scram", policy.NewStaticStore(pol)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			addr := startPolicyBenchProxy(b, bc.store)
			opts := []kgo.Opt{kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("bench"), kgo.ProducerBatchCompression(kgo.NoCompression())}
			if bc.store != nil {
				opts = append(opts, kgo.SASL(scram.Auth{User: "writer", Pass: "writer-secret"}.AsSha512Mechanism()))
			}
			cl, err := kgo.NewClient(opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			benchProduce(b, cl, len(value), func(int) []byte { return value })
		})
	}
}

func startPolicyBenchProxy(b *testing.B, store *policy.Store) string {
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 3, Topics: []devbroker.Topic{{Name: "bench", Partitions: 6}},
		Options: []kfake.Opt{kfake.BlackholeProduce()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cluster.Close)
	p, err := New(Config{
		Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: cluster.ListenAddrs(),
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(), Policy: store,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = p.Serve(ctx) }()
	b.Cleanup(func() { cancel(); <-served })
	for deadline := time.Now().Add(10 * time.Second); !func() bool { ok, _ := p.Ready(); return ok }(); {
		if time.Now().After(deadline) {
			b.Fatal("proxy not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p.Addr()
}
