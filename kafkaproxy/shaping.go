package kafkaproxy

import (
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipemesh/pipemesh/policy"
	"github.com/pipemesh/pipemesh/protocol"
)

// shaping is the proxy-wide state of the shape and transform stages of the
// request pipeline: the quota and recompression rules in force, the memory
// budget and the per-connection in-flight cap.
type shaping struct {
	rules       atomic.Pointer[ruleSet] // never nil once built
	budget      *budget
	inflightCap int64
	m           *shapeMetrics

	// What compiling a rule set needs; mu orders installs.
	mu       sync.Mutex
	codecs   *protocol.Codecs // made with the first compression rule, then kept
	workers  chan struct{}
	maxFrame int
	// static: the rules came with the Config (the config file); the
	// policy file's are refused, not merged.
	static bool
	log    *slog.Logger
}

// ruleSet is the compression and quota rules in force, compiled. A policy
// reload swaps in a new one whole; a request reads the pointer once, so one
// request sees one rule set throughout, and connections follow the reload
// from their next request without reconnecting.
type ruleSet struct {
	compress *compressor // nil without compression rules
	quotas   *quotas     // nil without quota rules
	// compression is what compress was compiled from, so that a reload
	// that leaves it alone keeps it.
	compression []CompressionRule
}

func newShaping(cfg *Config, reg prometheus.Registerer) (*shaping, error) {
	if err := validateRules(cfg.Compression, cfg.Quotas, cfg.Limits); err != nil {
		return nil, err
	}
	m, err := newShapeMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("kafkaproxy: registering metrics: %w", err)
	}
	m.setLabelCaps(cfg.Telemetry)
	lim := cfg.Limits
	if lim.MemoryBytes == 0 {
		lim.MemoryBytes = defaultMemoryBytes()
	}
	if lim.MaxInflightBytesPerConnection == 0 {
		lim.MaxInflightBytesPerConnection = DefaultMaxInflightBytesPerConnection
	}
	cfg.Limits = lim
	workers := cfg.RecompressWorkers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	sh := &shaping{
		budget:      newBudget(lim.MemoryBytes, m),
		inflightCap: lim.MaxInflightBytesPerConnection,
		m:           m,
		workers:     make(chan struct{}, workers),
		maxFrame:    int(cfg.MaxFrameBytes),
		static:      len(cfg.Compression) > 0 || len(cfg.Quotas) > 0,
		log:         cfg.Logger.With("component", "kafkaproxy"),
	}
	comp, quotas, from := cfg.Compression, cfg.Quotas, "config"
	if cfg.Policy != nil {
		pol := cfg.Policy.Current()
		if sh.static && pol.HasTrafficRules() {
			return nil, fmt.Errorf("kafkaproxy: compression or quota rules are set both in the Config (config file) and in the policy file %s; keep them in one", pol.File)
		}
		if !sh.static {
			if comp, quotas, err = FileRules(pol.Compression(), pol.Quotas()); err != nil {
				return nil, fmt.Errorf("kafkaproxy: policy file %s: %w", pol.File, err)
			}
			from = pol.File
		}
	}
	if _, err := sh.install(comp, quotas); err != nil {
		return nil, fmt.Errorf("kafkaproxy: %w", err)
	}
	cfg.Logger.Info("kafka memory limits and rules", "component", "kafkaproxy",
		"memory_budget_bytes", lim.MemoryBytes, "max_inflight_bytes_per_connection", lim.MaxInflightBytesPerConnection,
		"compression_rules", len(comp), "quota_rules", len(quotas), "rules_from", from, "recompress_workers", workers)
	if cfg.Policy != nil {
		cfg.Policy.OnChange(sh.fromPolicy)
	}
	return sh, nil
}

// install compiles rules and swaps them in. Parts that did not change are
// kept as they are: the compressor, and the quota allowances (with their
// debts) of unchanged quota rules. It reports whether anything changed.
func (s *shaping) install(comp []CompressionRule, qrules []QuotaRule) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.rules.Load()
	rs := &ruleSet{compression: slices.Clone(comp)}
	var oldQ *quotas
	if old != nil {
		oldQ = old.quotas
	}
	sameComp := old != nil && slices.Equal(old.compression, comp)
	sameQuotas := old != nil && ((oldQ == nil && len(qrules) == 0) || (oldQ != nil && slices.Equal(oldQ.rules, qrules)))
	if sameComp && sameQuotas {
		return false, nil
	}
	if sameComp {
		rs.compress = old.compress
	} else if len(comp) > 0 {
		if s.codecs == nil {
			codecs, err := protocol.NewCodecs(s.maxFrame)
			if err != nil {
				return false, err
			}
			s.codecs = codecs
		}
		rs.compress = compressorFor(comp, s.codecs, s.workers, s.m)
	}
	if sameQuotas {
		rs.quotas = oldQ
	} else {
		rs.quotas = newQuotas(slices.Clone(qrules), s.m, oldQ)
	}
	s.rules.Store(rs)
	s.m.rules.WithLabelValues("compression").Set(float64(len(comp)))
	s.m.rules.WithLabelValues("quota").Set(float64(len(qrules)))
	return true, nil
}

// fromPolicy follows the policy file: it is called with every policy the
// store swaps in, and installs its compression and quota rules.
func (s *shaping) fromPolicy(pol *policy.Policy) {
	if s.static {
		if pol.HasTrafficRules() {
			s.log.Error("the policy file's compression and quota rules are not used: the config file sets rules already; keep them in one file",
				"file", pol.File)
		}
		return
	}
	comp, quotas, err := FileRules(pol.Compression(), pol.Quotas())
	if err == nil {
		err = validateRules(comp, quotas, Limits{})
	}
	var changed bool
	if err == nil {
		changed, err = s.install(comp, quotas)
	}
	if err != nil {
		s.log.Error("the policy file's compression and quota rules were refused; the previous ones stay in force",
			"file", pol.File, "err", err)
		return
	}
	if changed {
		s.log.Info("kafka compression and quota rules in force from the policy file",
			"file", pol.File, "compression_rules", len(comp), "quota_rules", len(quotas))
	}
}

// connShaping is one connection's part of those stages.
type connShaping struct {
	comp        connCompression
	pq          *principalQuotas // request goroutine only
	pqShared    atomic.Pointer[principalQuotas]
	throttleBuf []byte        // response goroutine only
	pauseUntil  atomic.Int64  // unix nanos until which the client is not read
	inflight    atomic.Int64  // request bytes the broker has not answered
	room        chan struct{} // a response gave in-flight bytes back
}

func (s *connShaping) init() { s.room = make(chan struct{}, 1) }

// shapeState is what the stages note on a pending request for its response.
type shapeState struct {
	throttle time.Duration // from request and produce quotas
	size     int64         // counted in the connection's in-flight bytes
	whole    bool          // read the response whole (per-topic fetch quotas)
}

// waitToRead is called before reading the next request. It holds the
// client back while it is throttled, and while the connection has its cap
// of request bytes in flight (then at least one answer is owed, so room
// comes). Requests batched for the broker are flushed first: their answers
// are what ends the wait. It returns false when the connection closes.
func (c *conn) waitToRead() bool {
	if !c.waitThrottled() {
		return false
	}
	sh := &c.sh
	if sh.inflight.Load() < c.p.sh.inflightCap || c.owed.Load() == 0 {
		return true
	}
	if !c.flushUpstream() {
		return false
	}
	c.p.sh.m.inflightCapWaits.Inc()
	for sh.inflight.Load() >= c.p.sh.inflightCap && c.owed.Load() > 0 {
		select {
		case <-sh.room:
		case <-c.done:
			return false
		}
	}
	return true
}

// waitThrottled waits out a throttle pause. It runs before a request is
// read and again before one is forwarded: a throttle that began while the
// request goroutine was already waiting for the next frame holds that frame
// back, as a broker's muted channel leaves it unread in the socket.
func (c *conn) waitThrottled() bool {
	until := c.sh.pauseUntil.Load()
	if until == 0 {
		return true
	}
	d := time.Until(time.Unix(0, until))
	if d <= 0 {
		return true
	}
	if !c.flushUpstream() {
		return false
	}
	c.p.sh.m.throttlePauses.Inc()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

func (c *conn) flushUpstream() bool {
	if err := c.uw.Flush(); err != nil {
		c.close(reasonUpstreamClosed, fmt.Errorf("writing to broker: %w", err))
		return false
	}
	return true
}

// readWhole reads the rest of a request streamed past its head, with the
// memory for it taken from the budget first. It returns the whole body and
// the bytes held; ok is false when the connection closed while waiting.
func (c *conn) readWhole(frame []byte) (body []byte, held int64, ok bool, err error) {
	rest := c.cr.Rest()
	if rest == 0 {
		return frame, 0, true, nil
	}
	held = int64(len(c.cr.Frame()) + rest)
	if !c.p.sh.budget.requests.acquire(held, c.done) {
		return nil, 0, false, nil
	}
	body, err = c.cr.ReadRest()
	return body, held, true, err
}

// headNeedsWhole reports whether a Produce request streamed past its head
// must be read whole for a stage whose rules match is asked about: yes when
// a topic in the head matches, or when the head ends before the request has
// named all its topics. A single-topic request to a topic without a rule
// keeps streaming through (cut-through).
func (c *conn) headNeedsWhole(hdr *protocol.RequestHeader, frame []byte, match func(topic []byte, id [16]byte) bool) bool {
	if c.cr.Rest() == 0 {
		return false
	}
	hit := false
	all := protocol.ProduceTopics(hdr.Version, frame[hdr.BodyOffset:], func(topic []byte, id [16]byte) {
		hit = hit || match(topic, id)
	})
	return hit || !all
}

// shapeRequest runs the shape (quotas) and transform (recompression) stages
// on a request whose header is parsed; frame is what NextHead returned. It
// returns the frame to forward, with its size prefix, and the budget bytes
// held for it until it is written. ok is false when the connection closed
// while waiting for memory; err is a read error on the client.
func (c *conn) shapeRequest(hdr *protocol.RequestHeader, raw, frame []byte, p *pending, respond bool) (out []byte, held int64, ok bool, err error) {
	defer func() {
		if !ok || err != nil {
			c.p.sh.budget.requests.release(held)
			held = 0
		}
	}()
	if !c.waitThrottled() {
		return nil, 0, false, nil
	}
	rs := c.p.sh.rules.Load() // once: this request sees one rule set
	pq := c.quotasFor(rs.quotas)
	if pq != nil {
		if hdr.Key == protocol.ProduceKey && !pq.produce.empty() && hdr.BodyOffset >= 0 && hdr.Version >= 3 &&
			c.headNeedsWhole(hdr, frame, func(topic []byte, id [16]byte) bool {
				return c.topicRate(&pq.produce, &protocol.PartitionData{Topic: topic, TopicID: id}) != nil
			}) {
			var h int64
			if frame, h, ok, err = c.readWhole(frame); !ok || err != nil {
				return nil, h, ok, err
			}
			raw = c.cr.Frame()
			held += h
		}
		var body []byte
		if c.cr.Rest() == 0 && hdr.BodyOffset >= 0 {
			body = frame[hdr.BodyOffset:]
		}
		p.sh.throttle = c.chargeRequest(pq, hdr, body, len(raw)-4+c.cr.Rest())
		p.sh.whole = hdr.Key == protocol.FetchKey && !pq.fetch.empty()
		if p.sh.throttle > 0 && !respond {
			c.pause(p.sh.throttle) // acks=0: no response to carry it
		}
	}
	out = raw
	if hdr.Key == protocol.ProduceKey {
		var h int64
		out, h, ok, err = c.compressProduce(rs.compress, hdr, raw, frame)
		held += h
		if !ok || err != nil {
			return nil, held, ok, err
		}
	}
	if respond {
		p.sh.size = int64(len(out) + c.cr.Rest())
		c.sh.inflight.Add(p.sh.size)
		c.p.sh.m.inflightBytes.Add(float64(p.sh.size))
	}
	return out, held, true, nil
}

// holdResponse takes budget for a response about to be read whole: its size
// is peeked from the stream first, so the memory is accounted before it is
// allocated. ok is false when the connection closed while waiting.
func (c *conn) holdResponse() (held int64, ok bool) {
	n, err := c.ur.PeekSize()
	if err != nil || n <= 0 {
		return 0, true // Next reports the error
	}
	held = int64(min(n, c.p.cfg.MaxFrameBytes)) + 4
	return held, c.p.sh.budget.responses.acquire(held, c.done)
}

// shapeResponse charges fetch quotas, announces the throttle in the
// response and pauses the client for it. out is the response frame as it
// will be sent (size prefix included, maybe only its head); it returns the
// frame to send instead.
func (c *conn) shapeResponse(p *pending, out []byte) []byte {
	throttle := p.sh.throttle
	if p.key == protocol.FetchKey && c.p.sh.rules.Load().quotas != nil {
		if pq := c.sh.respPQ(c); pq != nil {
			whole := c.ur.Rest() == 0
			var body []byte
			if whole {
				if off, err := protocol.ResponseBodyOffset(out[4:], protocol.FlexibleResponseHeader(p.key, p.version)); err == nil {
					body = out[4+off:]
				}
			}
			throttle = max(throttle, c.chargeFetch(pq, p.version, body, len(out)-4+c.ur.Rest()))
		}
	}
	if throttle <= 0 {
		return out
	}
	if pq := c.sh.respPQ(c); pq != nil {
		pq.metrics.replies.Inc()
	}
	c.pause(throttle)
	return c.announceThrottle(p, out, c.ur.Rest() == 0, throttle)
}

// respPQ is the quotas the request side resolved last, for the response
// goroutine.
func (s *connShaping) respPQ(c *conn) *principalQuotas {
	return s.pqShared.Load()
}

// responseDone gives back what the response's request held.
func (c *conn) responseDone(p *pending, held int64) {
	c.p.sh.budget.responses.release(held)
	if p.sh.size > 0 {
		c.sh.inflight.Add(-p.sh.size)
		c.p.sh.m.inflightBytes.Sub(float64(p.sh.size))
		select {
		case c.sh.room <- struct{}{}:
		default:
		}
	}
}

// closeShaping gives back the in-flight bytes of requests that will never
// be answered because the connection closed.
func (c *conn) closeShaping() {
	if n := c.sh.inflight.Swap(0); n > 0 {
		c.p.sh.m.inflightBytes.Sub(float64(n))
	}
}
