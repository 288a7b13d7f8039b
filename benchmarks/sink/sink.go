package sink

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Defaults for the zero Config.
const (
	DefaultBrokers        = 3
	DefaultPartitions     = 6
	DefaultRetentionBytes = 1 << 30
)

// maxPartitions bounds the partitions of one topic, as `pipemesh broker
// --topic` does, so that a stray CreateTopics cannot exhaust memory.
const maxPartitions = 10000

// clusterID is the cluster id every Metadata response names.
const clusterID = "pipemesh-sink"

// Config describes a sink cluster.
type Config struct {
	// Listen is the first broker's host:port; broker i listens on port+i.
	// Port 0 gives every broker a free port. Default 127.0.0.1:0. Brokers
	// advertise the host of Listen, or 127.0.0.1 when it binds every
	// interface.
	Listen string
	// Brokers is the number of brokers (node ids 0 to Brokers-1).
	// Default 3.
	Brokers int
	// Partitions is the partition count of topics created by Metadata
	// requests for unknown topics, and by CreateTopics without a count.
	// Default 6.
	Partitions int
	// RetentionBytes bounds the memory that stored batches take, over all
	// partitions: past it the oldest segments are dropped and the log
	// start offsets of their partitions advance. Default 1 GiB.
	RetentionBytes int64
	// Logger receives connection errors and protocol violations.
	// Default slog.Default().
	Logger *slog.Logger
}

// Sink is a running sink cluster. Start it with Start and stop it with
// Close.
type Sink struct {
	cfg     Config
	log     *slog.Logger
	brokers []*broker
	topics  topics
	ret     *retention

	// apiKeys is the ApiVersions answer, built once.
	apiKeys []kmsg.ApiVersionsResponseApiKey
	// metaBrokers is every broker as Metadata names it; read-only.
	metaBrokers []kmsg.MetadataResponseBroker
	nextPID     atomic.Int64

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	connMu    sync.Mutex
	conns     map[net.Conn]struct{}
}

// broker is one listener of the cluster.
type broker struct {
	id   int32
	host string
	port int32
	ln   net.Listener
}

func (b *broker) addr() string { return net.JoinHostPort(b.host, strconv.Itoa(int(b.port))) }

// Start binds every broker's listener and starts serving.
func Start(cfg Config) (*Sink, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Brokers <= 0 {
		cfg.Brokers = DefaultBrokers
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Partitions > maxPartitions {
		return nil, fmt.Errorf("sink: %d default partitions is above the maximum of %d", cfg.Partitions, maxPartitions)
	}
	if cfg.RetentionBytes <= 0 {
		cfg.RetentionBytes = DefaultRetentionBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("sink: listen address %q is not host:port: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port+cfg.Brokers-1 > 65535 {
		return nil, fmt.Errorf("sink: listen port %q must leave room for %d brokers below 65536", portStr, cfg.Brokers)
	}
	advertise := host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		advertise = "127.0.0.1"
	}

	s := &Sink{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "sink"),
		ret:   newRetention(cfg.RetentionBytes),
		done:  make(chan struct{}),
		conns: make(map[net.Conn]struct{}),
	}
	s.topics.init()
	s.apiKeys = apiKeys()
	for i := range cfg.Brokers {
		p := 0
		if port != 0 {
			p = port + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			for _, b := range s.brokers {
				b.ln.Close()
			}
			return nil, fmt.Errorf("sink: broker %d listening on %s: %w (is another broker using the port?)", i, net.JoinHostPort(host, strconv.Itoa(p)), err)
		}
		b := &broker{id: int32(i), host: advertise, port: int32(ln.Addr().(*net.TCPAddr).Port), ln: ln}
		s.brokers = append(s.brokers, b)
		s.metaBrokers = append(s.metaBrokers, kmsg.MetadataResponseBroker{NodeID: b.id, Host: b.host, Port: b.port})
	}
	for _, b := range s.brokers {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.accept(b) }()
	}
	s.log.Info("sink brokers listening", "addrs", s.Addrs(), "retention_bytes", cfg.RetentionBytes, "default_partitions", cfg.Partitions)
	return s, nil
}

// Addrs returns the address of every broker, node id order: what clients
// dial and what Metadata advertises.
func (s *Sink) Addrs() []string {
	out := make([]string, len(s.brokers))
	for i, b := range s.brokers {
		out[i] = b.addr()
	}
	return out
}

// CreateTopic creates a topic with the given number of partitions, as a
// CreateTopics request would.
func (s *Sink) CreateTopic(name string, partitions int32) error {
	if err := validTopicName(name); err != nil {
		return fmt.Errorf("sink: creating topic: %w", err)
	}
	if partitions < 1 || partitions > maxPartitions {
		return fmt.Errorf("sink: creating topic %q: partitions must be from 1 to %d, not %d", name, maxPartitions, partitions)
	}
	if _, created := s.topics.create(s, name, partitions); !created {
		return fmt.Errorf("sink: creating topic %q: it already exists", name)
	}
	return nil
}

// Close stops every listener and connection and waits for them to end.
// Stored data goes with the Sink.
func (s *Sink) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		for _, b := range s.brokers {
			b.ln.Close()
		}
		s.connMu.Lock()
		for nc := range s.conns {
			nc.Close()
		}
		s.connMu.Unlock()
	})
	s.wg.Wait()
}

func (s *Sink) accept(b *broker) {
	for {
		nc, err := b.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
			default:
				s.log.Error("sink broker stopped accepting connections", "node_id", b.id, "addr", b.addr(), "err", err)
			}
			return
		}
		if !s.track(nc, true) {
			nc.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(nc, false)
			s.serveConn(b, nc)
		}()
	}
}

// track adds or removes a connection from the set Close closes. Adding
// fails once the Sink is closing.
func (s *Sink) track(nc net.Conn, add bool) bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if !add {
		delete(s.conns, nc)
		return true
	}
	select {
	case <-s.done:
		return false
	default:
	}
	s.conns[nc] = struct{}{}
	return true
}

// serveConn runs one connection and logs why it ended.
func (s *Sink) serveConn(b *broker, nc net.Conn) {
	c := newConn(s, b, nc)
	err := c.serve()
	nc.Close()
	closing := false
	select {
	case <-s.done:
		closing = true
	default:
	}
	switch {
	case err == nil || closing || errors.Is(err, net.ErrClosed) || errors.Is(err, errConnIO):
		s.log.Debug("sink connection closed", "node_id", b.id, "client", nc.RemoteAddr().String(), "requests", c.nreq, "err", err)
	default:
		s.log.Warn("sink closed a connection", "node_id", b.id, "client", nc.RemoteAddr().String(),
			"client_id", c.clientID, "requests", c.nreq, "reason", err)
	}
}

// leaderOf returns the broker that leads partition p: p modulo the number
// of brokers, so load spreads evenly.
func (s *Sink) leaderOf(p int32) int32 { return p % int32(len(s.brokers)) }
