package kafkaproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Proxy is a Kafka proxy for one upstream cluster. Construct it with New,
// bind it with Listen, and run it with Serve until its context ends.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	tel     *telemetry // nil when telemetry is disabled
	topics  *TopicIDs
	brokers *brokerMap
	sh      *shaping // quotas, recompression, memory limits

	bootstrap net.Listener
	control   *kgo.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	connMu  sync.Mutex
	conns   map[*conn]struct{}
	nextID  atomic.Uint64
	nextUp  atomic.Uint32
	ready   atomic.Bool
	readyMu sync.Mutex
	notYet  string // why not ready, for /readyz
	refresh chan chan error

	// Identity and authorization (authorize.go, sasl.go, audit.go); set
	// only when cfg.Policy is.
	audit        *auditLog
	authFails    *failureLimiter
	authFailures prometheus.Counter
}

// New checks cfg and returns a Proxy that is not yet listening.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("kafkaproxy: registering metrics: %w", err)
	}
	sh, err := newShaping(&cfg, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		sh:      sh,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "kafkaproxy"),
		m:       m,
		topics:  newTopicIDs(),
		conns:   make(map[*conn]struct{}),
		notYet:  "no metadata from the upstream cluster yet",
		refresh: make(chan chan error),
	}
	p.brokers = newBrokerMap(p)
	if cfg.Policy != nil {
		if err := p.initAuth(); err != nil {
			return nil, err
		}
	}
	if p.tel, err = newTelemetry(cfg.Telemetry, cfg.Registerer, p.topics, p.log); err != nil {
		return nil, fmt.Errorf("kafkaproxy: registering telemetry metrics: %w", err)
	}
	return p, nil
}

// Listen binds the bootstrap listener. Broker listeners are bound as brokers
// are learned.
func (p *Proxy) Listen() error {
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("kafkaproxy: listening on %s for clients: %w (is another proxy or broker using the port?)", p.cfg.Listen, err)
	}
	p.bootstrap = ln
	return nil
}

// Addr is the bound bootstrap address, useful when Listen was given port 0.
func (p *Proxy) Addr() string { return p.bootstrap.Addr().String() }

// Topics is the topic id to name cache that later stages use for Fetch v13+
// and Produce v13.
func (p *Proxy) Topics() *TopicIDs { return p.topics }

// Ready reports whether the last metadata refresh succeeded, so that every
// upstream broker is known and has a listener, and if not, why.
func (p *Proxy) Ready() (bool, string) {
	if p.ready.Load() {
		return true, ""
	}
	p.readyMu.Lock()
	defer p.readyMu.Unlock()
	return false, p.notYet
}

// BrokerAddrs returns the advertised address of every broker listener by
// node id.
func (p *Proxy) BrokerAddrs() map[int32]string { return p.brokers.advertised() }

// Serve accepts clients until ctx ends, then closes every listener and
// connection and returns once they are gone.
func (p *Proxy) Serve(ctx context.Context) error {
	if p.bootstrap == nil {
		if err := p.Listen(); err != nil {
			return err
		}
	}
	p.ctx, p.cancel = context.WithCancel(ctx)
	defer p.cancel()
	ctl, err := kgo.NewClient(append(p.upstreamOpts(),
		kgo.SeedBrokers(p.cfg.Upstreams...),
		kgo.DialTimeout(p.cfg.DialTimeout),
		kgo.ClientID("pipemesh-proxy"),
	)...)
	if err != nil {
		return fmt.Errorf("kafkaproxy: creating the metadata client: %w", err)
	}
	p.control = ctl
	defer ctl.Close()

	p.log.Info("kafka proxy listening", "bootstrap", p.Addr(), "upstream", p.cfg.Upstreams,
		"advertise_host", p.cfg.AdvertiseHost, "broker_port_base", p.cfg.BrokerPortBase)
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.tel.run(p.ctx) }()
	go func() { defer p.wg.Done(); p.acceptLoop(p.bootstrap, bootstrapNode) }()
	go func() { defer p.wg.Done(); p.metadataLoop() }()

	<-p.ctx.Done()
	p.bootstrap.Close()
	p.brokers.closeAll()
	p.connMu.Lock()
	for c := range p.conns {
		c.close(reasonShutdown, nil)
	}
	p.connMu.Unlock()
	p.wg.Wait()
	p.tel.flush(time.Now()) // what the last connections counted
	p.log.Info("kafka proxy stopped")
	return nil
}

// bootstrapNode marks connections accepted on the bootstrap listener.
const bootstrapNode = -1

func (p *Proxy) acceptLoop(ln net.Listener, node int32) {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			// Typically EMFILE: wait instead of spinning, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Error("accepting a client connection failed; raise the open-file limit if this repeats", "listener", ln.Addr().String(), "err", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.handle(nc, node) }()
	}
}

// metadataLoop asks the cluster for its brokers and topics at start and then
// every MetadataRefresh, or at once when a stage asks (TopicName on a miss).
func (p *Proxy) metadataLoop() {
	t := time.NewTimer(0)
	defer t.Stop()
	var failures int
	for {
		var reply chan error
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		case reply = <-p.refresh:
		}
		err := p.refreshMetadata()
		if reply != nil {
			reply <- err
		}
		next := p.cfg.MetadataRefresh
		if err != nil {
			failures++
			next = min(time.Duration(failures)*time.Second, p.cfg.MetadataRefresh)
			p.readyMu.Lock()
			p.notYet = err.Error()
			p.readyMu.Unlock()
			// Not ready while the cluster cannot be asked: clients
			// sent here now would fail. Log the first failure and
			// then every tenth, not every retry.
			p.ready.Store(false)
			if failures%10 == 1 {
				p.log.Warn("metadata refresh failed; clients may fail until it succeeds, retrying", "upstream", p.cfg.Upstreams, "failures", failures, "retry_in", next, "err", err)
			}
		} else {
			if failures > 0 || !p.ready.Load() {
				p.log.Info("upstream cluster reachable", "brokers", p.brokers.advertised())
			}
			failures = 0
			p.ready.Store(true)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

func (p *Proxy) refreshMetadata() error {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout+5*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest() // nil Topics: every topic
	resp, err := req.RequestWith(ctx, p.control)
	if err != nil {
		return fmt.Errorf("kafkaproxy: metadata from %v: %w", p.cfg.Upstreams, err)
	}
	for _, b := range resp.Brokers {
		if _, _, err := p.brokers.advertise(b.NodeID, b.Host, b.Port); err != nil {
			return err
		}
	}
	for _, t := range resp.Topics {
		if t.Topic != nil {
			p.topics.put(t.TopicID, *t.Topic)
		}
	}
	return nil
}

// TopicName resolves a topic id, refreshing metadata once on a miss (a topic
// created since the last refresh).
func (p *Proxy) TopicName(ctx context.Context, id [16]byte) (string, error) {
	if n, ok := p.topics.Name(id); ok {
		return n, nil
	}
	reply := make(chan error, 1)
	select {
	case p.refresh <- reply:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	select {
	case err := <-reply:
		if err != nil {
			return "", err
		}
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if n, ok := p.topics.Name(id); ok {
		return n, nil
	}
	return "", fmt.Errorf("kafkaproxy: topic id %x is unknown to the cluster", id)
}

func (p *Proxy) track(c *conn, add bool) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if add {
		if p.ctx.Err() != nil {
			c.close(reasonShutdown, nil)
		}
		p.conns[c] = struct{}{}
		p.m.open.Inc()
		return
	}
	delete(p.conns, c)
	p.m.open.Dec()
}

// dialUpstream connects a client accepted on the listener of node (or the
// bootstrap listener) to its broker.
func (p *Proxy) dialUpstream(node int32) (net.Conn, string, error) {
	d := net.Dialer{Timeout: p.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	if node != bootstrapNode {
		addr, ok := p.brokers.upstream(node)
		if !ok {
			return nil, "", fmt.Errorf("broker %d is not known to the proxy", node)
		}
		c, err := d.DialContext(p.ctx, "tcp", addr)
		if err == nil {
			c, err = p.secureUpstream(c, addr)
		}
		if err != nil {
			p.m.dialErrors.Inc()
		}
		return c, addr, err
	}
	// Rotate the starting upstream so bootstrap load spreads, then fall
	// through the list until one answers.
	start := int(p.nextUp.Add(1))
	var errs []error
	for i := range p.cfg.Upstreams {
		addr := p.cfg.Upstreams[(start+i)%len(p.cfg.Upstreams)]
		c, err := d.DialContext(p.ctx, "tcp", addr)
		if err == nil {
			c, err = p.secureUpstream(c, addr)
		}
		if err == nil {
			return c, addr, nil
		}
		p.m.dialErrors.Inc()
		errs = append(errs, err)
	}
	return nil, fmt.Sprint(p.cfg.Upstreams), errors.Join(errs...)
}
