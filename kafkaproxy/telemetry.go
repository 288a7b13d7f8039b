package kafkaproxy

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/pipemesh/pipemesh/lineage"
	"github.com/pipemesh/pipemesh/protocol"
)

// TelemetryConfig configures the observe stage: per-edge throughput
// counters, the Prometheus metrics made from them, and lineage.
type TelemetryConfig struct {
	// Disabled turns the observe stage off: no per-topic metrics, no
	// lineage, no request duration histograms. Connection and request
	// counters stay.
	Disabled bool
	// FlushInterval is how often counters go to Prometheus and lineage.
	// Default 1s.
	FlushInterval time.Duration
	// Lineage receives the flushed observations; nil: metrics only.
	Lineage lineage.Observer
	// MaxLabelValues caps how many distinct values each of the topic,
	// principal, client_id and group labels takes; values past the cap
	// (first come, first kept) are folded into "other". Default 100.
	MaxLabelValues int
	// LabelAllow lists values that always keep their own series, by label
	// name (topic, principal, client_id, group), whatever the cap.
	LabelAllow map[string][]string
	// MaxEdges caps the edges counted in memory; past it, new edges are
	// counted on one overflow edge (application, topic and group "other").
	// Default 10000.
	MaxEdges int
}

// Telemetry defaults.
const (
	DefaultFlushInterval  = time.Second
	DefaultMaxLabelValues = 100
	DefaultMaxEdges       = 10000
	// otherValue is what capped label values and overflowing edges fold into.
	otherValue = "other"
	// membershipTTL ages out consumer group memberships no heartbeat,
	// commit or join has refreshed.
	membershipTTL = 5 * time.Minute
)

func (c *TelemetryConfig) setDefaults() {
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.MaxLabelValues <= 0 {
		c.MaxLabelValues = DefaultMaxLabelValues
	}
	if c.MaxEdges <= 0 {
		c.MaxEdges = DefaultMaxEdges
	}
}

// Duration scopes: the broker's part and the whole.
const (
	scopeUpstream = 0
	scopeTotal    = 1
)

// telemetry is the proxy-wide side of the observe stage.
type telemetry struct {
	cfg    TelemetryConfig
	log    *slog.Logger
	m      *telemetryMetrics
	topics *TopicIDs
	groups *groupRegistry

	mu    sync.Mutex
	edges map[edgeKey]*edgeCounters
	list  []*edgeCounters

	refreshing atomic.Bool // a background topic-id refresh is running

	// flusher only
	caps    map[string]*labelCap
	obsBuf  []lineage.Observation
	flushMu sync.Mutex
}

func newTelemetry(cfg TelemetryConfig, reg prometheus.Registerer, topics *TopicIDs, log *slog.Logger) (*telemetry, error) {
	cfg.setDefaults()
	m, err := newTelemetryMetrics(reg, cfg.Disabled)
	if err != nil {
		return nil, err
	}
	if cfg.Disabled {
		return nil, nil
	}
	t := &telemetry{
		cfg: cfg, log: log, m: m, topics: topics,
		groups: newGroupRegistry(cfg.MaxEdges),
		edges:  make(map[edgeKey]*edgeCounters),
		caps:   make(map[string]*labelCap),
	}
	for _, l := range []string{"topic", "principal", "client_id", "group"} {
		t.caps[l] = newLabelCap(cfg.MaxLabelValues, cfg.LabelAllow[l])
	}
	return t, nil
}

// edge returns the counters of k with a reference taken for the caller's
// cache, creating them (or, past MaxEdges, handing out the overflow edge).
// Taking the reference under the lock is what lets the flusher forget an
// edge with none.
func (t *telemetry) edge(k edgeKey) *edgeCounters {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.edges[k]
	if e == nil && len(t.edges) >= t.cfg.MaxEdges {
		k = edgeKey{principal: otherValue, clientID: otherValue, topic: otherValue, consume: k.consume}
		e = t.edges[k]
		t.m.overflow.Inc()
	}
	if e == nil {
		e = &edgeCounters{key: k}
		t.edges[k] = e
		t.list = append(t.list, e)
		t.m.edges.Set(float64(len(t.list)))
	}
	e.refs.Add(1)
	return e
}

// forget drops edges that no connection holds and whose counts have all
// been flushed: memory follows the live connections, not history (which is
// the lineage graph's job).
func (t *telemetry) forget() {
	t.flushMu.Lock() // e.sent is the flusher's
	defer t.flushMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	kept := t.list[:0]
	for _, e := range t.list {
		// refs is 0 for good: only edge, under this lock, adds one.
		if e.refs.Load() == 0 && e.sent == [5]int64{e.bytes.Load(), e.records.Load(), e.batches.Load(), e.requests.Load(), e.errors.Load()} {
			delete(t.edges, e.key)
			continue
		}
		kept = append(kept, e)
	}
	clear(t.list[len(kept):])
	t.list = kept
	t.m.edges.Set(float64(len(t.list)))
}

// refreshTopics asks the proxy for fresh metadata in the background, one
// refresh at a time, so an unknown topic id gets a name soon.
func (t *telemetry) refreshTopics(p *Proxy, id [16]byte) {
	if p.ctx == nil || !t.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer t.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		defer cancel()
		if _, err := p.TopicName(ctx, id); err != nil {
			t.log.Debug("topic id still unknown after a metadata refresh; its traffic is not counted", "topic_id", fmt.Sprintf("%x", id), "err", err)
		}
	}()
}

// run flushes every FlushInterval until ctx ends, then once more.
func (t *telemetry) run(ctx context.Context) {
	if t == nil {
		return
	}
	tick := time.NewTicker(t.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			t.flush(time.Now())
			return
		case now := <-tick.C:
			t.flush(now)
			t.forget()
			t.groups.expire(now.Add(-membershipTTL))
		}
	}
}

// flush sends what each edge counted since the last flush to Prometheus and
// lineage.
func (t *telemetry) flush(now time.Time) {
	if t == nil {
		return
	}
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	t.mu.Lock()
	list := t.list
	t.mu.Unlock()
	obs := t.obsBuf[:0]
	for _, e := range list {
		cur := [5]int64{e.bytes.Load(), e.records.Load(), e.batches.Load(), e.requests.Load(), e.errors.Load()}
		var d [5]int64
		any := false
		for i := range cur {
			d[i] = cur[i] - e.sent[i]
			any = any || d[i] != 0
		}
		if !any {
			continue
		}
		e.sent = cur
		if e.prom == nil {
			e.prom = t.series(e.key)
		}
		e.prom.add(d)
		obs = append(obs, edgeObservation(e.key, d, now))
	}
	if t.cfg.Lineage != nil && len(obs) > 0 {
		t.cfg.Lineage.Observe(obs)
	}
	clear(obs)
	t.obsBuf = obs[:0]
}

// Flush sends counted traffic to Prometheus and lineage now instead of at
// the next tick; tests and shutdown use it.
func (p *Proxy) Flush() {
	p.tel.flush(time.Now())
}

func (t *telemetry) observeDuration(key int16, scope int, start time.Time) {
	if start.IsZero() || key < 0 || int(key) >= len(t.m.durations) {
		return
	}
	t.m.duration(key, scope).Observe(time.Since(start).Seconds())
}

// countError counts a per-partition error code the broker returned. Error
// codes are few and fixed, so the label set stays bounded.
func (t *telemetry) countError(key int16, code int16) {
	name := strconv.Itoa(int(code))
	if err := kerr.ErrorForCode(code); err != nil {
		if ke, ok := err.(*kerr.Error); ok {
			name = ke.Message
		}
	}
	t.m.errors.WithLabelValues(protocol.KeyName(key), name).Inc()
}

// edgeSeries are the Prometheus counters one edge adds to, resolved once
// through the label caps.
type edgeSeries struct {
	bytes, records, batches prometheus.Counter
	clientBytes, clientRecs prometheus.Counter
}

func (s *edgeSeries) add(d [5]int64) {
	if d[0] != 0 {
		s.bytes.Add(float64(d[0]))
		s.clientBytes.Add(float64(d[0]))
	}
	if d[1] != 0 {
		s.records.Add(float64(d[1]))
		s.clientRecs.Add(float64(d[1]))
	}
	if d[2] != 0 {
		s.batches.Add(float64(d[2]))
	}
}

func (t *telemetry) series(k edgeKey) *edgeSeries {
	dir := dirProduce
	if k.consume {
		dir = dirConsume
	}
	topic := t.caps["topic"].value(k.topic)
	principal := t.caps["principal"].value(k.principal)
	client := t.caps["client_id"].value(k.clientID)
	group := t.caps["group"].value(k.group)
	return &edgeSeries{
		bytes:       t.m.bytes.WithLabelValues(dir, topic),
		records:     t.m.records.WithLabelValues(dir, topic),
		batches:     t.m.batches.WithLabelValues(dir, topic),
		clientBytes: t.m.clientBytes.WithLabelValues(dir, principal, client, group),
		clientRecs:  t.m.clientRecords.WithLabelValues(dir, principal, client, group),
	}
}

// labelCap bounds one label's values: allow-listed values always pass, the
// first max other values get their own series, the rest read "other".
// Values are admitted first come rather than by volume, because moving a
// series into "other" later would make both counters jump.
type labelCap struct {
	max      int
	allow    map[string]bool
	admitted map[string]bool
}

func newLabelCap(max int, allow []string) *labelCap {
	c := &labelCap{max: max, allow: make(map[string]bool), admitted: make(map[string]bool)}
	for _, v := range allow {
		c.allow[v] = true
	}
	return c
}

func (c *labelCap) value(v string) string {
	if v == "" || c.allow[v] || c.admitted[v] {
		return v
	}
	if len(c.admitted) < c.max {
		c.admitted[v] = true
		return v
	}
	return otherValue
}
