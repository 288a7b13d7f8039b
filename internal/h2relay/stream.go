package h2relay

import (
	"fmt"
	"slices"

	"golang.org/x/net/http2/hpack"
)

// role is which connection a stream belongs to, which decides where what
// arrives on it goes.
type role int

const (
	roleClient   role = iota // a client's stream: to its backend stream, or to its upstream once spliced
	roleBackend              // the backend's side of a client stream
	roleUpstream             // a spliced stream's upstream side
)

// stream is one HTTP/2 stream on one connection. Fields are guarded by
// c.mu, except where noted.
type stream struct {
	c    *conn
	id   uint32
	role role

	sendWin  int64 // what the relay may still send
	recvLeft int64 // what the peer may still send
	unacked  int64 // delivered bytes not yet credited
	window   int64 // the receive window the peer was given
	q        []item
	gate     bool // no DATA out before a HEADERS went out (spliced client streams)
	hdrsOut  bool
	endOut   bool // END_STREAM written or queued: nothing more goes out
	endSent  bool // END_STREAM written
	endIn    bool
	reset    bool
	rstAfter uint32 // send RST_STREAM with this code once q drains (if hasRst)
	hasRst   bool

	// Routing. For a client stream: backend, and up once spliced; for
	// backend and upstream streams: front, the client stream.
	backend *stream
	up      *stream
	front   *stream
	pumping bool         // client DATA goes to up
	hold    *hold        // client DATA after the first message waits for the handler
	onData  func([]byte) // sees inbound DATA payloads (counting)
	// mirror (client streams being pumped): the client gets stream window
	// only as the upstream grants it (mirrorTo, on the upstream stream),
	// so what the client sends always fits the upstream's window and goes
	// out without a copy, and nothing waits on the shared client reader.
	mirror   bool
	mirrorTo *stream
	events   chan event // upstream streams: headers, trailers, reset
}

// item is something queued on a stream until windows or order let it out:
// a copy of DATA, or a header block (encoded when written).
type item struct {
	data   []byte
	fields []hpack.HeaderField
	isHdr  bool
	end    bool
	src    *stream // credited for data as it is delivered
}

// event is what an upstream stream tells the handler that spliced it.
type event struct {
	fields []hpack.HeaderField
	end    bool
	err    error
}

// hold tracks a client stream's first gRPC message, which goes to the
// backend handler; what follows is held until the handler splices the
// stream or releases it.
type hold struct {
	prefix [5]byte
	np     int
	left   int64 // bytes of the first message still to pass; -1 before its prefix
	done   bool
	q      []item
	end    bool
}

// take splits p into what passes to the backend (the rest of the first
// message) and holds the remainder, copied.
func (h *hold) take(s *stream, p []byte, end bool) (pass []byte, passEnd bool) {
	if h.done {
		h.keep(s, p, end)
		return nil, false
	}
	i := 0
	for i < len(p) {
		if h.left < 0 {
			k := copy(h.prefix[h.np:], p[i:])
			h.np += k
			i += k
			if h.np < 5 {
				continue
			}
			h.left = int64(uint32(h.prefix[1])<<24 | uint32(h.prefix[2])<<16 | uint32(h.prefix[3])<<8 | uint32(h.prefix[4]))
		}
		k := int(min(h.left, int64(len(p)-i)))
		i += k
		h.left -= int64(k)
		if h.left == 0 {
			h.done = true
			break
		}
	}
	if i < len(p) || (h.done && end) {
		h.keep(s, p[i:], end)
		return p[:i], false
	}
	return p, end
}

func (h *hold) keep(s *stream, p []byte, end bool) {
	if len(p) > 0 || end {
		h.q = append(h.q, item{data: slices.Clone(p), end: end, src: s})
	}
	h.end = h.end || end
}

func (s *stream) canSendData() bool { return !s.gate || s.hdrsOut }

// grant opens n more bytes of s's receive window to its peer.
func (s *stream) grant(n int64) {
	c := s.c
	c.mu.Lock()
	if !c.closed && !s.reset && !s.endIn && n > 0 {
		c.windowUpdateLocked(s.id, n)
		s.recvLeft += n
		_ = c.flushLocked()
	}
	c.mu.Unlock()
}

// openWindowLocked gives a client stream its full window.
func (s *stream) openWindowLocked() {
	if d := s.c.streamWin - s.c.recvInit; d > 0 && !s.endIn && !s.reset {
		s.c.windowUpdateLocked(s.id, d)
		s.recvLeft += d
		s.window += d
	}
}

// sendData sends p on s: written now, zero copy, as far as the windows
// allow (the caller flushes s.c before p's memory is reused and credits
// src with the returned count), the rest copied onto the queue and
// credited to src when delivered. Data for a stream that ended or was
// reset is dropped and counts as delivered.
func (s *stream) sendData(p []byte, end bool, src *stream) (direct int) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if src != nil && src.c.dedicated {
		// The source connection carries only src: wait for the windows
		// rather than copy; nothing else on it is held up.
		for {
			for !c.closed && !s.reset && !s.endOut && (len(s.q) > 0 || !s.canSendData() || min(s.sendWin, c.sendWin) <= 0) {
				if len(p) == 0 && len(s.q) == 0 && s.canSendData() {
					break // an empty END_STREAM needs no window
				}
				// What is queued must reach the peer before its window
				// can open again.
				if len(c.out) > 0 {
					_ = c.flushLocked()
					continue
				}
				c.cond.Wait()
			}
			if c.closed || s.reset || s.endOut {
				return len(p) + direct
			}
			n := int(min(int64(len(p)), s.sendWin, c.sendWin))
			if n == len(p) {
				s.writeDataLocked(p, end)
				return direct + n
			}
			s.writeDataLocked(p[:n], false)
			p, direct = p[n:], direct+n
		}
	}
	if c.closed || s.reset || s.endOut {
		return len(p)
	}
	if len(s.q) == 0 && s.canSendData() {
		n := int(max(0, min(int64(len(p)), s.sendWin, c.sendWin)))
		if n == len(p) {
			s.writeDataLocked(p, end)
			return n
		}
		if n > 0 {
			s.writeDataLocked(p[:n], false)
			p, direct = p[n:], n
		}
	}
	s.q = append(s.q, item{data: slices.Clone(p), end: end, src: src})
	s.endOut = s.endOut || end
	return direct
}

// sendOwned queues data the relay owns (not a read buffer), then writes
// what it can; it returns credits for what went out.
func (s *stream) sendOwnedLocked(it item, credits []credit) []credit {
	if s.c.closed || s.reset || s.endOut {
		if it.src != nil && len(it.data) > 0 {
			credits = append(credits, credit{it.src, len(it.data)})
		}
		return credits
	}
	s.q = append(s.q, it)
	s.endOut = s.endOut || it.end
	return s.drainLocked(credits)
}

// writeDataLocked writes DATA frames of at most the peer's frame size and
// charges the windows.
func (s *stream) writeDataLocked(p []byte, end bool) {
	c := s.c
	s.sendWin -= int64(len(p))
	c.sendWin -= int64(len(p))
	for len(p) > c.peerMax {
		c.dataLocked(s.id, p[:c.peerMax], false)
		p = p[c.peerMax:]
	}
	c.dataLocked(s.id, p, end)
	if end {
		s.endOut, s.endSent = true, true
		s.maybeDoneLocked()
	}
}

// drainLocked writes what order and windows let out of the queue.
func (s *stream) drainLocked(credits []credit) []credit {
	c := s.c
	for len(s.q) > 0 && !c.closed && !s.reset {
		it := &s.q[0]
		if it.isHdr {
			c.headersLocked(s.id, it.fields, it.end)
			s.hdrsOut = true
			if it.end {
				s.endSent = true
			}
			s.q = s.q[1:]
			continue
		}
		if !s.canSendData() {
			break
		}
		n := int(max(0, min(int64(len(it.data)), s.sendWin, c.sendWin)))
		if n == 0 && len(it.data) > 0 {
			break
		}
		last := n == len(it.data)
		s.writeDataLocked(it.data[:n], last && it.end)
		if it.src != nil && n > 0 {
			credits = append(credits, credit{it.src, n})
		}
		if !last {
			it.data = it.data[n:]
			break
		}
		s.q[0] = item{}
		s.q = s.q[1:]
	}
	if len(s.q) == 0 {
		s.q = nil
		if s.hasRst && !s.reset {
			s.reset = true
			c.rstLocked(s.id, s.rstAfter)
		}
	}
	s.maybeDoneLocked()
	return credits
}

// sendHeaders sends a header block on s: now when nothing is queued, or
// when it is the response header that opens a gated stream; else in order
// behind the queued data (trailers).
func (s *stream) sendHeaders(fields []hpack.HeaderField, end bool) {
	c := s.c
	var credits []credit
	c.mu.Lock()
	switch {
	case c.closed || s.reset || s.endOut:
	case len(s.q) == 0 || (s.gate && !s.hdrsOut):
		c.headersLocked(s.id, fields, end)
		s.hdrsOut = true
		if end {
			// A trailers-only answer: data queued behind it never goes.
			s.endOut, s.endSent = true, true
			credits = s.dropQueueLocked(credits)
		}
		credits = s.drainLocked(credits)
		c.cond.Broadcast()
	default:
		s.q = append(s.q, item{fields: fields, isHdr: true, end: end})
		s.endOut = s.endOut || end
	}
	_ = c.flushLocked()
	c.mu.Unlock()
	applyCredits(credits)
}

// dropQueueLocked discards what s has queued, crediting each item's
// source as if delivered: it will never be, and its window must not shrink.
func (s *stream) dropQueueLocked(credits []credit) []credit {
	for _, it := range s.q {
		if it.src != nil && len(it.data) > 0 {
			credits = append(credits, credit{it.src, len(it.data)})
		}
	}
	s.q = nil
	return credits
}

// resetLocked ends s with RST_STREAM now, dropping its queue.
func (s *stream) resetLocked(code uint32) []credit {
	if s.reset {
		return nil
	}
	credits := s.dropQueueLocked(nil)
	s.reset = true
	delete(s.c.streams, s.id)
	s.dropHoldLocked()
	if !s.c.closed {
		s.c.rstLocked(s.id, code)
	}
	s.c.cond.Broadcast()
	return credits
}

func (s *stream) resetNow(code uint32) {
	c := s.c
	c.mu.Lock()
	credits := s.resetLocked(code)
	_ = c.flushLocked()
	c.mu.Unlock()
	applyCredits(credits)
}

// maybeDoneLocked forgets a stream once both directions ended.
func (s *stream) maybeDoneLocked() {
	if s.endSent && s.endIn && len(s.q) == 0 {
		delete(s.c.streams, s.id)
		s.dropHoldLocked()
	}
}

// dropHoldLocked discards what a stream held that will never be delivered
// (its call ended without a splice or a release), giving the connection
// its window back: else a few refused uploads would stall the connection.
func (s *stream) dropHoldLocked() {
	h := s.hold
	if h == nil {
		return
	}
	s.hold = nil
	n := 0
	for _, it := range h.q {
		n += len(it.data)
	}
	if n > 0 {
		s.c.creditLocked(nil, n)
		_ = s.c.flushLocked()
	}
}

// inbound routes a DATA payload that arrived on s; it runs on s.c's
// reader goroutine.
func (s *stream) inbound(p []byte, end bool) {
	c := s.c
	c.mu.Lock()
	s.maybeDoneLocked()
	var dst *stream
	switch s.role {
	case roleClient:
		switch {
		case s.pumping:
			dst = s.up
		case s.hold != nil:
			p, end = s.hold.take(s, p, end)
			dst = s.backend
			if len(p) == 0 && !end {
				dst = nil
			}
		default:
			dst = s.backend
		}
	case roleBackend:
		if f := s.front; f != nil && f.up == nil {
			dst = f
		}
	case roleUpstream:
		dst = s.front
	}
	obs := s.onData
	held := s.role == roleClient && !s.pumping && s.hold != nil && dst == nil
	c.mu.Unlock()
	if held {
		return // credited when the held copy is delivered
	}
	if obs != nil && len(p) > 0 {
		obs(p)
	}
	if dst == nil {
		c.credits = append(c.credits, credit{s, len(p)})
		return
	}
	n := dst.sendData(p, end, s)
	c.touch(dst.c)
	if n > 0 {
		c.credits = append(c.credits, credit{s, n})
	}
}

// inboundHeaders routes a header block that arrived on s.
func (s *stream) inboundHeaders(fields []hpack.HeaderField, end bool) error {
	c := s.c
	c.mu.Lock()
	if end {
		s.endIn = true
		s.maybeDoneLocked()
	}
	var dst *stream
	switch s.role {
	case roleClient:
		if !s.pumping {
			dst = s.backend // request trailers; gRPC sends none, HTTP/2 allows them
		} else {
			dst = s.up
		}
	case roleBackend:
		dst = s.front
	case roleUpstream:
		ev := event{fields: fields, end: end}
		select {
		case s.events <- ev:
		default:
			credits := s.resetLocked(errCodeProtocol)
			_ = c.flushLocked()
			c.mu.Unlock()
			applyCredits(credits)
			return nil
		}
	}
	c.mu.Unlock()
	if dst != nil {
		dst.sendHeaders(fields, end)
	}
	return nil
}

// peerReset handles the end of s by its peer (RST_STREAM, or its
// connection closing): the streams paired with it end too.
func (s *stream) peerReset(code uint32, cause error) {
	c := s.c
	c.mu.Lock()
	s.reset = true
	credits := s.dropQueueLocked(nil)
	backend, up, front := s.backend, s.up, s.front
	c.cond.Broadcast()
	s.dropHoldLocked()
	_ = c.flushLocked()
	c.mu.Unlock()
	applyCredits(credits)
	switch s.role {
	case roleClient:
		if backend != nil {
			backend.resetNow(errCodeCancel)
		}
		if up != nil {
			up.resetNow(errCodeCancel)
		}
	case roleBackend:
		if front == nil {
			return
		}
		fc := front.c
		fc.mu.Lock()
		var fcredits []credit
		switch {
		case front.reset:
		case front.endSent:
			fcredits = front.resetLocked(code)
		case front.endOut:
			front.rstAfter, front.hasRst = code, true // after the queued trailers
		default:
			fcredits = front.resetLocked(code)
		}
		fup := front.up
		_ = fc.flushLocked()
		fc.mu.Unlock()
		applyCredits(fcredits)
		if fup != nil && code != errCodeNo {
			fup.resetNow(errCodeCancel)
		}
	case roleUpstream:
		if cause == nil {
			cause = fmt.Errorf("upstream reset the stream (HTTP/2 error code %d)", code)
		}
		select {
		case s.events <- event{err: &StreamError{Code: code, Err: cause}}:
		default:
		}
	}
}

// streamError ends s after a WINDOW_UPDATE that is a stream error (RFC
// 9113 section 6.9): an increment of 0 (PROTOCOL_ERROR) or one past
// 2^31-1 (FLOW_CONTROL_ERROR). The streams paired with s end too.
func (s *stream) streamError(inc int64) {
	code, msg := uint32(errCodeFlowControl), "WINDOW_UPDATE took the stream window over 2^31-1"
	if inc == 0 {
		code, msg = errCodeProtocol, "WINDOW_UPDATE of 0 on a stream"
	}
	s.resetNow(code)
	s.peerReset(code, fmt.Errorf("%s peer: %s", s.c.kind, msg))
}

// StreamError is an upstream stream that ended by RST_STREAM or by its
// connection closing.
type StreamError struct {
	Code uint32
	Err  error
}

func (e *StreamError) Error() string { return e.Err.Error() }
func (e *StreamError) Unwrap() error { return e.Err }
