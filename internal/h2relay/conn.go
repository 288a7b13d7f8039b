package h2relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"golang.org/x/net/http2/hpack"
)

// conn is one HTTP/2 connection of the relay: the client's (the relay is
// the server), the backend's or an upstream's (the relay is the client).
// One goroutine reads it (readLoop); any goroutine writes it under mu.
type conn struct {
	sess   *session
	nc     net.Conn
	client bool // the relay is the HTTP/2 client here
	// dedicated: the connection carries one stream at a time (upstreams),
	// so its reader may wait for the destination's windows.
	dedicated bool
	kind      string // "client", "backend" or "upstream", for logs and errors
	log       *slog.Logger

	// Owned by the reader goroutine.
	rbuf     []byte
	dec      *hpack.Decoder
	fields   []hpack.HeaderField
	hdrBlock []byte
	hdrID    uint32
	hdrFlags byte
	inBlock  bool
	touched  []*conn
	credits  []credit
	maxPeer  uint32 // highest stream id the peer opened (server side)

	mu       sync.Mutex
	cond     *sync.Cond // on mu: windows grew, a gate opened, a stream or the connection ended
	enc      *hpack.Encoder
	encBuf   bytes.Buffer
	out      net.Buffers
	arena    []byte
	wbuf     []byte
	writev   bool
	sendWin  int64 // connection-level send window
	peerInit int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMax  int   // the peer's SETTINGS_MAX_FRAME_SIZE
	recvInit int64 // the initial stream window the relay advertised
	// streamWin is the window a stream gets: recvInit, or on the client's
	// connection a WINDOW_UPDATE right after it opens, except for streams
	// the relay holds or mirrors (see stream.mirror).
	streamWin int64
	recvConn  int64 // the connection window the relay advertised
	recvLeft  int64 // what the peer may still send on the connection
	unacked   int64 // delivered connection bytes not yet credited
	streams   map[uint32]*stream
	nextID    uint32
	goneAway  bool // the peer sent GOAWAY: no new streams here
	closed    bool
	err       error
	done      chan struct{}
}

// credit is flow-control credit owed to the peer of a stream's connection
// for n bytes the relay delivered.
type credit struct {
	s *stream
	n int
}

func newConn(sess *session, nc net.Conn, client bool, kind string, streamWin, connWin int32) *conn {
	c := &conn{
		sess: sess, nc: nc, client: client, kind: kind,
		log:       sess.relay.log.With("conn", kind),
		rbuf:      make([]byte, 0, minReadBuffer),
		sendWin:   defaultWindow,
		peerInit:  defaultWindow,
		peerMax:   defaultMaxFrame,
		recvInit:  int64(streamWin),
		streamWin: int64(streamWin),
		recvConn:  int64(connWin),
		recvLeft:  defaultWindow,
		streams:   map[uint32]*stream{},
		nextID:    1,
		done:      make(chan struct{}),
	}
	c.cond = sync.NewCond(&c.mu)
	c.enc = hpack.NewEncoder(&c.encBuf)
	c.dec = hpack.NewDecoder(4096, nil)
	c.dec.SetMaxStringLength(maxHeaderBlock)
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.writev = true
	}
	return c
}

// start writes the relay's preface: the client magic when it is the
// client, then SETTINGS and the connection window.
func (c *conn) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client {
		c.arena = append(c.arena, clientPreface...)
	}
	n := 18
	if !c.client {
		n += 6 // SETTINGS_MAX_CONCURRENT_STREAMS, for the client's streams
	}
	c.arena = appendFrameHeader(c.arena, n, frameSettings, 0, 0)
	c.arena = binary.BigEndian.AppendUint16(c.arena, settingInitialWindowSize)
	c.arena = binary.BigEndian.AppendUint32(c.arena, uint32(c.recvInit))
	c.arena = binary.BigEndian.AppendUint16(c.arena, settingEnablePush)
	c.arena = binary.BigEndian.AppendUint32(c.arena, 0)
	c.arena = binary.BigEndian.AppendUint16(c.arena, settingMaxHeaderListSize)
	c.arena = binary.BigEndian.AppendUint32(c.arena, maxHeaderBlock)
	if !c.client {
		c.arena = binary.BigEndian.AppendUint16(c.arena, settingMaxConcurrent)
		c.arena = binary.BigEndian.AppendUint32(c.arena, uint32(c.sess.relay.cfg.MaxConcurrentStreams))
	}
	if inc := c.recvConn - defaultWindow; inc > 0 {
		c.arena = appendFrameHeader(c.arena, 4, frameWindowUpdate, 0, 0)
		c.arena = binary.BigEndian.AppendUint32(c.arena, uint32(inc))
		c.recvLeft += inc
	}
	c.out = append(c.out, c.arena)
	return c.flushLocked()
}

// flushLocked writes everything queued in out.
func (c *conn) flushLocked() error {
	if len(c.out) == 0 {
		return nil
	}
	if c.closed {
		c.out, c.arena = c.out[:0], c.arena[:0]
		return c.err
	}
	var err error
	if c.writev {
		bufs := c.out
		_, err = bufs.WriteTo(c.nc)
	} else {
		c.wbuf = c.wbuf[:0]
		for _, b := range c.out {
			c.wbuf = append(c.wbuf, b...)
		}
		_, err = c.nc.Write(c.wbuf)
	}
	clear(c.out)
	c.out, c.arena = c.out[:0], c.arena[:0]
	if err != nil {
		c.failLocked(fmt.Errorf("write to %s: %w", c.kind, err))
	}
	return err
}

func (c *conn) flush() {
	c.mu.Lock()
	_ = c.flushLocked()
	c.mu.Unlock()
}

// frameLocked queues a frame whose payload is already in the arena tail.
func (c *conn) ctrlLocked(typ, flags byte, id uint32, payload ...[]byte) {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	start := len(c.arena)
	c.arena = appendFrameHeader(c.arena, n, typ, flags, id)
	for _, p := range payload {
		c.arena = append(c.arena, p...)
	}
	c.out = append(c.out, c.arena[start:])
}

func (c *conn) windowUpdateLocked(id uint32, n int64) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	c.ctrlLocked(frameWindowUpdate, 0, id, b[:])
}

func (c *conn) rstLocked(id uint32, code uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], code)
	c.ctrlLocked(frameRSTStream, 0, id, b[:])
}

// headersLocked encodes fields and queues HEADERS (and CONTINUATION).
// Encoding happens here, in write order, as HPACK requires.
func (c *conn) headersLocked(id uint32, fields []hpack.HeaderField, end bool) {
	c.encBuf.Reset()
	for _, f := range fields {
		_ = c.enc.WriteField(f)
	}
	block := c.encBuf.Bytes()
	typ, flags := byte(frameHeaders), byte(0)
	if end {
		flags |= flagEndStream
	}
	for first := true; first || len(block) > 0; first = false {
		n := min(len(block), c.peerMax)
		f := flags
		if n == len(block) {
			f |= flagEndHeaders
		}
		c.ctrlLocked(typ, f, id, block[:n])
		block = block[n:]
		typ, flags = frameContinuation, 0
	}
}

// dataLocked queues a DATA frame whose payload the caller keeps alive
// until the next flush (zero copy).
func (c *conn) dataLocked(id uint32, p []byte, end bool) {
	var flags byte
	if end {
		flags = flagEndStream
	}
	start := len(c.arena)
	c.arena = appendFrameHeader(c.arena, len(p), frameData, flags, id)
	c.out = append(c.out, c.arena[start:])
	if len(p) > 0 {
		c.out = append(c.out, p)
	}
}

// failLocked closes the connection once, recording why.
func (c *conn) failLocked(err error) {
	if c.closed {
		return
	}
	c.closed, c.err = true, err
	_ = c.nc.Close()
	close(c.done)
	c.cond.Broadcast()
}

// close ends the connection, telling the peer with GOAWAY first when
// code is set; every stream on it is failed.
func (c *conn) close(err error, goaway *connError) {
	c.mu.Lock()
	if goaway != nil && !c.closed {
		var b [8]byte
		binary.BigEndian.PutUint32(b[:4], c.maxPeer)
		binary.BigEndian.PutUint32(b[4:], goaway.code)
		c.ctrlLocked(frameGoAway, 0, 0, b[:], []byte(goaway.msg))
		_ = c.flushLocked()
	}
	c.failLocked(err)
	streams := make([]*stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	clear(c.streams)
	c.mu.Unlock()
	for _, s := range streams {
		s.peerReset(errCodeCancel, err)
	}
}

// idleLocked reports whether stream id was never opened on c (RFC 9113
// section 5.1): beyond the highest the peer opened (server side) or the
// relay opened (client side); even ids are pushes, never opened here.
func (c *conn) idleLocked(id uint32) bool {
	if id%2 == 0 {
		return true
	}
	if c.client {
		return id >= c.nextID
	}
	return id > c.maxPeer
}

// newStreamLocked registers a stream on c: one the relay opens (client
// side) or one the peer opened (server side).
func (c *conn) newStreamLocked(id uint32) *stream {
	if id >= c.nextID {
		c.nextID = id + 2
	}
	s := &stream{c: c, id: id, sendWin: c.peerInit, recvLeft: c.recvInit, window: c.recvInit}
	c.streams[id] = s
	return s
}

// readLoop reads frames until the connection fails.
func (c *conn) readLoop() error {
	if !c.client {
		if err := c.readPreface(); err != nil {
			return err
		}
	}
	for {
		if len(c.rbuf) == cap(c.rbuf) {
			return &connError{code: errCodeFrameSize, msg: "frame larger than the read buffer"}
		}
		free := cap(c.rbuf) - len(c.rbuf)
		n, err := c.nc.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		c.rbuf = c.rbuf[:len(c.rbuf)+n]
		if n > 0 {
			rest, perr := c.process(c.rbuf)
			c.flushTouched()
			if perr != nil {
				return perr
			}
			if n == free && cap(c.rbuf) < maxReadBuffer {
				// A busy connection: read more per syscall.
				c.rbuf = append(make([]byte, 0, 2*cap(c.rbuf)), rest...)
			} else {
				c.rbuf = c.rbuf[:copy(c.rbuf, rest)]
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("read from %s: %w", c.kind, err)
		}
	}
}

func (c *conn) readPreface() error {
	var b [len(clientPreface)]byte
	if _, err := io.ReadFull(c.nc, b[:]); err != nil {
		return fmt.Errorf("read the HTTP/2 preface: %w", err)
	}
	if string(b[:]) != clientPreface {
		return protoErr("not an HTTP/2 client preface (is the client speaking gRPC over plaintext HTTP/2, or TLS to a plaintext port?)")
	}
	return nil
}

// process handles every whole frame in b and returns the partial tail.
func (c *conn) process(b []byte) ([]byte, error) {
	for len(b) >= frameHeaderLen {
		fh := parseFrameHeader(b)
		if fh.length > defaultMaxFrame {
			return nil, &connError{code: errCodeFrameSize, msg: fmt.Sprintf("frame of %d bytes over SETTINGS_MAX_FRAME_SIZE %d", fh.length, defaultMaxFrame)}
		}
		end := frameHeaderLen + int(fh.length)
		if len(b) < end {
			break
		}
		if err := c.frame(fh, b[frameHeaderLen:end]); err != nil {
			return nil, err
		}
		b = b[end:]
	}
	return b, nil
}

// flushTouched writes what this reader queued on other connections (whose
// payloads point into rbuf), then credits the peer for what was delivered.
func (c *conn) flushTouched() {
	for _, d := range c.touched {
		d.flush()
	}
	clear(c.touched)
	c.touched = c.touched[:0]
	if len(c.credits) > 0 {
		c.mu.Lock()
		for _, cr := range c.credits {
			c.creditLocked(cr.s, cr.n)
		}
		_ = c.flushLocked()
		c.mu.Unlock()
		clear(c.credits)
		c.credits = c.credits[:0]
	}
}

// creditLocked returns n delivered bytes of s to the peer's windows, in
// WINDOW_UPDATEs of at least a quarter window so they stay few.
func (c *conn) creditLocked(s *stream, n int) {
	if c.closed {
		return
	}
	c.unacked += int64(n)
	if c.unacked >= c.recvConn/4 {
		c.windowUpdateLocked(0, c.unacked)
		c.recvLeft += c.unacked
		c.unacked = 0
	}
	if s == nil || s.endIn || s.reset || s.mirror {
		return
	}
	s.unacked += int64(n)
	if s.mirror {
		return // the upstream's window updates are the client's (Pump)
	}
	if s.unacked >= s.window/4 {
		c.windowUpdateLocked(s.id, s.unacked)
		s.recvLeft += s.unacked
		s.unacked = 0
	}
}

// credit is creditLocked for callers on other goroutines.
func (c *conn) credit(s *stream, n int) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.creditLocked(s, n)
	_ = c.flushLocked()
	c.mu.Unlock()
}

func (c *conn) touch(d *conn) {
	for _, t := range c.touched {
		if t == d {
			return
		}
	}
	c.touched = append(c.touched, d)
}

func (c *conn) frame(fh frameHeader, p []byte) error {
	if c.inBlock && fh.typ != frameContinuation {
		return protoErr("frame of type %d inside a header block", fh.typ)
	}
	switch fh.typ {
	case frameData:
		return c.onData(fh, p)
	case frameHeaders:
		return c.onHeaders(fh, p)
	case frameContinuation:
		if !c.inBlock || fh.streamID != c.hdrID {
			return protoErr("CONTINUATION without HEADERS")
		}
		return c.addBlock(fh, p)
	case frameRSTStream:
		if len(p) != 4 || fh.streamID == 0 {
			return &connError{code: errCodeFrameSize, msg: "bad RST_STREAM"}
		}
		c.mu.Lock()
		s := c.streams[fh.streamID]
		if s != nil {
			s.reset = true
			delete(c.streams, s.id)
		}
		idle := s == nil && c.idleLocked(fh.streamID)
		c.mu.Unlock()
		if idle {
			return protoErr("RST_STREAM on idle stream %d", fh.streamID)
		}
		if s != nil {
			s.peerReset(binary.BigEndian.Uint32(p), nil)
		}
		return nil
	case frameSettings:
		return c.onSettings(fh, p)
	case framePing:
		if len(p) != 8 || fh.streamID != 0 {
			return &connError{code: errCodeFrameSize, msg: "bad PING"}
		}
		if fh.flags&flagAck == 0 {
			c.mu.Lock()
			c.ctrlLocked(framePing, flagAck, 0, p)
			_ = c.flushLocked()
			c.mu.Unlock()
		}
		return nil
	case frameGoAway:
		if len(p) < 8 {
			return &connError{code: errCodeFrameSize, msg: "bad GOAWAY"}
		}
		c.mu.Lock()
		c.goneAway = true
		c.mu.Unlock()
		c.sess.onGoAway(c, binary.BigEndian.Uint32(p)&(1<<31-1), binary.BigEndian.Uint32(p[4:]))
		return nil
	case frameWindowUpdate:
		return c.onWindowUpdate(fh, p)
	case framePushPromise:
		return protoErr("PUSH_PROMISE, though SETTINGS_ENABLE_PUSH is 0")
	}
	return nil // PRIORITY and unknown types are ignored
}

func (c *conn) onSettings(fh frameHeader, p []byte) error {
	if fh.streamID != 0 || len(p)%6 != 0 {
		return &connError{code: errCodeFrameSize, msg: "bad SETTINGS"}
	}
	if fh.flags&flagAck != 0 {
		return nil
	}
	c.mu.Lock()
	grew := false
	var mirrors []*stream
	var mirrorDelta int64
	for ; len(p) > 0; p = p[6:] {
		v := binary.BigEndian.Uint32(p[2:])
		switch binary.BigEndian.Uint16(p) {
		case settingInitialWindowSize:
			if v > maxWindow {
				c.mu.Unlock()
				return &connError{code: errCodeFlowControl, msg: "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1"}
			}
			delta := int64(v) - c.peerInit
			c.peerInit = int64(v)
			for _, s := range c.streams {
				s.sendWin += delta
				if s.mirrorTo != nil && delta > 0 {
					mirrors = append(mirrors, s.mirrorTo)
					mirrorDelta = delta
				}
			}
			grew = grew || delta > 0
		case settingMaxFrameSize:
			if v < defaultMaxFrame || v > 1<<24-1 {
				c.mu.Unlock()
				return protoErr("SETTINGS_MAX_FRAME_SIZE %d out of range", v)
			}
			c.peerMax = int(v)
		case settingHeaderTableSize:
			c.enc.SetMaxDynamicTableSizeLimit(v)
		}
	}
	c.ctrlLocked(frameSettings, flagAck, 0)
	var credits []credit
	if grew {
		credits = c.drainAllLocked(nil)
		c.cond.Broadcast()
	}
	_ = c.flushLocked()
	c.mu.Unlock()
	applyCredits(credits)
	for _, m := range mirrors {
		m.grant(mirrorDelta)
	}
	return nil
}

func (c *conn) onWindowUpdate(fh frameHeader, p []byte) error {
	if len(p) != 4 {
		return &connError{code: errCodeFrameSize, msg: "bad WINDOW_UPDATE"}
	}
	inc := int64(binary.BigEndian.Uint32(p) & (1<<31 - 1))
	if inc == 0 && fh.streamID == 0 {
		return protoErr("WINDOW_UPDATE of 0 on the connection")
	}
	c.mu.Lock()
	var credits []credit
	var mirror *stream
	if fh.streamID != 0 && c.streams[fh.streamID] == nil && c.idleLocked(fh.streamID) {
		c.mu.Unlock()
		return protoErr("WINDOW_UPDATE on idle stream %d", fh.streamID)
	}
	if fh.streamID == 0 {
		if c.sendWin += inc; c.sendWin > maxWindow {
			c.mu.Unlock()
			return &connError{code: errCodeFlowControl, msg: "connection window over 2^31-1"}
		}
		credits = c.drainAllLocked(nil)
	} else if s := c.streams[fh.streamID]; s != nil && (inc == 0 || s.sendWin+inc > maxWindow) {
		c.mu.Unlock()
		s.streamError(inc)
		return nil
	} else if s != nil {
		s.sendWin += inc
		credits = s.drainLocked(nil)
		mirror = s.mirrorTo
	}
	c.cond.Broadcast()
	_ = c.flushLocked()
	c.mu.Unlock()
	applyCredits(credits)
	if mirror != nil {
		mirror.grant(inc)
	}
	return nil
}

// drainAllLocked writes what the connection window now lets out of every
// stream's queue.
func (c *conn) drainAllLocked(credits []credit) []credit {
	for _, s := range c.streams {
		if len(s.q) > 0 {
			credits = s.drainLocked(credits)
			if c.sendWin <= 0 {
				break
			}
		}
	}
	return credits
}

func applyCredits(credits []credit) {
	for _, cr := range credits {
		cr.s.c.credit(cr.s, cr.n)
	}
}

func (c *conn) onData(fh frameHeader, p []byte) error {
	if fh.streamID == 0 {
		return protoErr("DATA on stream 0")
	}
	flow := int64(fh.length)
	payload, err := trimPadding(fh, p)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.recvLeft -= flow; c.recvLeft < 0 {
		c.mu.Unlock()
		return &connError{code: errCodeFlowControl, msg: "DATA beyond the connection window"}
	}
	s := c.streams[fh.streamID]
	if s != nil {
		if s.recvLeft -= flow; s.recvLeft < 0 {
			s.reset = true
			delete(c.streams, s.id)
			c.rstLocked(s.id, errCodeFlowControl)
			c.creditLocked(nil, int(flow))
			_ = c.flushLocked()
			c.mu.Unlock()
			s.peerReset(errCodeFlowControl, errors.New("peer overran the stream window"))
			return nil
		}
		if s.endIn {
			s = nil // DATA after END_STREAM: the stream is half-closed
		}
	}
	if s == nil {
		if !c.client && fh.streamID > c.maxPeer {
			c.mu.Unlock()
			return protoErr("DATA on idle stream %d", fh.streamID)
		}
		// Dropped, but the connection window comes back now: no reader
		// flush follows for a frame that left no credits.
		c.creditLocked(nil, int(flow))
		_ = c.flushLocked()
		c.mu.Unlock()
		return nil
	}
	end := fh.flags&flagEndStream != 0
	if end {
		s.endIn = true
	}
	pad := int(flow) - len(payload)
	if pad > 0 {
		// Credited now: a held payload leaves no reader credit, so no
		// flush would follow.
		c.creditLocked(s, pad)
		_ = c.flushLocked()
	}
	c.mu.Unlock()
	s.inbound(payload, end)
	return nil
}

func (c *conn) onHeaders(fh frameHeader, p []byte) error {
	if fh.streamID == 0 {
		return protoErr("HEADERS on stream 0")
	}
	p, err := trimPadding(fh, p)
	if err != nil {
		return err
	}
	if fh.flags&flagPriority != 0 {
		if len(p) < 5 {
			return protoErr("HEADERS priority fields truncated")
		}
		p = p[5:]
	}
	c.inBlock, c.hdrID, c.hdrFlags = true, fh.streamID, fh.flags
	c.hdrBlock = c.hdrBlock[:0]
	return c.addBlock(fh, p)
}

func (c *conn) addBlock(fh frameHeader, p []byte) error {
	if len(c.hdrBlock)+len(p) > maxHeaderBlock {
		return &connError{code: errCodeProtocol, msg: fmt.Sprintf("header block over %d bytes", maxHeaderBlock)}
	}
	c.hdrBlock = append(c.hdrBlock, p...)
	if fh.flags&flagEndHeaders == 0 {
		return nil
	}
	c.inBlock = false
	c.fields = c.fields[:0]
	// The list is bounded as decoded (RFC 9113 section 6.5.2: names,
	// values and 32 bytes a field), as advertised in
	// SETTINGS_MAX_HEADER_LIST_SIZE: one byte of block can decode to a
	// 40-byte field.
	size := 0
	c.dec.SetEmitFunc(func(f hpack.HeaderField) {
		if size += len(f.Name) + len(f.Value) + 32; size <= maxHeaderBlock {
			c.fields = append(c.fields, f)
		}
	})
	if _, err := c.dec.Write(c.hdrBlock); err != nil {
		return &connError{code: 0x9, msg: "HPACK: " + err.Error()} // COMPRESSION_ERROR
	}
	if err := c.dec.Close(); err != nil {
		return &connError{code: 0x9, msg: "HPACK: " + err.Error()}
	}
	if size > maxHeaderBlock {
		return protoErr("header list of %d bytes decoded, over %d", size, maxHeaderBlock)
	}
	fields := append([]hpack.HeaderField(nil), c.fields...)
	end := c.hdrFlags&flagEndStream != 0
	id := c.hdrID
	if !c.client {
		c.mu.Lock()
		s := c.streams[id]
		c.mu.Unlock()
		if s == nil {
			if id%2 == 0 || id <= c.maxPeer {
				return protoErr("HEADERS opening stream %d out of order", id)
			}
			c.maxPeer = id
			return c.sess.openStream(c, id, fields, end)
		}
		return s.inboundHeaders(fields, end)
	}
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	if s == nil {
		return nil // a stream the relay already reset
	}
	return s.inboundHeaders(fields, end)
}
