package flightproxy

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"golang.org/x/net/http2/hpack"

	"github.com/pipemesh/pipemesh/internal/h2relay"
)

// Splicing: once a DoGet or DoPut handler has identified, authorized,
// admitted and routed a call, and no stage must rewrite its data, it hands
// the data to the relay: the upstream's DATA frames go to the client as
// they arrived (and the client's to the upstream), counted by a
// msgScanner that reads only the gRPC prefixes and IPC headers. The
// handler still sends the response header and the trailers, so status,
// metadata and error hiding work as on the message path.

// relayStream is the relay's handle on c's client stream, or nil when
// splicing is off or c did not come through the relay.
func (p *Proxy) relayStream(c *call) *h2relay.Stream {
	if p.cfg.NoSplice || p.relay == nil {
		return nil
	}
	in, _ := metadata.FromIncomingContext(c.ss.Context())
	v := in.Get(h2relay.TokenHeader)
	if len(v) != 1 {
		return nil
	}
	return p.relay.Stream(v[0])
}

// sendsCompressed tells whether c's client compresses its messages
// (grpc-encoding other than identity). Spliced, those would reach the
// upstream as they are, under a request header that names no encoding, so
// such a DoPut takes the message path, where gRPC decompresses them. When
// gRPC does not tell, it says true: the message path is always right.
func sendsCompressed(c *call) bool {
	rc, ok := grpc.ServerTransportStreamFromContext(c.ss.Context()).(interface{ RecvCompress() string })
	if !ok {
		return true
	}
	enc := rc.RecvCompress()
	return enc != "" && enc != "identity"
}

// spliceTarget is where a spliced call goes: a host:port (TLS or not);
// ok is false for targets the relay does not dial (Unix sockets).
func spliceTarget(rt *route, location string) (t h2relay.Target, scheme string, ok bool) {
	loc := location
	if loc == "" {
		loc = rt.Target
	}
	target, useTLS, err := dialTarget(loc)
	if err != nil || strings.HasPrefix(target, "unix:") {
		return t, "", false
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return t, "", false
	}
	t.Addr, scheme = target, "http"
	if useTLS {
		host, _, _ := net.SplitHostPort(target)
		// As the router's gRPC connections: system roots, TLS 1.2 or later.
		t.TLS, scheme = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}, "https"
	}
	return t, scheme, true
}

// requestFields is the upstream request header of a spliced call, as
// gRPC's client would write it, with the metadata the handler forwards.
func requestFields(c *call, t h2relay.Target, scheme string) []hpack.HeaderField {
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: scheme},
		{Name: ":path", Value: c.fullMethod()},
		{Name: ":authority", Value: t.Addr},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
		{Name: "user-agent", Value: "pipemesh grpc-go/" + grpc.Version},
	}
	if d, ok := c.ctx.Deadline(); ok {
		ms := max(1, time.Until(d).Milliseconds())
		if ms < 1e8 {
			fields = append(fields, hpack.HeaderField{Name: "grpc-timeout", Value: strconv.FormatInt(ms, 10) + "m"})
		} else {
			fields = append(fields, hpack.HeaderField{Name: "grpc-timeout", Value: strconv.FormatInt(min(ms/1000, 99999999), 10) + "S"})
		}
	}
	md, _ := metadata.FromOutgoingContext(c.ctx)
	for k, vs := range md {
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			fields = append(fields, hpack.HeaderField{Name: k, Value: v})
		}
	}
	return fields
}

// responseMetadata turns an upstream header or trailer block into gRPC
// metadata, without pseudo-headers and gRPC's reserved headers.
func responseMetadata(fields []hpack.HeaderField) metadata.MD {
	md := metadata.MD{}
	for _, f := range fields {
		k := f.Name
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" {
			continue
		}
		v := f.Value
		if strings.HasSuffix(k, "-bin") {
			b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
			if err != nil {
				continue
			}
			v = string(b)
		}
		md[k] = append(md[k], v)
	}
	return md
}

// headerStatus checks the :status and content type of a response header.
func headerStatus(fields []hpack.HeaderField) error {
	httpStatus, ctype := "", ""
	for _, f := range fields {
		switch f.Name {
		case ":status":
			httpStatus = f.Value
		case "content-type":
			ctype = f.Value
		}
	}
	if httpStatus != "200" {
		code := codes.Unknown
		switch httpStatus {
		case "400":
			code = codes.Internal
		case "401":
			code = codes.Unauthenticated
		case "403":
			code = codes.PermissionDenied
		case "404":
			code = codes.Unimplemented
		case "429", "502", "503", "504":
			code = codes.Unavailable
		}
		return status.Errorf(code, "pipemesh: upstream answered HTTP status %s", httpStatus)
	}
	if !strings.HasPrefix(ctype, "application/grpc") {
		return status.Errorf(codes.Internal, "pipemesh: upstream answered content type %q, not gRPC", ctype)
	}
	return nil
}

// trailerStatus reads the gRPC status of a trailer block.
func trailerStatus(fields []hpack.HeaderField) error {
	code, msg, details, found := codes.Unknown, "", "", false
	for _, f := range fields {
		switch f.Name {
		case "grpc-status":
			n, err := strconv.ParseUint(f.Value, 10, 32)
			if err != nil {
				return status.Errorf(codes.Internal, "pipemesh: upstream sent a malformed grpc-status %q", f.Value)
			}
			code, found = codes.Code(n), true
		case "grpc-message":
			msg = decodeMessage(f.Value)
		case "grpc-status-details-bin":
			details = f.Value
		}
	}
	if !found {
		return status.Error(codes.Internal, "pipemesh: upstream ended the call without a grpc-status")
	}
	if code == codes.OK {
		return nil
	}
	if details != "" {
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(details, "=")); err == nil {
			var sp spb.Status
			if proto.Unmarshal(b, &sp) == nil && codes.Code(sp.GetCode()) == code {
				return status.FromProto(&sp).Err()
			}
		}
	}
	return status.Error(code, msg)
}

// decodeMessage undoes grpc-message's percent-encoding. As gRPC's own
// client it keeps a % that does not start two hex digits, so a stray one
// from a lax server leaves the rest of the message decoded.
func decodeMessage(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) {
			if n, err := strconv.ParseUint(v[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(n))
				i += 2
				continue
			}
		}
		b = append(b, v[i])
	}
	return string(b)
}

// spliceErr turns a relay error into a gRPC status; connection failures
// say "connection" so upstreamErr hides their addresses.
func spliceErr(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var se *h2relay.StreamError
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "pipemesh: call cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "pipemesh: deadline exceeded")
	case errors.As(err, &se) && se.Code == 0x8:
		return status.Error(codes.Canceled, "pipemesh: upstream cancelled the call")
	case errors.As(err, &se) && se.Code == 0x7:
		return status.Error(codes.Unavailable, "pipemesh: upstream refused the stream")
	}
	return status.Errorf(codes.Unavailable, "upstream connection failed: %v", err)
}

// guardedCounter feeds a msgScanner from a relay goroutine until the
// handler stops it, so the edge is never counted after it is reported.
type guardedCounter struct {
	mu   sync.Mutex
	sc   msgScanner
	done bool
	rate *byteRate
	ctx  context.Context
}

func newGuardedCounter(ctx context.Context, e *edge, rate *byteRate) *guardedCounter {
	g := &guardedCounter{rate: rate, ctx: ctx}
	if e != nil {
		g.sc.onMessage = e.countView
	}
	return g
}

func (g *guardedCounter) feed(p []byte) {
	g.mu.Lock()
	if !g.done && g.sc.onMessage != nil {
		g.sc.feed(p)
	}
	g.mu.Unlock()
	// Waiting here holds the relay's reader: the quota slows the sender
	// through flow control, as SendMsg does on the message path.
	_ = g.rate.wait(g.ctx, len(p))
}

func (g *guardedCounter) stop() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
}

// splice runs a call's data through the relay: it opens the upstream
// stream, sends the first message (the ticket, or DoPut's first
// FlightData), forwards the response header, pumps the client's data when
// up is set, and ends with the upstream's trailers and status.
func (p *Proxy) splice(c *call, st *h2relay.Stream, rt *route, location string, first []byte, endRequest bool, down, up *edge, rate *byteRate) error {
	ctx := c.ss.Context()
	t, scheme, _ := spliceTarget(rt, location)
	dc := newGuardedCounter(ctx, down, rate)
	defer dc.stop()
	us, err := st.Splice(ctx, t, requestFields(c, t, scheme), dc.feed)
	if err != nil {
		return c.upstreamErr(rt, spliceErr(err), location)
	}
	p.metrics.spliced.WithLabelValues(c.method).Inc()
	defer us.Close()
	if !endRequest {
		// DoPut's first message is data too: charged as on the message path.
		if err := rate.wait(ctx, len(first)); err != nil {
			return status.FromContextError(err).Err()
		}
	}
	if err := us.Send(first, endRequest); err != nil {
		return c.upstreamErr(rt, spliceErr(err), location)
	}
	if !endRequest {
		uc := newGuardedCounter(ctx, up, rate)
		defer uc.stop()
		us.Pump(uc.feed)
	}
	hdr, trailersOnly, err := us.Header(ctx)
	if err != nil {
		return c.upstreamErr(rt, spliceErr(err), location)
	}
	// As gRPC's client: an HTTP status other than 200 or a content type
	// other than gRPC's decides the code, even in a Trailers-Only answer
	// (a load balancer's bare 503 ends the stream in its header block).
	if err := headerStatus(hdr); err != nil {
		return c.upstreamErr(rt, err, location)
	}
	if trailersOnly {
		c.setTrailer(responseMetadata(hdr))
		return c.upstreamErr(rt, trailerStatus(hdr), location)
	}
	// Always sent, empty or not: the relay lets the upstream's DATA reach
	// the client only after the response header.
	if err := c.ss.SendHeader(forwardable(responseMetadata(hdr))); err != nil {
		return err
	}
	trl, err := us.Trailers(ctx)
	if err != nil {
		return c.upstreamErr(rt, spliceErr(err), location)
	}
	c.setTrailer(responseMetadata(trl))
	return c.upstreamErr(rt, trailerStatus(trl), location)
}

// ticketMessage is the DoGet request the upstream gets.
func ticketMessage(inner []byte) ([]byte, error) {
	b, err := proto.Marshal(&flight.Ticket{Ticket: inner})
	if err != nil {
		return nil, fmt.Errorf("encode the upstream ticket: %w", err)
	}
	return b, nil
}
