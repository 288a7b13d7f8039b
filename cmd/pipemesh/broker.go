package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/pipemesh/pipemesh/benchmarks/sink"
	"github.com/pipemesh/pipemesh/internal/config"
	"github.com/pipemesh/pipemesh/internal/devbroker"
)

const brokerAbout = `Run an embedded Kafka cluster (franz-go's kfake, in memory) for local work,
demos and tests. Broker i listens on the --listen port + i. It speaks the real
Kafka protocol: any client works against it, with or without the proxy.

With --sink it runs the benchmark sink broker instead: a Kafka broker built
for throughput tests, fast enough that a proxy in front of it is the
bottleneck. It stores produced record batches in memory as sent, up to
--sink-retention in total (the oldest go first), and serves them back to
consumers that assign partitions directly. It has no consumer groups, no
transactions and no persistence; unknown topics are created on first use
with 6 partitions. 'pipemesh bench kafka --target sink' runs it for you.

Examples:
  pipemesh broker --topic orders:12 --topic logs.app:3
  pipemesh serve --kafka-upstream 127.0.0.1:9092
  pipemesh broker --sink --sink-retention 4GiB --topic bench:12`

type topicsFlag []devbroker.Topic

func (t *topicsFlag) String() string { return fmt.Sprint(len(*t), " topics") }

func (t *topicsFlag) Set(s string) error {
	tp, err := devbroker.ParseTopic(s)
	if err != nil {
		return err
	}
	*t = append(*t, tp)
	return nil
}

func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("broker", "[flags]", brokerAbout, stderr)
	listen := fs.String("listen", "127.0.0.1:9092", "first broker's `host:port`; the others take the next ports")
	n := fs.Int("brokers", 3, "number of brokers")
	var topics topicsFlag
	fs.Var(&topics, "topic", "`NAME:PARTITIONS` to create at start (repeatable)")
	useSink := fs.Bool("sink", false, "run the benchmark sink broker instead of kfake: in-memory, no consumer groups or transactions")
	retention := fs.String("sink-retention", "1GiB", "with --sink, the `size` of stored batches over all partitions past which the oldest are dropped")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 64 {
		return fmt.Errorf("--brokers %d: want 1 to 64", *n)
	}
	if *useSink {
		return runSink(ctx, *listen, *n, *retention, topics, stdout, stderr)
	}
	c, err := devbroker.Start(devbroker.Config{Listen: *listen, Brokers: *n, Topics: topics})
	if err != nil {
		return err
	}
	defer c.Close()
	printBrokers(stdout, "kfake Kafka cluster", c.ListenAddrs(), topics)
	<-ctx.Done()
	return nil
}

// runSink runs the sink broker until ctx ends.
func runSink(ctx context.Context, listen string, brokers int, retention string, topics topicsFlag, stdout, stderr io.Writer) error {
	limit, err := config.ParseBytes(retention)
	if err != nil {
		return fmt.Errorf("--sink-retention: %w", err)
	}
	if limit < 1<<20 {
		return fmt.Errorf("--sink-retention %s: want at least 1MiB", retention)
	}
	s, err := sink.Start(sink.Config{
		Listen: listen, Brokers: brokers, RetentionBytes: limit,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	defer s.Close()
	for _, t := range topics {
		if err := s.CreateTopic(t.Name, t.Partitions); err != nil {
			return err
		}
	}
	printBrokers(stdout, fmt.Sprintf("sink Kafka broker (retention %s)", retention), s.Addrs(), topics)
	<-ctx.Done()
	return nil
}

func printBrokers(stdout io.Writer, what string, addrs []string, topics topicsFlag) {
	fmt.Fprintf(stdout, "%s running: %d brokers at %s\n", what, len(addrs), strings.Join(addrs, ", "))
	for _, t := range topics {
		fmt.Fprintf(stdout, "  topic %s (%d partitions)\n", t.Name, t.Partitions)
	}
	fmt.Fprintf(stdout, "Front it with: pipemesh serve --kafka-upstream %s\nCtrl-C stops it (data is in memory and goes with it).\n", addrs[0])
}
