package sink

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

const (
	readBufBytes  = 256 << 10
	writeBufBytes = 256 << 10
	// keepOutBytes is the largest response buffer a connection keeps
	// between responses; fetch responses are often several MiB.
	keepOutBytes = 32 << 20
)

// errConnIO marks a connection that ended on a network error (a reset, a
// client gone mid-frame) rather than a protocol violation; it is logged at
// debug level.
var errConnIO = errors.New("connection error")

// conn is one client connection, served in request order by one
// goroutine. Its buffers and decoded Produce and Fetch messages are reused
// from request to request.
type conn struct {
	s  *Sink
	b  *broker
	nc net.Conn
	rd *protocol.Reader
	bw *bufio.Writer

	out      []byte // the response being encoded
	nreq     int64
	clientID string // the first client id seen, for logs

	produceReq  kmsg.ProduceRequest
	produceResp kmsg.ProduceResponse
	fetchReq    kmsg.FetchRequest
	fetchResp   kmsg.FetchResponse
	fetch       fetchState
}

func newConn(s *Sink, b *broker, nc net.Conn) *conn {
	return &conn{
		s: s, b: b, nc: nc,
		rd:    protocol.NewReader(nc, 0, readBufBytes),
		bw:    bufio.NewWriterSize(nc, writeBufBytes),
		fetch: fetchState{w: newWaiter()},
	}
}

// serve answers requests until the client goes or breaks the protocol.
// Responses are batched: the write buffer is flushed when no whole request
// is already buffered, and before a fetch waits.
func (c *conn) serve() error {
	defer c.fetch.stopTimer()
	defer c.releaseFetch() // a fetch that failed or was cut short
	for {
		frame, err := c.rd.Next()
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return nil
			case errors.Is(err, protocol.ErrFrameTooLarge), errors.Is(err, protocol.ErrNotKafka), errors.Is(err, protocol.ErrNegativeFrameSize):
				return fmt.Errorf("reading a request: %w", err)
			}
			return fmt.Errorf("%w: reading a request: %w", errConnIO, err)
		}
		c.nreq++
		h, err := protocol.ParseRequestHeader(frame)
		if err != nil {
			return fmt.Errorf("request header: %w", err)
		}
		if c.clientID == "" && len(h.ClientID) > 0 {
			c.clientID = string(h.ClientID)
		}
		if err := c.handle(h, frame); err != nil {
			return err
		}
		if !c.rd.HasFrame() {
			if err := c.bw.Flush(); err != nil {
				return fmt.Errorf("%w: writing responses: %w", errConnIO, err)
			}
		}
	}
}

// handle answers one request, or returns why the connection must close.
func (c *conn) handle(h protocol.RequestHeader, frame []byte) error {
	if h.BodyOffset < 0 {
		if h.Key == protocol.ApiVersionsKey {
			// A client newer than kmsg: answer as Kafka does, with v0
			// and the versions of ApiVersions we speak, so it retries
			// with one of them (KIP-511).
			return c.write(h, unsupportedApiVersions())
		}
		return fmt.Errorf("%s v%d is not a request the sink knows; it serves only %s", protocol.KeyName(h.Key), h.Version, servedKeys())
	}
	if !served(h.Key, h.Version) {
		return fmt.Errorf("%s v%d is not served by the sink; it serves only %s", protocol.KeyName(h.Key), h.Version, servedKeys())
	}
	body := frame[h.BodyOffset:]
	var (
		resp kmsg.Response
		err  error
	)
	switch h.Key {
	case produceKey:
		resp, err = c.handleProduce(h, body)
	case fetchKey:
		resp, err = c.handleFetch(h, body)
	case listOffsetsKey:
		resp, err = c.handleListOffsets(h, body)
	case metadataKey:
		resp, err = c.handleMetadata(h, body)
	case protocol.ApiVersionsKey:
		resp, err = c.handleApiVersions(h, body)
	case createTopicsKey:
		resp, err = c.handleCreateTopics(h, body)
	case deleteTopicsKey:
		resp, err = c.handleDeleteTopics(h, body)
	case initProducerIDKey:
		resp, err = c.handleInitProducerID(h, body)
	}
	if err != nil {
		return fmt.Errorf("%s v%d request: %w", protocol.KeyName(h.Key), h.Version, err)
	}
	if resp == nil { // Produce with acks=0: no response at all
		return nil
	}
	err = c.write(h, resp)
	if h.Key == fetchKey {
		c.releaseFetch() // the response's batches are copied out
	}
	return err
}

// decode reads a request body of the header's version into req.
func decode(req kmsg.Request, h protocol.RequestHeader, body []byte) error {
	req.SetVersion(h.Version)
	if err := req.ReadFrom(body); err != nil {
		return fmt.Errorf("%w: %w", protocol.ErrMalformed, err)
	}
	return nil
}

// write encodes resp as the response to h into the write buffer: size,
// correlation id, header tags when flexible (response header v1), body.
func (c *conn) write(h protocol.RequestHeader, resp kmsg.Response) error {
	b := append(c.out[:0], 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(h.CorrelationID))
	if protocol.FlexibleResponseHeader(h.Key, h.Version) {
		b = append(b, 0)
	}
	b = resp.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	_, err := c.bw.Write(b)
	if cap(b) <= keepOutBytes {
		c.out = b[:0]
	} else {
		c.out = nil
	}
	if err != nil {
		return fmt.Errorf("%w: writing %s response: %w", errConnIO, protocol.KeyName(h.Key), err)
	}
	return nil
}

// wait blocks until w is woken, d passes or the Sink closes, after flushing
// what is buffered so that earlier responses do not wait with it. It
// reports false when the Sink is closing.
func (c *conn) wait(d time.Duration) (bool, error) {
	if err := c.bw.Flush(); err != nil {
		return false, fmt.Errorf("%w: writing responses: %w", errConnIO, err)
	}
	f := &c.fetch
	if f.timer == nil {
		f.timer = time.NewTimer(d)
	} else {
		f.timer.Reset(d)
	}
	defer f.timer.Stop()
	select {
	case <-f.w.ch:
	case <-f.timer.C:
	case <-c.s.done:
		return false, nil
	}
	return true, nil
}
