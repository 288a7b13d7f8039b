package flightproxy

import (
	"context"
	"net"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// ticketServer answers GetFlightInfo with one endpoint whose ticket names
// the server, RenewFlightEndpoint and CancelFlightInfo by checking that the
// tickets it gets back are its own, and PollFlightInfo with a descriptor for
// the next poll that only it understands.
type ticketServer struct {
	flight.BaseFlightServer
	name string
	addr string
}

func (s *ticketServer) GetFlightInfo(_ context.Context, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return &flight.FlightInfo{FlightDescriptor: d, Endpoint: []*flight.FlightEndpoint{{
		Ticket:   &flight.Ticket{Ticket: []byte(s.name + "-ticket")},
		Location: []*flight.Location{{Uri: "grpc://" + s.addr}},
	}}}, nil
}

func (s *ticketServer) PollFlightInfo(_ context.Context, d *flight.FlightDescriptor) (*flight.PollInfo, error) {
	if d.Type == flight.DescriptorCMD && string(d.Cmd) == s.name+"-query-42" {
		done := 1.0
		fi, _ := s.GetFlightInfo(context.Background(), d)
		return &flight.PollInfo{Info: fi, Progress: &done}, nil
	}
	half := 0.5
	return &flight.PollInfo{Progress: &half, FlightDescriptor: &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(s.name + "-query-42")}}, nil
}

func (s *ticketServer) DoAction(a *flight.Action, stream flight.FlightService_DoActionServer) error {
	switch a.Type {
	case flight.RenewFlightEndpointActionType:
		var req flight.RenewFlightEndpointRequest
		if err := proto.Unmarshal(a.Body, &req); err != nil {
			return err
		}
		ep := req.Endpoint
		ep.AppMetadata = []byte(s.name + " renewed " + string(ep.Ticket.Ticket))
		ep.Location = []*flight.Location{{Uri: "grpc://" + s.addr}}
		b, _ := proto.Marshal(ep)
		return stream.Send(&flight.Result{Body: b})
	case flight.CancelFlightInfoActionType:
		var req flight.CancelFlightInfoRequest
		if err := proto.Unmarshal(a.Body, &req); err != nil {
			return err
		}
		return stream.Send(&flight.Result{Body: []byte(s.name + " cancelled " + string(req.Info.Endpoint[0].Ticket.Ticket))})
	}
	return stream.Send(&flight.Result{Body: []byte(s.name + " did " + a.Type)})
}

// ticketActions are the action types the ticket server lists.
var ticketActions = []string{"BeginTransaction", "EndTransaction", "admin.compact", "admin.purge", flight.CancelFlightInfoActionType}

func (s *ticketServer) ListActions(_ *flight.Empty, stream flight.FlightService_ListActionsServer) error {
	for _, a := range ticketActions {
		if err := stream.Send(&flight.ActionType{Type: a, Description: s.name + " " + a}); err != nil {
			return err
		}
	}
	return nil
}

func startTicketServer(t *testing.T, name string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	flight.RegisterFlightServiceServer(g, &ticketServer{name: name, addr: ln.Addr().String()})
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	return ln.Addr().String()
}

// TestTicketActionsAndPollingReachTheIssuer checks that RenewFlightEndpoint,
// CancelFlightInfo and a second PollFlightInfo go to the upstream that
// issued the ticket or descriptor, with its own ticket, and that the
// renewed endpoint comes back rewritten.
func TestTicketActionsAndPollingReachTheIssuer(t *testing.T) {
	defAddr := startTicketServer(t, "default")
	salesAddr := startTicketServer(t, "sales")
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "d", Target: defAddr}, {Name: "s", Target: salesAddr, PathPrefix: "sales"}}})
	c := dial(t, p.Addr())
	ctx := context.Background()

	fi, err := c.GetFlightInfo(ctx, pathDesc("sales", "q1"))
	require.NoError(t, err)
	ep, err := c.RenewFlightEndpoint(ctx, &flight.RenewFlightEndpointRequest{Endpoint: fi.Endpoint[0]})
	require.NoError(t, err)
	assert.Equal(t, "sales renewed sales-ticket", string(ep.AppMetadata))
	require.Len(t, ep.Location, 1)
	assert.Equal(t, p.Location(), ep.Location[0].Uri)
	assert.NotEqual(t, "sales-ticket", string(ep.Ticket.Ticket), "the renewed ticket is wrapped again")

	da, err := c.DoAction(ctx, &flight.Action{Type: flight.CancelFlightInfoActionType, Body: mustMarshal(t, &flight.CancelFlightInfoRequest{Info: fi})})
	require.NoError(t, err)
	res, err := da.Recv()
	require.NoError(t, err)
	assert.Equal(t, "sales cancelled sales-ticket", string(res.Body))

	pi, err := c.PollFlightInfo(ctx, pathDesc("sales", "q1"))
	require.NoError(t, err)
	require.NotNil(t, pi.FlightDescriptor)
	assert.NotContains(t, string(pi.FlightDescriptor.Cmd), "sales-query", "the upstream's descriptor is sealed")
	pi, err = c.PollFlightInfo(ctx, pi.FlightDescriptor)
	require.NoError(t, err, "the second poll reaches the sales upstream, not the default")
	require.NotNil(t, pi.Info)
	assertNoUpstreamLocation(t, pi.Info, p, defAddr, salesAddr)
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}
