package flightproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// locServer is a Flight service whose FlightInfo endpoints carry the
// locations a test gives it; DoGet answers with one message whose
// app_metadata names the server and the ticket, so a test sees where a
// DoGet landed. It echoes the x-test-in header as a header and a trailer,
// and fails the ticket "fail" with a trailer, to test their forwarding.
type locServer struct {
	flight.BaseFlightServer
	name      string
	endpoints [][]string
}

func (s *locServer) GetFlightInfo(_ context.Context, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	fi := &flight.FlightInfo{FlightDescriptor: d}
	for i, locs := range s.endpoints {
		ep := &flight.FlightEndpoint{Ticket: &flight.Ticket{Ticket: []byte("t" + string(rune('0'+i)))}}
		for _, l := range locs {
			ep.Location = append(ep.Location, &flight.Location{Uri: l})
		}
		fi.Endpoint = append(fi.Endpoint, ep)
	}
	return fi, nil
}

func (s *locServer) DoGet(t *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("x-test-in"); len(v) > 0 {
		_ = stream.SendHeader(metadata.Pairs("x-test-out", v[0]))
		stream.SetTrailer(metadata.Pairs("x-test-trailer", "t-"+v[0]))
	}
	if string(t.Ticket) == "fail" {
		return status.Error(codes.FailedPrecondition, "upstream says no")
	}
	return stream.Send(&flight.FlightData{AppMetadata: []byte(s.name + ":" + string(t.Ticket))})
}

func startLocServer(t *testing.T, name string) (*locServer, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &locServer{name: name}
	g := grpc.NewServer()
	flight.RegisterFlightServiceServer(g, s)
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	return s, ln.Addr().String()
}

// firstAppMetadata does a DoGet and returns the first message's app_metadata.
func firstAppMetadata(t *testing.T, ctx context.Context, c flight.Client, tk *flight.Ticket) string {
	t.Helper()
	s, err := c.DoGet(ctx, tk)
	require.NoError(t, err)
	fd, err := s.Recv()
	require.NoError(t, err)
	_, err = s.Recv()
	require.ErrorIs(t, err, io.EOF)
	return string(fd.AppMetadata)
}

// TestLocationsRewritten checks each kind of location the Flight spec
// defines: none leaks, and each DoGet reaches the server the upstream meant.
func TestLocationsRewritten(t *testing.T) {
	a, aAddr := startLocServer(t, "A")
	_, bAddr := startLocServer(t, "B") // not a configured upstream: only named in locations
	cases := []struct {
		name     string
		locs     []string
		wantLocs []string // "proxy" stands for the proxy's location
		servedBy string
	}{
		{"none means the same service", nil, nil, "A"},
		{"reuse connection", []string{reuseConnection}, []string{reuseConnection}, "A"},
		{"the upstream itself", []string{"grpc://" + aAddr}, []string{"proxy"}, "A"},
		{"another server", []string{"grpc+tcp://" + bAddr}, []string{"proxy"}, "B"},
		{"first of several", []string{"grpc://" + bAddr, "grpc://" + aAddr}, []string{"proxy"}, "B"},
		{"non-gRPC dropped", []string{"https://" + aAddr + "/data.arrow"}, nil, "A"},
	}
	for _, tc := range cases {
		a.endpoints = append(a.endpoints, tc.locs)
	}
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "a", Target: aAddr}}})
	c := dial(t, p.Addr())
	fi, err := c.GetFlightInfo(context.Background(), &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"x"}})
	require.NoError(t, err)
	require.Len(t, fi.Endpoint, len(cases))
	assertNoUpstreamLocation(t, fi, p, aAddr, bAddr)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := fi.Endpoint[i]
			var got []string
			for _, l := range ep.Location {
				u := l.Uri
				if u == p.Location() {
					u = "proxy"
				}
				got = append(got, u)
			}
			assert.Equal(t, tc.wantLocs, got)
			want := tc.servedBy + ":t" + string(rune('0'+i))
			assert.Equal(t, want, firstAppMetadata(t, context.Background(), c, ep.Ticket))
		})
	}
}

// TestHeadersAndTrailersForwarded checks request headers reach the
// upstream and its headers and trailers reach the client, on success and
// on failure, with the upstream's status code and message.
func TestHeadersAndTrailersForwarded(t *testing.T) {
	_, addr := startLocServer(t, "A")
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: addr}}})
	c := dial(t, p.Addr())
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-test-in", "v1")

	var hdr, trl metadata.MD
	s, err := c.DoGet(ctx, &flight.Ticket{Ticket: []byte("plain")}, grpc.Header(&hdr), grpc.Trailer(&trl))
	require.NoError(t, err)
	for {
		if _, err := s.Recv(); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
	}
	assert.Equal(t, []string{"v1"}, hdr.Get("x-test-out"))
	assert.Equal(t, []string{"t-v1"}, trl.Get("x-test-trailer"))

	hdr, trl = nil, nil
	s, err = c.DoGet(ctx, &flight.Ticket{Ticket: []byte("fail")}, grpc.Header(&hdr), grpc.Trailer(&trl))
	require.NoError(t, err)
	_, err = s.Recv()
	require.Error(t, err)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.Equal(t, "upstream says no", status.Convert(err).Message())
	assert.Equal(t, []string{"t-v1"}, trl.Get("x-test-trailer"))
	assert.Equal(t, []string{"v1"}, hdr.Get("x-test-out"))
}

// TestUpstreamDownHidesAddress checks a dial failure names the route, not
// the upstream's address.
func TestUpstreamDownHidesAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "warehouse", Target: addr}}})
	c := dial(t, p.Addr())
	_, err = c.GetFlightInfo(context.Background(), &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"x"}})
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Contains(t, err.Error(), `"warehouse"`)
	assert.False(t, strings.Contains(err.Error(), addr), "error leaks %s: %v", addr, err)
}

// TestUnnamedUpstreamDownHidesAddress: an upstream configured without a
// name (flight.upstreams entries may omit it) must not be named by its
// address in what clients see either.
func TestUnnamedUpstreamDownHidesAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: "grpc://" + addr}}})
	c := dial(t, p.Addr())
	_, err = c.GetFlightInfo(context.Background(), pathDesc("x"))
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.False(t, strings.Contains(err.Error(), addr), "error leaks %s: %v", addr, err)
	s, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte("t")})
	if err == nil {
		_, err = s.Recv()
	}
	require.Error(t, err)
	assert.False(t, strings.Contains(err.Error(), addr), "DoGet error leaks %s: %v", addr, err)
}

// TestReadyFollowsUpstreams checks /readyz's view: not ready while the
// upstream cannot be reached, ready once it can.
func TestReadyFollowsUpstreams(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "lake", Target: addr}}})
	require.Eventually(t, func() bool {
		ok, why := p.Ready()
		return !ok && strings.Contains(why, `"lake"`)
	}, 10*time.Second, 20*time.Millisecond, "unready while the upstream is down")

	ln, err = net.Listen("tcp", addr)
	require.NoError(t, err)
	g := grpc.NewServer()
	flight.RegisterFlightServiceServer(g, &locServer{name: "lake"})
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	c := dial(t, p.Addr())
	require.Eventually(t, func() bool {
		// A call makes gRPC try again now rather than after its backoff.
		_, _ = c.GetFlightInfo(context.Background(), pathDesc("x"))
		ok, _ := p.Ready()
		return ok
	}, 20*time.Second, 50*time.Millisecond, "ready once the upstream is up")
}

// unavailableServer answers GetFlightInfo with its own Unavailable.
type unavailableServer struct{ flight.BaseFlightServer }

func (*unavailableServer) GetFlightInfo(context.Context, *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return nil, status.Error(codes.Unavailable, "draining, try the next replica")
}

func TestUpstreamsOwnUnavailablePasses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	flight.RegisterFlightServiceServer(g, &unavailableServer{})
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: ln.Addr().String()}}})
	_, err = dial(t, p.Addr()).GetFlightInfo(context.Background(), pathDesc("x"))
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Equal(t, "draining, try the next replica", status.Convert(err).Message())
}

// TestUpstreamResolverErrorHidesHost: when an upstream's name does not
// resolve, grpc-go's error (pickfirst's "name resolver error: " around the
// DNS resolver's, formats taken from grpc-go 1.85) names the host in a
// "lookup" without the port; it must reach the client as the route's name.
func TestUpstreamResolverErrorHidesHost(t *testing.T) {
	c := &call{p: &Proxy{log: slog.New(slog.DiscardHandler)}, method: "GetFlightInfo"}
	rt := &route{Upstream: Upstream{Name: "lake", Target: "grpc://dremio.data.svc:32010"}, target: "dremio.data.svc:32010"}
	for _, msg := range []string{
		"name resolver error: dns: A record lookup error: lookup dremio.data.svc on 10.0.0.2:53: no such host",
		"last connection error: connection refused; last resolver error: dns: A record lookup error: lookup dremio.data.svc: i/o timeout",
		"name resolver error: produced zero addresses",
	} {
		err := c.upstreamErr(rt, status.Error(codes.Unavailable, msg))
		assert.Equal(t, codes.Unavailable, status.Code(err))
		assert.NotContains(t, err.Error(), "dremio", msg)
		assert.Contains(t, err.Error(), `"lake"`, msg)
	}
	own := status.Error(codes.Unavailable, "draining, try the next replica")
	assert.Equal(t, own, c.upstreamErr(rt, own), "the upstream's own Unavailable passes")
}
