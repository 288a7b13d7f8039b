package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/pipemesh/pipemesh/internal/devbroker"
)

const brokerAbout = `Run an embedded Kafka cluster (franz-go's kfake, in memory) for local work,
demos and tests. Broker i listens on the --listen port + i. It speaks the real
Kafka protocol: any client works against it, with or without the proxy.

Example:
  pipemesh broker --topic orders:12 --topic logs.app:3
  pipemesh serve --kafka-upstream 127.0.0.1:9092`

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
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 64 {
		return fmt.Errorf("--brokers %d: want 1 to 64", *n)
	}
	c, err := devbroker.Start(devbroker.Config{Listen: *listen, Brokers: *n, Topics: topics})
	if err != nil {
		return err
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	fmt.Fprintf(stdout, "kfake Kafka cluster running: %d brokers at %s\n", len(addrs), strings.Join(addrs, ", "))
	for _, t := range topics {
		fmt.Fprintf(stdout, "  topic %s (%d partitions)\n", t.Name, t.Partitions)
	}
	fmt.Fprintf(stdout, "Front it with: pipemesh serve --kafka-upstream %s\nCtrl-C stops it (data is in memory and goes with it).\n", addrs[0])
	<-ctx.Done()
	return nil
}
