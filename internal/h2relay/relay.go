package h2relay

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
)

// TokenHeader is the request header the relay adds to every stream it
// passes to the backend, naming the stream for Relay.Stream. A value a
// client sent is dropped.
const TokenHeader = "pipemesh-relay-stream"

// Config configures a Relay.
type Config struct {
	// Backend returns a new connection to the backend HTTP/2 server for
	// one client connection.
	Backend func(client net.Conn) (net.Conn, error)
	// StreamWindow and ConnWindow are the flow-control windows the relay
	// advertises on every connection.
	StreamWindow, ConnWindow int32
	// Hold reports whether a request path's streams pause after their
	// first message until the backend handler splices or releases them
	// (client-streaming calls the handler may splice, such as DoPut).
	Hold func(path string) bool
	// MaxConcurrentStreams caps the streams a client may have open on
	// one connection (SETTINGS_MAX_CONCURRENT_STREAMS); a stream past it
	// is refused. Each costs the relay and the backend handler state.
	// Default 1000.
	MaxConcurrentStreams uint32
	// DialTimeout bounds dialling an upstream. Default 10 s.
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Relay serves client HTTP/2 connections; see the package comment.
type Relay struct {
	cfg    Config
	log    *slog.Logger
	nextID atomic.Uint64

	mu       sync.Mutex
	sessions map[uint64]*session
}

// New returns a Relay.
func New(cfg Config) *Relay {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = defaultMaxStreams
	}
	if cfg.Hold == nil {
		cfg.Hold = func(string) bool { return false }
	}
	return &Relay{cfg: cfg, log: cfg.Logger, sessions: map[uint64]*session{}}
}

// session is one client connection, its backend connection and the
// upstream connections its spliced streams use.
type session struct {
	relay   *Relay
	id      uint64
	client  *conn
	backend *conn

	mu   sync.Mutex
	ups  map[*conn]struct{} // every open upstream connection
	idle map[string][]*conn // by address: upstream connections without a stream
}

// defaultMaxStreams is Config.MaxConcurrentStreams's default: well past
// what a Flight client runs in parallel on one connection.
const defaultMaxStreams = 1000

// maxIdleUpstreams bounds the idle upstream connections a session keeps
// per address for its next spliced calls.
const maxIdleUpstreams = 4

// ServeConn relays one client connection (TLS already terminated) until it
// ends or ctx is done.
func (r *Relay) ServeConn(ctx context.Context, nc net.Conn) error {
	bnc, err := r.cfg.Backend(nc)
	if err != nil {
		_ = nc.Close()
		return fmt.Errorf("h2relay: connect to the backend: %w", err)
	}
	s := &session{relay: r, id: r.nextID.Add(1), ups: map[*conn]struct{}{}, idle: map[string][]*conn{}}
	s.client = newConn(s, nc, false, "client", r.cfg.StreamWindow, r.cfg.ConnWindow)
	// Client streams start at the protocol's default window; most get the
	// full window as they open (openStream), held ones only when released.
	s.client.recvInit = defaultWindow
	s.backend = newConn(s, bnc, true, "backend", r.cfg.StreamWindow, r.cfg.ConnWindow)
	r.mu.Lock()
	r.sessions[s.id] = s
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.sessions, s.id)
		r.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { s.shutdown(ctx.Err()) })
	defer stop()
	if err := s.backend.start(); err != nil {
		s.shutdown(err)
		return err
	}
	if err := s.client.start(); err != nil {
		s.shutdown(err)
		return err
	}
	backendDone := make(chan struct{})
	go func() {
		defer close(backendDone)
		err := s.backend.readLoop()
		s.endConn(s.backend, err)
	}()
	err = s.client.readLoop()
	s.endConn(s.client, err)
	<-backendDone
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// endConn handles the end of the client's or the backend's connection:
// either ends the session.
func (s *session) endConn(c *conn, err error) {
	var ce *connError
	if errors.As(err, &ce) {
		s.relay.log.Warn("HTTP/2 protocol error; closing the connection", "peer", c.kind, "remote", s.client.nc.RemoteAddr(), "error", err)
		c.goAwayLinger(ce)
		c.close(err, nil)
	}
	s.shutdown(err)
}

// Bounds on reading what a peer still sends after the relay's GOAWAY.
const (
	lingerTime  = time.Second
	lingerBytes = 1 << 20
)

// goAwayLinger sends GOAWAY, half-closes the connection and reads what
// the peer still sends, for a little while, before the caller closes it.
// Closing a socket with unread input makes the kernel send RST, and the
// peer may then lose the GOAWAY that says why.
func (c *conn) goAwayLinger(ce *connError) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], c.maxPeer)
	binary.BigEndian.PutUint32(b[4:], ce.code)
	c.ctrlLocked(frameGoAway, 0, 0, b[:], []byte(ce.msg))
	err := c.flushLocked()
	c.mu.Unlock()
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if err != nil || !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, lingerBytes))
}

func (s *session) shutdown(err error) {
	if err == nil {
		err = io.EOF
	}
	s.client.close(err, nil)
	s.backend.close(err, nil)
	s.mu.Lock()
	ups := make([]*conn, 0, len(s.ups))
	for u := range s.ups {
		ups = append(ups, u)
	}
	clear(s.ups)
	clear(s.idle)
	s.mu.Unlock()
	for _, u := range ups {
		u.close(err, nil)
	}
}

// onGoAway passes the backend's GOAWAY to the client (stream ids are the
// same on both); an upstream's only stops new streams on it.
func (s *session) onGoAway(c *conn, lastID, code uint32) {
	if c != s.backend {
		return
	}
	cl := s.client
	cl.mu.Lock()
	var b [8]byte
	b[0], b[1], b[2], b[3] = byte(lastID>>24), byte(lastID>>16), byte(lastID>>8), byte(lastID)
	b[4], b[5], b[6], b[7] = byte(code>>24), byte(code>>16), byte(code>>8), byte(code)
	cl.ctrlLocked(frameGoAway, 0, 0, b[:])
	_ = cl.flushLocked()
	cl.mu.Unlock()
}

// openStream opens the backend side of a new client stream.
func (s *session) openStream(cl *conn, id uint32, fields []hpack.HeaderField, end bool) error {
	path := ""
	out := fields[:0:0]
	for _, f := range fields {
		if f.Name == TokenHeader {
			continue
		}
		if f.Name == ":path" {
			path = f.Value
		}
		out = append(out, f)
	}
	out = append(out, hpack.HeaderField{Name: TokenHeader, Value: strconv.FormatUint(s.id, 10) + "." + strconv.FormatUint(uint64(id), 10)})

	cl.mu.Lock()
	if uint32(len(cl.streams)) >= s.relay.cfg.MaxConcurrentStreams {
		// Past the limit the relay advertised (RFC 9113 5.1.2).
		cl.rstLocked(id, errCodeRefusedStream)
		_ = cl.flushLocked()
		cl.mu.Unlock()
		return nil
	}
	cs := cl.newStreamLocked(id)
	cs.role = roleClient
	cs.endIn = end
	if s.relay.cfg.Hold(path) && !end {
		cs.hold = &hold{left: -1}
	} else {
		cs.openWindowLocked()
		_ = cl.flushLocked()
	}
	cl.mu.Unlock()

	b := s.backend
	b.mu.Lock()
	if b.closed || b.goneAway {
		b.mu.Unlock()
		cs.resetNow(errCodeRefusedStream)
		return nil
	}
	bs := b.newStreamLocked(id)
	bs.role = roleBackend
	bs.front = cs
	b.headersLocked(id, out, end)
	if end {
		bs.endOut, bs.endSent = true, true
	}
	_ = b.flushLocked()
	b.mu.Unlock()

	cl.mu.Lock()
	cs.backend = bs
	cl.mu.Unlock()
	return nil
}

// Stream is a client stream as a backend handler sees it.
type Stream struct {
	sess *session
	cs   *stream
}

// Stream finds the client stream a backend handler serves from the value
// of its TokenHeader; nil when the relay does not know it (any more).
func (r *Relay) Stream(token string) *Stream {
	a, b, ok := strings.Cut(token, ".")
	if !ok {
		return nil
	}
	sid, err1 := strconv.ParseUint(a, 10, 64)
	id, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return nil
	}
	r.mu.Lock()
	s := r.sessions[sid]
	r.mu.Unlock()
	if s == nil {
		return nil
	}
	s.client.mu.Lock()
	cs := s.client.streams[uint32(id)]
	s.client.mu.Unlock()
	if cs == nil {
		return nil
	}
	return &Stream{sess: s, cs: cs}
}

// Release lets a held stream's data after its first message go on to the
// backend: the handler serves the call itself.
func (st *Stream) Release() {
	cl := st.sess.client
	cl.mu.Lock()
	h, bs := st.cs.hold, st.cs.backend
	st.cs.hold = nil
	var credits []credit
	if h != nil && bs != nil {
		b := bs.c
		b.mu.Lock()
		for _, it := range h.q {
			credits = bs.sendOwnedLocked(it, credits)
		}
		_ = b.flushLocked()
		b.mu.Unlock()
		st.cs.openWindowLocked()
		_ = cl.flushLocked()
	}
	cl.mu.Unlock()
	applyCredits(credits)
}

// Upstream is the upstream side of a spliced stream.
type Upstream struct {
	st     *Stream
	us     *stream
	target Target
}

// Target is where a spliced stream goes.
type Target struct {
	Addr string      // host:port
	TLS  *tls.Config // nil: plaintext HTTP/2
}

// Splice opens a stream to target with the request header fields given
// (pseudo-headers included) and makes it this client stream's upstream:
// its DATA goes to the client, seen by down (which may block, slowing the
// upstream), once the backend wrote the client's response header. The
// client's DATA goes to it once Pump is called.
func (st *Stream) Splice(ctx context.Context, target Target, fields []hpack.HeaderField, down func([]byte)) (*Upstream, error) {
	u, err := st.sess.takeUpstream(ctx, target)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	us := u.newStreamLocked(u.nextID)
	us.role = roleUpstream
	us.front = st.cs
	us.onData = down
	us.events = make(chan event, 4)
	u.headersLocked(us.id, fields, false)
	err = u.flushLocked()
	u.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("h2relay: open the upstream stream: %w", err)
	}
	cl := st.sess.client
	cl.mu.Lock()
	st.cs.up = us
	st.cs.gate = true
	cl.mu.Unlock()
	return &Upstream{st: st, us: us, target: target}, nil
}

// Send writes one gRPC message (its 5-byte prefix added) upstream; end
// half-closes the request.
func (up *Upstream) Send(msg []byte, end bool) error {
	data := make([]byte, 5+len(msg))
	n := len(msg)
	data[1], data[2], data[3], data[4] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	copy(data[5:], msg)
	u := up.us.c
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return fmt.Errorf("h2relay: upstream: %w", ErrClosed)
	}
	up.us.sendOwnedLocked(item{data: data, end: end}, nil)
	return u.flushLocked()
}

// Pump sends the client's data on to the upstream from now on: first what
// was held after the first message, then what arrives. up sees it.
func (up *Upstream) Pump(observe func([]byte)) {
	cl := up.st.sess.client
	cs := up.st.cs
	var credits []credit
	cl.mu.Lock()
	cs.pumping = true
	cs.onData = observe
	h := cs.hold
	cs.hold = nil
	u := up.us.c
	u.mu.Lock()
	if h != nil {
		for _, it := range h.q {
			if observe != nil && len(it.data) > 0 {
				observe(it.data)
			}
			credits = up.us.sendOwnedLocked(it, credits)
		}
	}
	// From now on the client may send what the upstream stream can take.
	cs.mirror = true
	up.us.mirrorTo = cs
	avail := up.us.sendWin
	for _, it := range up.us.q {
		avail -= int64(len(it.data))
	}
	_ = u.flushLocked()
	u.mu.Unlock()
	if d := avail - cs.recvLeft; d > 0 && !cs.endIn && !cs.reset {
		cl.windowUpdateLocked(cs.id, d)
		cs.recvLeft += d
		_ = cl.flushLocked()
	}
	cl.mu.Unlock()
	applyCredits(credits)
}

// Header waits for the upstream's response header block. trailersOnly
// reports a block that also ends the stream (gRPC's Trailers-Only).
func (up *Upstream) Header(ctx context.Context) (fields []hpack.HeaderField, trailersOnly bool, err error) {
	ev, err := up.next(ctx)
	if err != nil {
		return nil, false, err
	}
	return ev.fields, ev.end, nil
}

// Trailers waits for the upstream's trailers, which end the call.
func (up *Upstream) Trailers(ctx context.Context) ([]hpack.HeaderField, error) {
	for {
		ev, err := up.next(ctx)
		if err != nil {
			return nil, err
		}
		if ev.end {
			return ev.fields, nil
		}
	}
}

func (up *Upstream) next(ctx context.Context) (event, error) {
	select {
	case ev := <-up.us.events:
		if ev.err != nil {
			return ev, ev.err
		}
		return ev, nil
	case <-ctx.Done():
		return event{}, ctx.Err()
	}
}

// Close resets the upstream stream unless it ended, and gives its
// connection back for the session's next spliced call.
func (up *Upstream) Close() {
	u := up.us.c
	u.mu.Lock()
	var credits []credit
	clean := up.us.endIn && up.us.endSent && !up.us.reset
	if !up.us.reset && !clean {
		credits = up.us.resetLocked(errCodeCancel)
		_ = u.flushLocked()
	}
	delete(u.streams, up.us.id)
	reusable := clean && !u.closed && !u.goneAway && len(u.streams) == 0 && u.nextID < 1<<30
	u.mu.Unlock()
	applyCredits(credits)
	up.st.sess.putUpstream(up.target, u, reusable)
}

// takeUpstream returns an idle connection to target or dials one: each
// spliced stream has its upstream connection to itself.
func (s *session) takeUpstream(ctx context.Context, t Target) (*conn, error) {
	key := targetKey(t)
	s.mu.Lock()
	for len(s.idle[key]) > 0 {
		l := s.idle[key]
		u := l[len(l)-1]
		s.idle[key] = l[:len(l)-1]
		u.mu.Lock()
		ok := !u.closed && !u.goneAway
		u.mu.Unlock()
		if ok {
			s.mu.Unlock()
			return u, nil
		}
	}
	closed := s.client.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.relay.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, fmt.Errorf("h2relay: dial upstream: %w", err)
	}
	if t.TLS != nil {
		cfg := t.TLS.Clone()
		cfg.NextProtos = []string{"h2"}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("h2relay: TLS handshake with upstream: %w", err)
		}
		nc = tc
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	u := newConn(s, nc, true, "upstream", s.relay.cfg.StreamWindow, s.relay.cfg.ConnWindow)
	u.dedicated = true
	if err := u.start(); err != nil {
		return nil, fmt.Errorf("h2relay: upstream preface: %w", err)
	}
	s.mu.Lock()
	if s.client.closed {
		s.mu.Unlock()
		u.close(ErrClosed, nil)
		return nil, ErrClosed
	}
	s.ups[u] = struct{}{}
	s.mu.Unlock()
	go func() {
		err := u.readLoop()
		var ce *connError
		if errors.As(err, &ce) {
			s.relay.log.Warn("HTTP/2 protocol error from an upstream; closing its connection", "error", err)
			u.close(err, ce)
		} else {
			u.close(fmt.Errorf("upstream connection: %w", err), nil)
		}
		s.mu.Lock()
		delete(s.ups, u)
		s.mu.Unlock()
	}()
	return u, nil
}

func (s *session) putUpstream(t Target, u *conn, reusable bool) {
	key := targetKey(t)
	s.mu.Lock()
	if reusable && len(s.idle[key]) < maxIdleUpstreams && !s.client.closed {
		s.idle[key] = append(s.idle[key], u)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	u.close(ErrClosed, &connError{code: errCodeNo, msg: "done"})
}

func targetKey(t Target) string {
	if t.TLS != nil {
		return "tls:" + t.Addr + "/" + t.TLS.ServerName
	}
	return t.Addr
}
