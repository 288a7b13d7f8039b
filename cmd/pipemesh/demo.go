package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/lineage"
)

const demoAbout = `Run everything on embedded defaults: a 3-broker kfake cluster, the proxy in
front of it, and live pipelines through the proxy: the "orders-service"
producer writing to topic "orders" and the "billing" consumer group reading it
(checked: every order once), plus payments, inventory and clickstream
producers, a stream processor (order-enricher) and more consumer groups, so the
lineage web view opens on a lively graph.
On the Flight side it runs the built-in Flight dataset service, the Flight
proxy in front of it, and a Spark-style job ("fare-report") that reads dataset
"trips" through the proxy (GetFlightInfo, then DoGet on every endpoint in
parallel), aggregates it and writes the result back with DoPut.
It prints the addresses to point your own clients at and the web view's URL,
then a status line every few seconds. Ctrl-C stops it.`

// Demo pipeline names, as they show up in logs, metrics and (later) lineage.
const (
	demoTopic    = "orders"
	demoProducer = "orders-service"
	demoGroup    = "billing"
	demoConsumer = "billing-service"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "[flags]", demoAbout, stderr)
	kafkaListen := fs.String("kafka-listen", "127.0.0.1:19092", "proxy bootstrap `host:port`")
	adminListen := fs.String("admin-listen", admin.DefaultListen, "admin `host:port` (/healthz, /readyz, /metrics)")
	brokerListen := fs.String("broker-listen", "127.0.0.1:0", "first kfake broker `host:port` (0: free ports)")
	rate := fs.Int("rate", 20, "records per second the demo producer writes")
	duration := fs.Duration("duration", 0, "stop after this `long` (0: run until Ctrl-C)")
	every := fs.Duration("status-every", 5*time.Second, "how often to print the pipeline status")
	logLevel := fs.String("log-level", "warn", "proxy log level: debug, info, warn or error")
	flightListen := fs.String("flight-listen", "127.0.0.1:18815", "Flight proxy `host:port`")
	flightDir := fs.String("flight-data-dir", "", "`directory` for the Flight dataset service (default: a temporary one, removed at exit)")
	dataDir := fs.String("data-dir", "", "`dir` to keep the lineage graph in across runs (default: memory only)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *rate < 1 {
		return fmt.Errorf("--rate %d: want at least 1", *rate)
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	cluster, err := devbroker.Start(devbroker.Config{Listen: *brokerListen, Brokers: 3, Topics: demoTopics})
	if err != nil {
		return err
	}
	defer cluster.Close()

	s := &settings{adminListen: *adminListen}
	s.proxy = kafkaproxy.Config{Listen: *kafkaListen, Upstreams: cluster.ListenAddrs()}
	s.telemetry = telemetrySettings{enabled: true, lineage: lineage.Config{DataDir: *dataDir}}
	if strings.HasSuffix(*kafkaListen, ":0") {
		s.proxy.BrokerPortBase = -1 // one embedded proxy: free ports are fine
	}
	fl, stopFlight, err := startDemoFlight(ctx, *flightListen, *flightDir, s, log)
	if err != nil {
		return err
	}
	defer stopFlight()
	// The proxy outlives the pipeline so the demo clients can leave their
	// group cleanly through it before it stops.
	proxyCtx, stopProxy := context.WithCancel(context.Background())
	defer stopProxy()
	ready := make(chan *kafkaproxy.Proxy, 1)
	adminAddr := make(chan string, 1)
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- serve(proxyCtx, s, log, func(p *kafkaproxy.Proxy, a *admin.Server) {
			ready <- p
			adminAddr <- a.Addr()
		})
	}()
	var p *kafkaproxy.Proxy
	select {
	case p = <-ready:
	case err := <-serveErr:
		return fmt.Errorf("%w (another pipemesh running? pick other ports with --kafka-listen and --admin-listen)", err)
	}
	adm := <-adminAddr
	fp := <-fl.proxy
	if err := waitReady(ctx, p); err != nil {
		return err
	}

	fmt.Fprintf(stdout, `pipemesh demo is running.

  Kafka bootstrap (through the proxy): %s
  Brokers as clients see them:         %s
  Real brokers behind it (kfake):      %s
  Admin:                               http://%s/metrics  /healthz  /readyz
  Lineage web view:                    http://%s/lineage

  Pipeline: %q produces to topic %q; consumer group %q (%q) reads it,
  both through the proxy. More services produce to payments, inventory and
  clickstream; order-enricher turns orders into orders-enriched; groups
  fraud-detection, warehouse, analytics and notifications read them.

Point any Kafka client at %s, for example:
  kcat -b %s -L
  kcat -b %s -C -t %s -c 5

  Arrow Flight (through the proxy):    grpc://%s
  Flight dataset service behind it:    grpc://%s
  Flight jobs: %q writes dataset %q; %q reads it over every endpoint
  in parallel and writes %q. See docs/flight.md.

Ctrl-C stops it.
`, p.Addr(), strings.Join(sortedAddrs(p.BrokerAddrs()), ", "), strings.Join(cluster.ListenAddrs(), ", "), adm, adm,
		demoProducer, demoTopic, demoGroup, demoConsumer, p.Addr(), p.Addr(), p.Addr(), demoTopic,
		fp.Addr(), fl.upstream, demoIngestJob, demoTrips, demoReportJob, demoReport)

	pl := &pipeline{bootstrap: p.Addr(), rate: *rate, log: log}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); pl.run(ctx) }()
	go func() { defer wg.Done(); fl.run(ctx, fp.Addr(), *every) }()
	go func() { defer wg.Done(); runServices(ctx, p.Addr(), *rate, log) }()
	t := time.NewTicker(*every)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-serveErr:
			return err
		case <-t.C:
			fmt.Fprintln(stdout, fl.status())
			fmt.Fprintln(stdout, pl.status())
		}
	}
	wg.Wait()
	fmt.Fprintln(stdout, fl.status())
	fmt.Fprintln(stdout, pl.status())
	stopProxy()
	if err := <-serveErr; err != nil {
		return err
	}
	return errors.Join(pl.err(), fl.err())
}

func waitReady(ctx context.Context, p *kafkaproxy.Proxy) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(15 * time.Second)
	for {
		if ok, _ := p.Ready(); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			_, why := p.Ready()
			return fmt.Errorf("proxy not ready after 15s: %s", why)
		case <-t.C:
		}
	}
}

func sortedAddrs(m map[int32]string) []string {
	out := make([]string, 0, len(m))
	for id := int32(0); len(out) < len(m) && id < 1<<16; id++ {
		if a, ok := m[id]; ok {
			out = append(out, a)
		}
	}
	return out
}

// pipeline is the demo's producer service and consumer group. The consumer
// checks what it reads: every order once, none missing at the end.
type pipeline struct {
	bootstrap string
	rate      int
	log       *slog.Logger

	produced atomic.Int64
	consumed atomic.Int64
	dupes    atomic.Int64
	mu       sync.Mutex
	seen     map[int64]bool
	failure  error
}

type order struct {
	ID       int64   `json:"order_id"`
	Customer string  `json:"customer"`
	Amount   float64 `json:"amount"`
}

func (pl *pipeline) run(ctx context.Context) {
	pl.seen = make(map[int64]bool)
	prod, err := kgo.NewClient(kgo.SeedBrokers(pl.bootstrap), kgo.ClientID(demoProducer), kgo.DefaultProduceTopic(demoTopic))
	if err != nil {
		pl.fail(err)
		return
	}
	defer prod.Close()
	cons, err := kgo.NewClient(kgo.SeedBrokers(pl.bootstrap), kgo.ClientID(demoConsumer),
		kgo.ConsumerGroup(demoGroup), kgo.ConsumeTopics(demoTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		pl.fail(err)
		return
	}
	defer cons.Close()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			fs.EachError(func(t string, p int32, err error) {
				if ctx.Err() == nil {
					pl.log.Warn("demo consumer fetch error", "topic", t, "partition", p, "err", err)
				}
			})
			fs.EachRecord(pl.record)
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(pl.rate))
	defer tick.Stop()
	customers := []string{"ada", "grace", "linus", "barbara", "ken"}
	for id := int64(1); ; id++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
		}
		v, _ := json.Marshal(order{ID: id, Customer: customers[id%int64(len(customers))], Amount: float64(id%97) + 0.5})
		prod.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "order-%d", id), Value: v}, func(_ *kgo.Record, err error) {
			if err == nil {
				pl.produced.Add(1)
			} else if ctx.Err() == nil {
				pl.log.Warn("demo producer error", "err", err)
			}
		})
	}
}

func (pl *pipeline) record(r *kgo.Record) {
	var o order
	if err := json.Unmarshal(r.Value, &o); err != nil {
		pl.fail(fmt.Errorf("demo consumer read a corrupt record at %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err))
		return
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.seen[o.ID] {
		pl.dupes.Add(1)
		return
	}
	pl.seen[o.ID] = true
	pl.consumed.Add(1)
}

func (pl *pipeline) fail(err error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.failure == nil {
		pl.failure = err
	}
}

func (pl *pipeline) err() error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.failure
}

func (pl *pipeline) status() string {
	p, c, d := pl.produced.Load(), pl.consumed.Load(), pl.dupes.Load()
	return fmt.Sprintf("%s  pipeline: %s produced %d orders, %s consumed %d (%d behind, %d duplicates) through the proxy",
		time.Now().Format(time.TimeOnly), demoProducer, p, demoGroup, c, max(p-c, 0), d)
}
