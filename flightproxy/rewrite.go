package flightproxy

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/protobuf/proto"
)

// reuseConnection is the location that tells a client to fetch an endpoint
// over the connection it already has (Flight spec, "Connection Reuse").
const reuseConnection = "arrow-flight-reuse-connection://?"

// rewriteInfo makes every endpoint of fi lead back through the proxy:
//
//   - An endpoint without locations means "the service you asked"; it stays
//     so, and its ticket is wrapped so that the DoGet reaches rt again.
//   - arrow-flight-reuse-connection://? means the same; it stays too.
//   - gRPC locations (grpc, grpc+tcp, grpc+tls, grpc+unix) are replaced by
//     the proxy's advertised location. The first one that is not rt's own
//     target is kept inside the signed ticket, so that the DoGet is sent
//     where the upstream said the data is.
//   - Other locations (http, s3, ...) are dropped: the proxy cannot stand
//     in for them, and passing them on would leak upstream addresses. A
//     client whose endpoint is left with no location asks the proxy.
func (p *Proxy) rewriteInfo(fi *flight.FlightInfo, rt *route, dataset string) {
	for _, ep := range fi.GetEndpoint() {
		p.rewriteEndpoint(ep, rt, dataset)
	}
}

func (p *Proxy) rewriteEndpoint(ep *flight.FlightEndpoint, rt *route, dataset string) {
	target := ""
	hadFlight, hadReuse, dropped := false, false, 0
	for _, loc := range ep.GetLocation() {
		uri := loc.GetUri()
		switch {
		case strings.EqualFold(uri, reuseConnection) || strings.HasPrefix(strings.ToLower(uri), "arrow-flight-reuse-connection:"):
			hadReuse = true
		case isFlightScheme(uri):
			hadFlight = true
			if target == "" && !rt.sameTarget(uri) {
				target = uri
			}
		default:
			dropped++
		}
	}
	if dropped > 0 {
		p.log.Debug("dropped non-gRPC endpoint locations", "route", rt.Name, "dataset", dataset, "count", dropped)
	}
	ep.Location = nil
	switch {
	case hadFlight && p.advertise != "":
		ep.Location = []*flight.Location{{Uri: p.advertise}}
	case hadFlight || hadReuse:
		ep.Location = []*flight.Location{{Uri: reuseConnection}}
	}
	if ep.Ticket != nil {
		ep.Ticket.Ticket = p.tickets.wrap(routedTicket{route: rt.Name, dataset: dataset, location: target, inner: ep.Ticket.GetTicket()})
	}
}

// resolveTicket finds where a ticket goes. Tickets the proxy issued go to
// the route (and location) inside them, with the upstream's own ticket; any
// other ticket goes unchanged to the default route, for a dataset the proxy
// cannot name, but only while no authorizer is in force: the proxy cannot
// check a dataset it cannot name, and an upstream's ticket format may be
// easy to write by hand (the built-in service's is JSON), so passing it
// would let a caller read what the policy denies him.
func (p *Proxy) resolveTicket(b []byte) (rt *route, location, dataset string, inner []byte, err error) {
	t, err := p.tickets.unwrap(b)
	if err == errNotOurs {
		if _, open := p.cfg.Authorizer.(AllowAll); !open {
			return nil, "", "", nil, errForeignTicket
		}
		return p.router.defaultRoute(), "", "", b, nil
	}
	if err != nil {
		return nil, "", "", nil, err
	}
	rt, ok := p.router.byName[t.route]
	if !ok {
		return nil, "", "", nil, errUnknownRoute(t.route)
	}
	return rt, t.location, t.dataset, t.inner, nil
}

// errForeignTicket refuses a ticket the proxy did not issue under a policy.
var errForeignTicket = status.Error(codes.PermissionDenied,
	"pipemesh: the policy cannot check a ticket this proxy did not issue (it names no dataset); get tickets from GetFlightInfo through the proxy")

// foreignTicketDenial is how the audit log records errForeignTicket.
var foreignTicketDenial = Decision{Rule: "a ticket this proxy did not issue, under a policy", Reason: "foreign_ticket"}

type errUnknownRoute string

func (e errUnknownRoute) Error() string {
	return "the ticket names upstream " + string(e) + ", which this proxy no longer routes; call GetFlightInfo again"
}

// wrapDescriptor hides a descriptor that an upstream returned for the next
// PollFlightInfo inside a signed CMD descriptor, so the next poll reaches
// the same upstream whatever the descriptor says.
func (p *Proxy) wrapDescriptor(d *flight.FlightDescriptor, rt *route, dataset string) *flight.FlightDescriptor {
	b, err := proto.Marshal(d)
	if err != nil {
		return d
	}
	return &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: p.tickets.wrap(routedTicket{route: rt.Name, dataset: dataset, inner: b})}
}

// unwrapDescriptor undoes wrapDescriptor; ok is false for any other descriptor.
func (p *Proxy) unwrapDescriptor(d *flight.FlightDescriptor) (rt *route, dataset string, orig *flight.FlightDescriptor, ok bool, err error) {
	if d.GetType() != flight.DescriptorCMD {
		return nil, "", nil, false, nil
	}
	t, err := p.tickets.unwrap(d.GetCmd())
	if err == errNotOurs {
		return nil, "", nil, false, nil
	}
	if err != nil {
		return nil, "", nil, true, err
	}
	rt, found := p.router.byName[t.route]
	if !found {
		return nil, "", nil, true, errUnknownRoute(t.route)
	}
	orig = &flight.FlightDescriptor{}
	if err := proto.Unmarshal(t.inner, orig); err != nil {
		return nil, "", nil, true, err
	}
	return rt, t.dataset, orig, true, nil
}
