package kafkaproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipemesh/pipemesh/policy"
	"github.com/pipemesh/pipemesh/protocol"
)

// Buffer sizes of a connection pair. 64 KiB reads take a burst of pipelined
// small requests in one syscall; larger frames bypass the buffers.
const (
	readBufBytes  = 64 << 10
	writeBufBytes = 64 << 10
)

// streamHeadBytes is how much of a large frame the proxy reads before it
// starts forwarding: enough for every header and for what the stages read
// (acks, and later topic names). The rest streams through as it arrives
// (cut-through), so a 1 MiB produce batch reaches the broker without first
// being stored whole in the proxy, which would add its full transfer time to
// every request's latency.
const streamHeadBytes = 64 << 10

// drainTimeout bounds how long a connection whose client stopped sending
// waits for the broker to answer what is still owed.
const drainTimeout = 30 * time.Second

// pending is one request awaiting its response, in the order the client sent
// it. local, when set, is a whole response frame the proxy makes itself; it
// is written in its turn instead of reading one from the broker.
type pending struct {
	key, version int16
	corr         int32
	local        []byte
	authz        *authzAfter // set when the policy must see the response (authorize.go)
	start        time.Time   // for the duration histograms; zero when telemetry is off
	sh           shapeState
}

// conn is one client connection and the upstream connection paired with it.
// One goroutine reads requests and writes them upstream; another reads
// responses and writes them to the client. Each side's writer has exactly one
// goroutine, so no write needs a lock.
type conn struct {
	p      *Proxy
	id     uint64
	node   int32
	client net.Conn
	up     net.Conn
	upAddr string

	cr *protocol.Reader // from client
	uw *bufio.Writer    // to upstream
	ur *protocol.Reader // from upstream
	cw *bufio.Writer    // to client

	inflight chan pending
	done     chan struct{}
	once     sync.Once
	reason   string
	err      error

	lastActive atomic.Int64 // unix nanos of the last frame either way
	owed       atomic.Int32 // responses the client is waiting for
	nreq       atomic.Int64
	clientID   string    // first client id seen; set by the request goroutine
	obs        *connObs  // the observe stage; nil when telemetry is off
	scratch    []byte    // response rewriting; response goroutine only
	started    time.Time // for the close log

	// principal is who the client is, as Kafka names it: "User:alice"
	// after SASL or from a client certificate, "User:ANONYMOUS" before;
	// empty with neither a policy nor a client certificate. Written only
	// by the request goroutine (SASL); other stages read it there, or copy
	// it into what they hand to the response goroutine.
	principal string
	sasl      saslState // request goroutine only (sasl.go)

	sh connShaping // quotas, recompression, memory limits (shaping.go)
}

func (p *Proxy) handle(nc net.Conn, node int32) {
	if p.cfg.WrapClientConn != nil {
		nc = p.cfg.WrapClientConn(nc)
	}
	p.m.accepted.Inc()
	nc, principal, ok := p.acceptTLS(nc) // tls.go; nc itself without TLS
	if !ok {
		return
	}
	c := &conn{
		p: p, id: p.nextID.Add(1), node: node, client: nc,
		inflight: make(chan pending, p.cfg.MaxInFlight),
		done:     make(chan struct{}),
		started:  time.Now(),
	}
	if p.cfg.Policy != nil {
		c.principal = policy.Anonymous
	}
	if principal != "" {
		c.principal = principal
	}
	c.sh.init()
	c.touch()
	p.track(c, true)
	defer p.track(c, false)
	defer c.closeShaping()

	up, addr, err := p.dialUpstream(node)
	c.upAddr = addr
	if err != nil {
		c.close(reasonUpstreamUnreachable, err)
		c.logClose()
		return
	}
	c.up = up
	select {
	case <-c.done: // shut down while dialing
		up.Close()
		c.logClose()
		return
	default:
	}
	c.cr = protocol.NewReader(nc, p.cfg.MaxFrameBytes, readBufBytes)
	c.uw = bufio.NewWriterSize(up, writeBufBytes)
	c.ur = protocol.NewReader(up, p.cfg.MaxFrameBytes, readBufBytes)
	c.cw = bufio.NewWriterSize(nc, writeBufBytes)
	c.obs = p.tel.newConn(c)
	p.log.Info("kafka connection opened", c.attrs()...)

	idle := time.AfterFunc(p.cfg.IdleTimeout, c.checkIdle)
	defer idle.Stop()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.responses() }()
	c.requests()
	wg.Wait()
	c.obs.close()
	c.logClose()
}

func (c *conn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// checkIdle closes a connection with nothing sent and nothing in flight for
// IdleTimeout, and otherwise re-arms itself for the remaining time.
func (c *conn) checkIdle() {
	select {
	case <-c.done:
		return
	default:
	}
	since := time.Since(time.Unix(0, c.lastActive.Load()))
	if since >= c.p.cfg.IdleTimeout && c.owed.Load() == 0 {
		c.close(reasonIdle, fmt.Errorf("no request for %s", c.p.cfg.IdleTimeout))
		return
	}
	wait := c.p.cfg.IdleTimeout - since
	if wait <= 0 {
		wait = c.p.cfg.IdleTimeout
	}
	time.AfterFunc(wait, c.checkIdle)
}

// close ends both sides once and records why.
func (c *conn) close(reason string, err error) {
	c.once.Do(func() {
		c.reason, c.err = reason, err
		close(c.done)
		c.client.Close()
		if c.up != nil {
			c.up.Close()
		}
	})
}

func (c *conn) attrs() []any {
	a := []any{"conn", c.id, "client", c.client.RemoteAddr().String(), "upstream", c.upAddr}
	if c.node != bootstrapNode {
		a = append(a, "node_id", c.node)
	} else {
		a = append(a, "listener", "bootstrap")
	}
	if c.clientID != "" {
		a = append(a, "client_id", c.clientID)
	}
	return a
}

func (c *conn) logClose() {
	c.p.m.closed.WithLabelValues(c.reason).Inc()
	a := append(c.attrs(), "reason", c.reason, "requests", c.nreq.Load(), "duration", time.Since(c.started).Round(time.Millisecond))
	level := slog.LevelInfo
	switch c.reason {
	case reasonUpstreamUnreachable:
		level = slog.LevelWarn
		a = append(a, "next", "the client will retry; check that the broker is up and reachable from the proxy")
	case reasonClientProtocol, reasonUpstreamProtocol, reasonRewrite:
		level = slog.LevelWarn
	}
	if c.err != nil {
		a = append(a, "err", c.err)
	}
	c.p.log.Log(c.p.ctx, level, "kafka connection closed", a...)
}

// requests forwards client requests upstream until the client stops or the
// pair is closed. It closes inflight when done so the response side can
// finish what is owed.
func (c *conn) requests() {
	defer close(c.inflight)
	var held int64 // budget for the frame being forwarded
	defer func() { c.p.sh.budget.requests.release(held) }()
	for {
		if !c.waitToRead() {
			return
		}
		frame, err := c.cr.NextHead(streamHeadBytes)
		if errors.Is(err, io.EOF) {
			// The client is done sending. Whatever it is owed still goes
			// out (a half-closed client reads on); the response side
			// closes the pair once it is through, bounded by drainTimeout
			// in case the broker never answers.
			c.up.SetReadDeadline(time.Now().Add(drainTimeout))
			return
		}
		if err != nil {
			c.failRead(err, reasonClientClosed, reasonClientProtocol, "client")
			return
		}
		c.touch()
		raw := c.cr.Frame()
		c.p.m.bytesIn.Add(float64(len(raw) + c.cr.Rest()))
		hdr := legacySaslHeader // a bare token after SaslHandshake v0 has no header
		if !c.sasl.legacy {
			if hdr, err = protocol.ParseRequestHeader(frame); err != nil {
				c.close(reasonClientProtocol, err)
				return
			}
		}
		c.nreq.Add(1)
		c.p.m.request(hdr.Key)
		if c.clientID == "" && len(hdr.ClientID) > 0 {
			c.clientID = string(hdr.ClientID)
		}
		p := pending{key: hdr.Key, version: hdr.Version, corr: hdr.CorrelationID, start: c.obs.now()}
		respond := true
		switch {
		case hdr.Key == protocol.ApiVersionsKey && hdr.BodyOffset < 0:
			// Newer than we can read: answer UNSUPPORTED_VERSION at v0
			// ourselves so the client retries at a version we know.
			p.local = unsupportedApiVersions(hdr.CorrelationID)
			c.p.m.localAnswers.Inc()
		case needsRewrite(hdr.Key) && hdr.BodyOffset < 0:
			c.close(reasonClientProtocol, fmt.Errorf("client sent %s v%d, newer than the v%d pipemesh can read; "+
				"the client should have capped its version from ApiVersions", protocol.KeyName(hdr.Key), hdr.Version, maxVersion(hdr.Key)))
			return
		case hdr.Key == protocol.ProduceKey:
			acks, err := protocol.ProduceAcks(hdr.Version, frame[hdr.BodyOffset:])
			if err != nil {
				c.close(reasonClientProtocol, err)
				return
			}
			respond = acks != 0 // the broker sends nothing for acks=0
		}
		if c.p.cfg.Policy != nil && p.local == nil {
			fwd, h, ok, err := c.authorize(&hdr, frame, &p)
			if !ok {
				return
			}
			if err != nil {
				c.p.log.Warn("kafka connection refused by policy", append(c.attrs(), "principal", c.principal, "err", err.Error())...)
				c.close(reasonAuthRefused, err)
				return
			}
			held = h // released once the frame is written, or on return
			if fwd != nil {
				// Rewritten, or read whole to be decoded: the stages
				// below see the request as it will be forwarded.
				raw, frame = fwd, fwd[4:]
			}
		}
		out := raw
		if p.local == nil {
			var ok bool
			var h int64
			out, h, ok, err = c.shapeRequest(&hdr, raw, frame, &p, respond)
			held += h
			if err != nil {
				c.failRead(err, reasonClientClosed, reasonClientProtocol, "client")
				return
			} else if !ok {
				return
			}
			// Observed as forwarded: denied topics are gone, batches are
			// as the broker will store them.
			c.obs.request(hdr, out[4:], c.cr.Rest())
		}
		if respond {
			c.owed.Add(1)
			select {
			case c.inflight <- p:
			default:
				// MaxInFlight reached. Requests batched for the broker
				// must go out before waiting, or the responses that
				// would make room never come.
				if err := c.uw.Flush(); err != nil {
					c.close(reasonUpstreamClosed, fmt.Errorf("writing to broker: %w", err))
					return
				}
				select {
				case c.inflight <- p:
				case <-c.done:
					return
				}
			}
		}
		if p.local != nil {
			// Answered here; a body past the head is read and dropped.
			if err := c.cr.CopyRest(io.Discard); err != nil {
				c.close(reasonClientClosed, err)
				return
			}
			continue
		}
		_, err = c.uw.Write(out)
		c.p.sh.budget.requests.release(held)
		held = 0
		if err != nil {
			c.close(reasonUpstreamClosed, fmt.Errorf("writing to broker: %w", err))
			return
		}
		c.cr.Release() // bufio.Writer keeps no reference to out
		if c.cr.Rest() > 0 {
			if err := c.uw.Flush(); err != nil {
				c.close(reasonUpstreamClosed, fmt.Errorf("writing to broker: %w", err))
				return
			}
			if err := c.cr.CopyRest(c.obs.reqTo(c.up)); err != nil {
				c.close(streamFailReason(err, reasonClientClosed, reasonUpstreamClosed), fmt.Errorf("streaming a %s request to the broker: %w", protocol.KeyName(hdr.Key), err))
				return
			}
			c.obs.requestDone()
			continue
		}
		// Batch pipelined requests into one write; flush when the next
		// frame is not already here.
		if !c.cr.HasFrame() {
			if err := c.uw.Flush(); err != nil {
				c.close(reasonUpstreamClosed, fmt.Errorf("writing to broker: %w", err))
				return
			}
		}
	}
}

// streamable reports whether the response to p can be streamed through
// without being held whole: nothing in it will be rewritten.
func streamable(p pending) bool {
	switch {
	case p.key == protocol.FetchKey:
		return p.version < 16 // v16+ may end with leader endpoints
	case p.key == protocol.ProduceKey:
		return p.version < 10
	}
	return !needsRewrite(p.key)
}

// streamFailReason classifies an error while streaming a frame through:
// the sender stopping mid-frame (senderGone), or the receiver going away.
func streamFailReason(err error, senderGone, receiverGone string) string {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return senderGone
	}
	return receiverGone
}

// failRead closes the pair after a read error on one side, telling a clean
// close from a broken frame.
func (c *conn) failRead(err error, closedReason, protocolReason, side string) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.close(closedReason, nil)
	case errors.Is(err, protocol.ErrFrameTooLarge), errors.Is(err, protocol.ErrNegativeFrameSize), errors.Is(err, protocol.ErrNotKafka):
		c.close(protocolReason, fmt.Errorf("%s sent a bad frame: %w", side, err))
	default:
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
			c.close(closedReason, err)
			return
		}
		c.close(protocolReason, err)
	}
}

// responses writes one response per pending request, in order.
func (c *conn) responses() {
	var held int64 // budget for a response read whole
	defer func() { c.p.sh.budget.responses.release(held) }()
	for p := range c.inflight {
		var out []byte
		if p.local != nil {
			out = p.local
		} else {
			var body []byte
			var err error
			if streamable(p) && p.authz == nil && !p.sh.whole {
				body, err = c.ur.NextHead(streamHeadBytes)
			} else {
				var ok bool
				if held, ok = c.holdResponse(); !ok {
					return
				}
				body, err = c.ur.Next()
			}
			if err != nil {
				c.failRead(err, reasonUpstreamClosed, reasonUpstreamProtocol, "broker")
				return
			}
			c.touch()
			if len(body) < 4 {
				c.close(reasonUpstreamProtocol, fmt.Errorf("broker sent a %d-byte response, too short for a correlation id", len(body)))
				return
			}
			if got := protocol.ResponseCorrelationID(body); got != p.corr {
				c.close(reasonUpstreamProtocol, fmt.Errorf("broker answered correlation id %d while %d (%s) was next", got, p.corr, protocol.KeyName(p.key)))
				return
			}
			out = c.ur.Frame()
			c.obs.response(p, body, c.ur.Rest())
			rewritten, err := c.rewrite(p, body)
			if err != nil {
				c.close(reasonRewrite, fmt.Errorf("rewriting %s v%d response: %w", protocol.KeyName(p.key), p.version, err))
				return
			}
			if p.authz != nil {
				if rewritten, err = c.authorizeResponse(p, body, rewritten); err != nil {
					c.close(reasonRewrite, fmt.Errorf("authorizing %s v%d response: %w", protocol.KeyName(p.key), p.version, err))
					return
				}
			}
			if rewritten != nil {
				out = rewritten
				c.p.m.rewrites.WithLabelValues(protocol.KeyName(p.key)).Inc()
			}
			out = c.shapeResponse(&p, out)
		}
		if _, err := c.cw.Write(out); err != nil {
			c.close(reasonClientClosed, err)
			return
		}
		c.ur.Release()
		if rest := c.ur.Rest(); rest > 0 {
			if err := c.cw.Flush(); err != nil {
				c.close(reasonClientClosed, err)
				return
			}
			if err := c.ur.CopyRest(c.obs.respTo(c.client)); err != nil {
				c.close(streamFailReason(err, reasonUpstreamClosed, reasonClientClosed), fmt.Errorf("streaming a %s response to the client: %w", protocol.KeyName(p.key), err))
				return
			}
			c.p.m.bytesOut.Add(float64(rest))
		}
		c.p.m.bytesOut.Add(float64(len(out)))
		if p.local == nil {
			c.obs.responseDone(p)
		}
		c.responseDone(&p, held)
		held = 0
		c.owed.Add(-1)
		if len(c.inflight) == 0 || !c.ur.HasFrame() {
			if err := c.cw.Flush(); err != nil {
				c.close(reasonClientClosed, err)
				return
			}
		}
	}
	// The client stopped sending and every response it was owed is out.
	c.close(reasonClientClosed, nil)
}
