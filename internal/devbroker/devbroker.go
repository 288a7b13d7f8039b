// Package devbroker starts the embedded Kafka cluster (franz-go's kfake)
// that `pipemesh broker`, `pipemesh demo`, the tests and the benchmarks run
// against. It is a real Kafka protocol implementation in process, not a mock.
package devbroker

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Topic is a topic to create at start.
type Topic struct {
	Name       string
	Partitions int32
}

// ParseTopic reads NAME:PARTITIONS, as given to --topic.
func ParseTopic(s string) (Topic, error) {
	name, parts, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return Topic{}, fmt.Errorf("topic %q: want NAME:PARTITIONS, for example orders:12", s)
	}
	n, err := strconv.Atoi(parts)
	if err != nil || n < 1 || n > 10000 {
		return Topic{}, fmt.Errorf("topic %q: partitions must be a number from 1 to 10000", s)
	}
	return Topic{Name: name, Partitions: int32(n)}, nil
}

// Config describes the cluster.
type Config struct {
	// Listen is the first broker's host:port; broker i listens on port+i.
	// Port 0 gives every broker a free port.
	Listen  string
	Brokers int
	Topics  []Topic
	// Extra options, for example kfake.BlackholeProduce for a sink.
	Options []kfake.Opt
}

// Start starts the cluster. Close it with (*kfake.Cluster).Close.
func Start(cfg Config) (*kfake.Cluster, error) {
	if cfg.Brokers <= 0 {
		cfg.Brokers = 3
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("devbroker: listen address %q is not host:port: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port+cfg.Brokers-1 > 65535 {
		return nil, fmt.Errorf("devbroker: listen port %q must leave room for %d brokers below 65536", portStr, cfg.Brokers)
	}
	ports := make([]int, cfg.Brokers)
	for i := range ports {
		if port != 0 {
			ports[i] = port + i
		}
	}
	opts := []kfake.Opt{
		kfake.Ports(ports...),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ln, err := net.Listen(network, net.JoinHostPort(host, p))
			if err != nil {
				return nil, err
			}
			return guardListener{ln}, nil
		}),
		kfake.ClusterID("pipemesh-dev"),
		kfake.AllowAutoTopicCreation(),
	}
	for _, t := range cfg.Topics {
		opts = append(opts, kfake.SeedTopics(t.Partitions, t.Name))
	}
	opts = append(opts, cfg.Options...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("devbroker: starting %d brokers at %s: %w", cfg.Brokers, cfg.Listen, err)
	}
	return c, nil
}
