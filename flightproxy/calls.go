package flightproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// call is one client call in progress.
type call struct {
	p         *Proxy
	ss        grpc.ServerStream
	ctx       context.Context // carries the metadata to send upstream
	method    string
	principal string
	job       string
	host      string // the client's address, host only
	software  string // the client's gRPC user-agent
}

// jobHeader lets a client name its job for lineage (Spark: the app name).
const jobHeader = "x-pipemesh-job"

var (
	unaryDesc        = &grpc.StreamDesc{}
	serverStreamDesc = &grpc.StreamDesc{ServerStreams: true}
	bidiDesc         = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
)

// serviceDesc registers every Flight method as a stream handler: on the
// wire a unary call is a stream of one message each way, so one shape of
// handler serves all ten.
func (p *Proxy) serviceDesc() *grpc.ServiceDesc {
	h := func(method string, fn func(*call) error) grpc.StreamHandler {
		return func(_ any, ss grpc.ServerStream) error { return p.handle(method, ss, fn) }
	}
	return &grpc.ServiceDesc{
		ServiceName: flightService,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{
			{StreamName: "Handshake", Handler: h("Handshake", p.handshake), ServerStreams: true, ClientStreams: true},
			{StreamName: "ListFlights", Handler: h("ListFlights", p.listFlights), ServerStreams: true},
			{StreamName: "GetFlightInfo", Handler: h("GetFlightInfo", p.getFlightInfo)},
			{StreamName: "PollFlightInfo", Handler: h("PollFlightInfo", p.pollFlightInfo)},
			{StreamName: "GetSchema", Handler: h("GetSchema", p.getSchema)},
			{StreamName: "DoGet", Handler: h("DoGet", p.doGet), ServerStreams: true},
			{StreamName: "DoPut", Handler: h("DoPut", p.doPut), ServerStreams: true, ClientStreams: true},
			{StreamName: "DoExchange", Handler: h("DoExchange", p.doExchange), ServerStreams: true, ClientStreams: true},
			{StreamName: "DoAction", Handler: h("DoAction", p.doAction), ServerStreams: true},
			{StreamName: "ListActions", Handler: h("ListActions", p.listActions), ServerStreams: true},
		},
		Metadata: "Flight.proto",
	}
}

func (p *Proxy) handle(method string, ss grpc.ServerStream, fn func(*call) error) error {
	active := p.metrics.active.WithLabelValues(method)
	active.Inc()
	defer active.Dec()
	c := &call{p: p, ss: ss, method: method}
	err := p.begin(c)
	if err == nil {
		err = fn(c)
	}
	code := status.Code(err)
	p.metrics.calls.WithLabelValues(method, code.String()).Inc()
	if err != nil && code != codes.Canceled {
		p.log.Debug("call failed", "method", method, "principal", c.principal, "code", code, "error", err)
	}
	return err
}

// begin identifies the caller and prepares the upstream context.
func (p *Proxy) begin(c *call) error {
	ctx := c.ss.Context()
	in, _ := metadata.FromIncomingContext(ctx)
	principal, consumed, err := p.identify(ctx, in, c.method)
	if err != nil {
		return err
	}
	c.principal = principal
	c.job = principal
	if v := in.Get(jobHeader); len(v) > 0 && v[0] != "" {
		c.job = v[0]
	}
	if v := in.Get("user-agent"); len(v) > 0 {
		c.software = v[0]
	}
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		c.host = pr.Addr.String()
		if h, _, err := net.SplitHostPort(c.host); err == nil {
			c.host = h
		}
	}
	c.ctx = metadata.NewOutgoingContext(ctx, forwardable(in, consumed...))
	return nil
}

func (c *call) fullMethod() string { return "/" + flightService + "/" + c.method }

// upstreamErr hides errors of the connection to an upstream, whose text
// names the upstream's address or host name, behind the route's name.
// Errors the upstream itself returned pass as they are: code, message and
// details. locations are other upstream addresses the call may have dialled
// (a ticket's), whose hosts must not show either.
func (c *call) upstreamErr(rt *route, err error, locations ...string) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.Unavailable {
		return err
	}
	if msg := st.Message(); !strings.Contains(msg, "connection") && !strings.Contains(msg, "transport") &&
		!strings.Contains(msg, "dial") && !strings.Contains(msg, "resolver") && !mentionsHost(msg, rt.target, locations) {
		return err // the upstream's own Unavailable (overloaded, draining)
	}
	c.p.log.Warn("upstream unavailable", "route", rt.Name, "method", c.method, "error", err)
	return status.Errorf(codes.Unavailable, "pipemesh: upstream %q unavailable; see the proxy log", rt.Name)
}

// mentionsHost tells whether msg names the host of target or of one of the
// locations (a DNS error names the host without its port).
func mentionsHost(msg, target string, locations []string) bool {
	hosts := []string{target}
	for _, l := range locations {
		if t, _, err := dialTarget(l); err == nil {
			hosts = append(hosts, t)
		}
	}
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if strings.Contains(msg, h) {
			return true
		}
		if host, _, err := net.SplitHostPort(h); err == nil && host != "" && strings.Contains(msg, host) {
			return true
		}
	}
	return false
}

// sendHeader forwards upstream response headers, once.
func (c *call) sendHeader(md metadata.MD) {
	if md = forwardable(md); len(md) > 0 {
		_ = c.ss.SendHeader(md)
	}
}

func (c *call) setTrailer(md metadata.MD) {
	if md = forwardable(md); len(md) > 0 {
		c.ss.SetTrailer(md)
	}
}

// unary forwards one request and its one response.
func (c *call) unary(conn *grpc.ClientConn, req, resp proto.Message) error {
	var hdr, trl metadata.MD
	err := conn.Invoke(c.ctx, c.fullMethod(), req, resp, grpc.Header(&hdr), grpc.Trailer(&trl))
	c.sendHeader(hdr)
	c.setTrailer(trl)
	return err
}

// relayDown forwards the upstream's messages to the client until the
// upstream ends the call, then its trailers and status. each, when not nil,
// sees every frame before it is sent.
func (c *call) relayDown(cs grpc.ClientStream, each func(*frame), rate *byteRate) error {
	if md, err := cs.Header(); err == nil {
		c.sendHeader(md)
	}
	var f frame
	for {
		err := cs.RecvMsg(&f)
		if err != nil {
			c.setTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if each != nil {
			each(&f)
		}
		if err := rate.wait(c.ss.Context(), f.data.Len()); err != nil {
			f.free()
			return status.Error(codes.Canceled, err.Error())
		}
		// SendMsg blocks while the client's flow-control window is full:
		// this is where a slow client slows the upstream.
		err = c.ss.SendMsg(&f)
		f.free() // a no-op once gRPC took the buffers
		if err != nil {
			return err
		}
	}
}

// relayUp forwards the client's messages, first included, to the upstream
// until the client half-closes. A client that fails mid-stream cancels the
// upstream call, so the upstream never takes a cut stream for a whole one.
func (c *call) relayUp(cs grpc.ClientStream, cancel context.CancelFunc, first *frame, each func(*frame), rate *byteRate) {
	f := first
	for {
		if each != nil {
			each(f)
		}
		if err := rate.wait(c.ss.Context(), f.data.Len()); err != nil {
			f.free()
			cancel()
			return
		}
		err := cs.SendMsg(f)
		f.free()
		if err != nil {
			return // the upstream ended the call; relayDown reports how
		}
		f = &frame{}
		if err := c.ss.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				_ = cs.CloseSend()
			} else {
				cancel()
			}
			return
		}
	}
}

// finishEdges reports stream observations once both halves of a call are
// done, whichever ends last.
type finishEdges struct {
	p     *Proxy
	mu    sync.Mutex
	left  int
	code  codes.Code
	edges []*edge
}

func (f *finishEdges) done(code *codes.Code) {
	f.mu.Lock()
	if code != nil {
		f.code = *code
	}
	f.left--
	last := f.left == 0
	f.mu.Unlock()
	if last {
		for _, e := range f.edges {
			f.p.report(e, f.code)
		}
	}
}

func (p *Proxy) report(e *edge, code codes.Code) {
	e.obs.End = time.Now()
	e.obs.Code = code
	if e.malformedHeaders > 0 {
		p.log.Warn("FlightData headers the proxy could not read were passed on uncounted",
			"dataset", e.obs.Dataset, "method", e.obs.Method, "count", e.malformedHeaders)
	}
	if p.cfg.Observer != nil {
		p.cfg.Observer.ObserveStream(e.delta())
	}
}

func (p *Proxy) observeQuery(c *call, cmd command) {
	if cmd.sql == "" {
		return
	}
	p.log.Info("flight sql", "principal", c.principal, "job", c.job, "method", c.method, "command", cmd.kind, "sql", cmd.sql)
	if p.cfg.Observer != nil {
		p.cfg.Observer.ObserveQuery(QueryObservation{Principal: c.principal, Job: c.job, Host: c.host, Software: c.software,
			Method: c.method, Command: cmd.kind, SQL: cmd.sql, Time: time.Now()})
	}
}

// describeRequest reads the descriptor of a unary call, resolving one the
// proxy wrapped for PollFlightInfo.
func (p *Proxy) describeRequest(c *call) (*flight.FlightDescriptor, *route, string, error) {
	var d flight.FlightDescriptor
	if err := c.ss.RecvMsg(&d); err != nil {
		return nil, nil, "", err
	}
	if rt, dataset, orig, ok, err := p.unwrapDescriptor(&d); ok {
		if err != nil {
			return nil, nil, "", status.Errorf(codes.InvalidArgument, "pipemesh: %v", err)
		}
		return orig, rt, dataset, nil
	}
	dataset, cmd := describe(&d)
	p.observeQuery(c, cmd)
	return &d, p.router.forDataset(dataset), dataset, nil
}

// readDescribed runs the calls that name a dataset by descriptor and need
// READ on it (GetFlightInfo, PollFlightInfo, GetSchema): the descriptor is
// read and authorized, the upstream answers resp, and fix (if any) rewrites
// it before it goes to the client.
func (p *Proxy) readDescribed(c *call, resp proto.Message, fix func(rt *route, dataset string)) error {
	d, rt, dataset, err := p.describeRequest(c)
	if err != nil {
		return err
	}
	if err := p.authorize(c, OpRead, dataset); err != nil {
		return err
	}
	if err := c.unary(rt.conn, d, resp); err != nil {
		return c.upstreamErr(rt, err)
	}
	if fix != nil {
		fix(rt, dataset)
	}
	return c.ss.SendMsg(resp)
}

func (p *Proxy) getFlightInfo(c *call) error {
	var fi flight.FlightInfo
	return p.readDescribed(c, &fi, func(rt *route, dataset string) { p.rewriteInfo(&fi, rt, dataset) })
}

func (p *Proxy) pollFlightInfo(c *call) error {
	var pi flight.PollInfo
	return p.readDescribed(c, &pi, func(rt *route, dataset string) {
		if pi.Info != nil {
			p.rewriteInfo(pi.Info, rt, dataset)
		}
		if pi.FlightDescriptor != nil {
			pi.FlightDescriptor = p.wrapDescriptor(pi.FlightDescriptor, rt, dataset)
		}
	})
}

func (p *Proxy) getSchema(c *call) error {
	var sr flight.SchemaResult
	return p.readDescribed(c, &sr, nil)
}

func (p *Proxy) doGet(c *call) error {
	var t flight.Ticket
	if err := c.ss.RecvMsg(&t); err != nil {
		return err
	}
	rt, location, dataset, inner, err := p.resolveTicket(t.GetTicket())
	if errors.Is(err, errForeignTicket) {
		p.audit(c, OpRead, ResourceType, "", foreignTicketDenial)
		return err
	}
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "pipemesh: %v", err)
	}
	if err := p.authorize(c, OpRead, dataset); err != nil {
		return err
	}
	release, rate, err := p.shaper.admit(c.principal)
	if err != nil {
		return err
	}
	defer release()
	if st := p.relayStream(c); st != nil && p.compressionFor(dataset) == Passthrough {
		if _, _, ok := spliceTarget(rt, location); ok {
			msg, err := ticketMessage(inner)
			if err != nil {
				return status.Errorf(codes.Internal, "pipemesh: %v", err)
			}
			e := p.metrics.edge(c, dataset, Read)
			err = p.splice(c, st, rt, location, msg, true, e, nil, rate)
			p.report(e, status.Code(err))
			return err
		}
	}
	conn, err := p.router.connFor(rt, location)
	if err != nil {
		p.log.Warn("cannot dial the location of a ticket", "route", rt.Name, "error", err)
		return status.Errorf(codes.Unavailable, "pipemesh: cannot reach the endpoint of upstream %q", rt.Name)
	}
	cs, err := conn.NewStream(c.ctx, serverStreamDesc, c.fullMethod())
	if err != nil {
		return c.upstreamErr(rt, err, location)
	}
	if err := cs.SendMsg(&flight.Ticket{Ticket: inner}); err != nil && !errors.Is(err, io.EOF) {
		return c.upstreamErr(rt, err, location)
	}
	_ = cs.CloseSend()
	e := p.metrics.edge(c, dataset, Read)
	if comp := p.compressionFor(dataset); comp != Passthrough {
		err = c.upstreamErr(rt, c.recompress(cs, comp, e, rate), location)
	} else {
		err = c.upstreamErr(rt, c.relayDown(cs, e.count, rate), location)
	}
	p.report(e, status.Code(err))
	return err
}

// doPut and doExchange route by the descriptor in the client's first message.
func (p *Proxy) doPut(c *call) error      { return p.dataStream(c, false) }
func (p *Proxy) doExchange(c *call) error { return p.dataStream(c, true) }

func (p *Proxy) dataStream(c *call, exchange bool) error {
	// The relay holds a DoPut's data after its first message until this
	// handler splices the call or lets the data come through gRPC.
	st := p.relayStream(c)
	if st != nil {
		defer st.Release()
	}
	first := &frame{}
	if err := c.ss.RecvMsg(first); err != nil {
		return err
	}
	var scratch []byte
	v, err := parseFlightData(first.data, &scratch)
	if err != nil {
		first.free()
		return status.Errorf(codes.InvalidArgument, "pipemesh: %s: %v", c.method, err)
	}
	var d flight.FlightDescriptor
	if err := proto.Unmarshal(v.descriptor, &d); err != nil {
		first.free()
		return status.Errorf(codes.InvalidArgument, "pipemesh: %s: the first message's descriptor: %v", c.method, err)
	}
	dataset, cmd := describe(&d)
	p.observeQuery(c, cmd)
	rt := p.router.forDataset(dataset)
	ops := []Operation{OpWrite}
	if exchange {
		ops = append(ops, OpRead)
	}
	for _, op := range ops {
		if err := p.authorize(c, op, dataset); err != nil {
			first.free()
			return err
		}
	}
	release, rate, err := p.shaper.admit(c.principal)
	if err != nil {
		first.free()
		return err
	}
	defer release()
	if _, _, ok := spliceTarget(rt, ""); ok && st != nil && !exchange && !sendsCompressed(c) {
		up := p.metrics.edge(c, dataset, Write)
		up.count(first)
		msg := first.data.Materialize()
		first.free()
		err := p.splice(c, st, rt, "", msg, false, nil, up, rate)
		p.report(up, status.Code(err))
		return err
	}
	if st != nil {
		st.Release()
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	cs, err := rt.conn.NewStream(ctx, bidiDesc, c.fullMethod())
	if err != nil {
		first.free()
		return c.upstreamErr(rt, err)
	}
	fin := &finishEdges{p: p, left: 2}
	up := p.metrics.edge(c, dataset, Write)
	fin.edges = append(fin.edges, up)
	var down *edge
	var countDown func(*frame)
	if exchange {
		down = p.metrics.edge(c, dataset, Read)
		fin.edges = append(fin.edges, down)
		countDown = down.count
	}
	go func() {
		c.relayUp(cs, cancel, first, up.count, rate)
		fin.done(nil)
	}()
	err = c.upstreamErr(rt, c.relayDown(cs, countDown, rate))
	code := status.Code(err)
	fin.done(&code)
	return err
}

// handshake passes through to the default upstream when the proxy does
// not authenticate; with Identity set the proxy answers it (identity.go).
func (p *Proxy) handshake(c *call) error {
	if p.cfg.Identity != nil {
		return p.handshakeLocal(c)
	}
	rt := p.router.defaultRoute()
	first := &frame{}
	if err := c.ss.RecvMsg(first); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	cs, err := rt.conn.NewStream(ctx, bidiDesc, c.fullMethod())
	if err != nil {
		first.free()
		return c.upstreamErr(rt, err)
	}
	go c.relayUp(cs, cancel, first, nil, nil)
	return c.upstreamErr(rt, c.relayDown(cs, nil, nil))
}

// listFlights asks every upstream and merges the answers, rewriting each
// FlightInfo and leaving out the datasets the caller may not describe.
func (p *Proxy) listFlights(c *call) error {
	var crit flight.Criteria
	if err := c.ss.RecvMsg(&crit); err != nil {
		return err
	}
	single := len(p.router.routes) == 1
	for _, rt := range p.router.routes {
		cs, err := rt.conn.NewStream(c.ctx, serverStreamDesc, c.fullMethod())
		if err != nil {
			return c.upstreamErr(rt, err)
		}
		if err := cs.SendMsg(&crit); err != nil && !errors.Is(err, io.EOF) {
			return c.upstreamErr(rt, err)
		}
		_ = cs.CloseSend()
		if md, err := cs.Header(); err == nil && single {
			c.sendHeader(md)
		}
		for {
			var fi flight.FlightInfo
			err := cs.RecvMsg(&fi)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				c.setTrailer(cs.Trailer())
				return c.upstreamErr(rt, err)
			}
			dataset, _ := describe(fi.GetFlightDescriptor())
			// Each upstream lists only what it serves: skip what another
			// route owns, so a dataset is never listed twice.
			if fi.GetFlightDescriptor().GetType() == flight.DescriptorPATH && p.router.forDataset(dataset) != rt {
				continue
			}
			if !p.decide(c, OpDescribe, dataset).Allow {
				continue
			}
			p.rewriteInfo(&fi, rt, dataset)
			if err := c.ss.SendMsg(&fi); err != nil {
				return err
			}
		}
		if single {
			c.setTrailer(cs.Trailer())
		}
	}
	return nil
}

// listActions asks the default upstream, which also receives DoAction.
// Under an ActionAuthorizer it lists only the action types the caller may
// call; the ones the proxy checks on their datasets instead (delete,
// CancelFlightInfo, RenewFlightEndpoint) are always listed, since whether
// a call passes depends on its body.
func (p *Proxy) listActions(c *call) error {
	var e flight.Empty
	if err := c.ss.RecvMsg(&e); err != nil {
		return err
	}
	rt := p.router.defaultRoute()
	cs, err := rt.conn.NewStream(c.ctx, serverStreamDesc, c.fullMethod())
	if err != nil {
		return c.upstreamErr(rt, err)
	}
	if err := cs.SendMsg(&e); err != nil && !errors.Is(err, io.EOF) {
		return c.upstreamErr(rt, err)
	}
	_ = cs.CloseSend()
	if _, ok := p.cfg.Authorizer.(ActionAuthorizer); !ok {
		return c.upstreamErr(rt, c.relayDown(cs, nil, nil))
	}
	if md, err := cs.Header(); err == nil {
		c.sendHeader(md)
	}
	for {
		var at flight.ActionType
		err := cs.RecvMsg(&at)
		if err != nil {
			c.setTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return c.upstreamErr(rt, err)
		}
		if !datasetAction(at.GetType()) && !p.decideAction(c, at.GetType()).Allow {
			continue
		}
		if err := c.ss.SendMsg(&at); err != nil {
			return err
		}
	}
}

// datasetAction reports whether the proxy authorizes an action type on the
// datasets its body names rather than as a flight_action.
func datasetAction(actionType string) bool {
	switch actionType {
	case actionDelete, flight.CancelFlightInfoActionType, flight.RenewFlightEndpointActionType:
		return true
	}
	return false
}

// doAction forwards an action to the default upstream. The two actions
// that carry the proxy's tickets (CancelFlightInfo, RenewFlightEndpoint)
// go to the upstream that issued them, with its own tickets. Those and the
// built-in service's delete are authorized on their datasets; every other
// type on its flight_action rules.
func (p *Proxy) doAction(c *call) error {
	var a flight.Action
	if err := c.ss.RecvMsg(&a); err != nil {
		return err
	}
	rt := p.router.defaultRoute()
	var renewed *renewState
	switch a.GetType() {
	case flight.CancelFlightInfoActionType, flight.RenewFlightEndpointActionType:
		var err error
		var datasets []string
		if rt, renewed, datasets, err = p.unwrapActionTickets(&a); err != nil {
			if errors.Is(err, errForeignTicket) {
				p.audit(c, OpRead, ResourceType, "", foreignTicketDenial)
			}
			return err
		}
		// Renewing or cancelling a ticket is reading its dataset.
		for _, d := range datasets {
			if err := p.authorize(c, OpRead, d); err != nil {
				return err
			}
		}
	case actionDelete:
		// The built-in service's delete: who may overwrite a dataset
		// (DoPut replaces it) may delete it.
		if err := p.authorize(c, OpWrite, string(a.GetBody())); err != nil {
			return err
		}
	default:
		// Every other action names no dataset the proxy can check
		// (CreatePreparedStatement carries SQL text, but naming its tables
		// needs a SQL parser): decide on the action type, deny unless a
		// rule allows it.
		if err := p.authorizeAction(c, a.GetType()); err != nil {
			return err
		}
		p.observeQuery(c, parseCommand(a.GetBody()))
	}
	cs, err := rt.conn.NewStream(c.ctx, serverStreamDesc, c.fullMethod())
	if err != nil {
		return c.upstreamErr(rt, err)
	}
	if err := cs.SendMsg(&a); err != nil && !errors.Is(err, io.EOF) {
		return c.upstreamErr(rt, err)
	}
	_ = cs.CloseSend()
	if renewed == nil {
		return c.upstreamErr(rt, c.relayDown(cs, nil, nil))
	}
	// RenewFlightEndpoint answers with the endpoint: rewrite it like a
	// FlightInfo's.
	if md, err := cs.Header(); err == nil {
		c.sendHeader(md)
	}
	for {
		var r flight.Result
		err := cs.RecvMsg(&r)
		if err != nil {
			c.setTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return c.upstreamErr(rt, err)
		}
		var ep flight.FlightEndpoint
		if proto.Unmarshal(r.Body, &ep) == nil {
			p.rewriteEndpoint(&ep, rt, renewed.dataset)
			if b, err := proto.Marshal(&ep); err == nil {
				r.Body = b
			}
		}
		if err := c.ss.SendMsg(&r); err != nil {
			return err
		}
	}
}

type renewState struct{ dataset string }

// actionDelete is the built-in Flight service's action that deletes the
// dataset its body names (flightserver.ActionDelete).
const actionDelete = "delete"

// unwrapActionTickets puts the upstream's own tickets back into a
// CancelFlightInfo or RenewFlightEndpoint body and returns its route.
// It also returns the datasets of the tickets, for authorization.
func (p *Proxy) unwrapActionTickets(a *flight.Action) (*route, *renewState, []string, error) {
	bad := func(err error) error {
		if errors.Is(err, errForeignTicket) {
			return err
		}
		return status.Errorf(codes.InvalidArgument, "pipemesh: %s: %v", a.GetType(), err)
	}
	unwrapEp := func(ep *flight.FlightEndpoint) (*route, string, error) {
		rt, location, dataset, inner, err := p.resolveTicket(ep.GetTicket().GetTicket())
		if err != nil {
			return nil, "", err
		}
		ep.Ticket = &flight.Ticket{Ticket: inner}
		ep.Location = nil
		if location != "" {
			ep.Location = []*flight.Location{{Uri: location}}
		}
		return rt, dataset, nil
	}
	if a.GetType() == flight.RenewFlightEndpointActionType {
		var req flight.RenewFlightEndpointRequest
		if err := proto.Unmarshal(a.Body, &req); err != nil {
			return nil, nil, nil, bad(err)
		}
		rt, dataset, err := unwrapEp(req.GetEndpoint())
		if err != nil {
			return nil, nil, nil, bad(err)
		}
		b, _ := proto.Marshal(&req)
		a.Body = b
		return rt, &renewState{dataset: dataset}, []string{dataset}, nil
	}
	var req flight.CancelFlightInfoRequest
	if err := proto.Unmarshal(a.Body, &req); err != nil {
		return nil, nil, nil, bad(err)
	}
	rt := p.router.defaultRoute()
	var datasets []string
	for i, ep := range req.GetInfo().GetEndpoint() {
		r, dataset, err := unwrapEp(ep)
		if err != nil {
			return nil, nil, nil, bad(err)
		}
		if i == 0 {
			rt = r
		}
		datasets = append(datasets, dataset)
	}
	b, _ := proto.Marshal(&req)
	a.Body = b
	return rt, nil, datasets, nil
}
