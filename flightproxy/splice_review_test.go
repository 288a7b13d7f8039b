package flightproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"
)

// probeServer's DoGet answers by ticket, to compare how the spliced and
// the message path carry metadata, deadlines and errors.
type probeServer struct {
	flight.BaseFlightServer
	ended   chan error    // "block": the upstream call's context error
	started chan struct{} // DoPut "block" has begun
}

// probeErr is an error with a message that needs percent-encoding and a
// detail, as an upstream might return for an unknown ticket.
func probeErr() error {
	st, err := status.New(codes.NotFound, "no such ticket: 100% \"gone\" ü\n(see log)").WithDetails(&flight.Ticket{Ticket: []byte("detail")})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func (s *probeServer) DoGet(t *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	ctx := stream.Context()
	switch string(t.Ticket) {
	case "echo":
		in, _ := metadata.FromIncomingContext(ctx)
		left := "none"
		if d, ok := ctx.Deadline(); ok {
			left = strconv.FormatInt(time.Until(d).Milliseconds(), 10)
		}
		if err := stream.SendHeader(metadata.Pairs("x-text", in.Get("x-text")[0], "x-blob-bin", in.Get("x-blob-bin")[0])); err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("x-trail-bin", "\x00\xff\x01"))
		return stream.Send(&flight.FlightData{AppMetadata: []byte(left)})
	case "empty":
		stream.SetTrailer(metadata.Pairs("x-trail-bin", "\x00\xff\x01"))
		return nil
	case "fail":
		return probeErr()
	case "fail-after":
		if err := stream.Send(&flight.FlightData{AppMetadata: []byte("one")}); err != nil {
			return err
		}
		return probeErr()
	case "slow":
		if err := stream.Send(&flight.FlightData{AppMetadata: []byte("one")}); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		return stream.Send(&flight.FlightData{AppMetadata: []byte("two")})
	case "block":
		if err := stream.Send(&flight.FlightData{AppMetadata: []byte("one")}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			s.ended <- ctx.Err()
		case <-time.After(20 * time.Second):
			s.ended <- nil
		}
		return ctx.Err()
	}
	return status.Error(codes.InvalidArgument, "unknown probe")
}

func (s *probeServer) DoPut(stream flight.FlightService_DoPutServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	switch first.GetFlightDescriptor().GetPath()[0] {
	case "reject":
		return probeErr()
	case "block":
		s.started <- struct{}{}
		select {
		case <-ctx.Done():
			s.ended <- ctx.Err()
		case <-time.After(20 * time.Second):
			s.ended <- nil
		}
		return ctx.Err()
	}
	in, _ := metadata.FromIncomingContext(ctx)
	if err := stream.SendHeader(metadata.Pairs("x-blob-bin", in.Get("x-blob-bin")[0])); err != nil {
		return err
	}
	n := 1
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		n++
	}
	if first.GetFlightDescriptor().GetPath()[0] == "reject-after" {
		return probeErr()
	}
	return stream.Send(&flight.PutResult{AppMetadata: []byte(strconv.Itoa(n))})
}

func startProbe(t *testing.T) (string, *probeServer) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &probeServer{ended: make(chan error, 4), started: make(chan struct{}, 4)}
	g := grpc.NewServer()
	flight.RegisterFlightServiceServer(g, s)
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	return ln.Addr().String(), s
}

// TestSpliceReviewMetadataAndDeadline: text and binary metadata reach the
// upstream and come back (header and trailer), and the client's deadline
// reaches the upstream, spliced as through the message path.
func TestSpliceReviewMetadataAndDeadline(t *testing.T) {
	for _, noSplice := range []bool{false, true} {
		t.Run("nosplice="+strconv.FormatBool(noSplice), func(t *testing.T) {
			addr, _ := startProbe(t)
			p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: addr}}, NoSplice: noSplice})
			c := dial(t, p.Addr())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "x-text", "plain value", "x-blob-bin", "\x00\x01\xfe\xff=")
			var hdr, trl metadata.MD
			s, err := c.DoGet(ctx, &flight.Ticket{Ticket: []byte("echo")}, grpc.Header(&hdr), grpc.Trailer(&trl))
			require.NoError(t, err)
			fd, err := s.Recv()
			require.NoError(t, err)
			left, err := strconv.ParseInt(string(fd.AppMetadata), 10, 64)
			require.NoError(t, err, "the upstream saw a deadline: %q", fd.AppMetadata)
			assert.InDelta(t, 30000, left, 5000, "the upstream's deadline")
			_, err = s.Recv()
			require.ErrorIs(t, err, io.EOF)
			assert.Equal(t, []string{"plain value"}, hdr.Get("x-text"))
			assert.Equal(t, []string{"\x00\x01\xfe\xff="}, hdr.Get("x-blob-bin"))
			assert.Equal(t, []string{"\x00\xff\x01"}, trl.Get("x-trail-bin"))
			assert.Equal(t, boolFloat(!noSplice), testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoGet")))
		})
	}
}

// TestSpliceReviewErrors: an upstream error, Trailers-Only or after data,
// reaches the client with the same code, message and details either way.
func TestSpliceReviewErrors(t *testing.T) {
	for _, ticket := range []string{"fail", "fail-after"} {
		got := map[bool]*status.Status{}
		for _, noSplice := range []bool{false, true} {
			addr, _ := startProbe(t)
			p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: addr}}, NoSplice: noSplice})
			c := dial(t, p.Addr())
			s, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte(ticket)})
			require.NoError(t, err)
			for err == nil {
				_, err = s.Recv()
			}
			st, _ := status.FromError(err)
			got[noSplice] = st
			want, _ := status.FromError(probeErr())
			assert.Equal(t, want.Code(), st.Code(), "%s, splice off: %v", ticket, noSplice)
			assert.Equal(t, want.Message(), st.Message(), "%s, splice off: %v", ticket, noSplice)
			assert.Len(t, st.Details(), 1, "%s, splice off: %v", ticket, noSplice)
			assert.Equal(t, boolFloat(!noSplice), testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoGet")))
		}
		assert.Equal(t, got[true].Proto().String(), got[false].Proto().String(), ticket)
	}
}

// TestSpliceReviewUnreachable: nothing listening at the upstream gives
// Unavailable naming the route, not the address, either way.
func TestSpliceReviewUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	for _, noSplice := range []bool{false, true} {
		p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "gone", Target: addr}}, NoSplice: noSplice})
		c := dial(t, p.Addr())
		s, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte("x")})
		require.NoError(t, err)
		_, err = s.Recv()
		assert.Equal(t, codes.Unavailable, status.Code(err), "splice off: %v", noSplice)
		assert.Contains(t, err.Error(), `"gone"`, "splice off: %v", noSplice)
		_, port, _ := net.SplitHostPort(addr)
		assert.NotContains(t, err.Error(), port, "splice off: %v", noSplice)
	}
}

// TestSpliceReviewCancel: a client that cancels a DoGet mid-stream ends
// the upstream call, either way.
func TestSpliceReviewCancel(t *testing.T) {
	for _, noSplice := range []bool{false, true} {
		addr, srv := startProbe(t)
		p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: addr}}, NoSplice: noSplice})
		c := dial(t, p.Addr())
		ctx, cancel := context.WithCancel(context.Background())
		s, err := c.DoGet(ctx, &flight.Ticket{Ticket: []byte("block")})
		require.NoError(t, err)
		_, err = s.Recv()
		require.NoError(t, err)
		cancel()
		select {
		case err := <-srv.ended:
			assert.ErrorIs(t, err, context.Canceled, "splice off: %v", noSplice)
		case <-time.After(15 * time.Second):
			t.Fatalf("the upstream call did not end, splice off: %v", noSplice)
		}
	}
}

// TestSpliceReviewGracefulShutdown: a stream in flight when the proxy is
// told to stop finishes with all its data, and Serve returns once it has,
// without waiting for the forced stop.
func TestSpliceReviewGracefulShutdown(t *testing.T) {
	for _, noSplice := range []bool{false, true} {
		addr, _ := startProbe(t)
		p, err := New(Config{Listen: "127.0.0.1:0", Upstreams: []Upstream{{Target: addr}}, NoSplice: noSplice,
			Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		require.NoError(t, p.Listen())
		ctx, stop := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- p.Serve(ctx) }()
		c := dial(t, p.Addr())
		s, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte("slow")})
		require.NoError(t, err)
		fd, err := s.Recv()
		require.NoError(t, err)
		assert.Equal(t, "one", string(fd.AppMetadata))
		stop()
		fd, err = s.Recv()
		require.NoError(t, err, "splice off: %v", noSplice)
		assert.Equal(t, "two", string(fd.AppMetadata))
		_, err = s.Recv()
		assert.ErrorIs(t, err, io.EOF, "splice off: %v", noSplice)
		select {
		case err := <-served:
			require.NoError(t, err)
		case <-time.After(8 * time.Second):
			t.Fatalf("Serve still waiting after the stream ended, splice off: %v", noSplice)
		}
		assert.Equal(t, boolFloat(!noSplice), testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoGet")))
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// TestSpliceReviewHTTPStatus: an HTTP/2 server in front of the upstream
// (a load balancer) that answers a bare HTTP error ending the stream gives
// the client gRPC's code for that HTTP status, spliced as through the
// message path (gRPC maps 503 to Unavailable, 403 to PermissionDenied).
func TestSpliceReviewHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		http int
		want codes.Code
	}{{http.StatusServiceUnavailable, codes.Unavailable}, {http.StatusForbidden, codes.PermissionDenied}} {
		for _, noSplice := range []bool{false, true} {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			hs := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tc.http)
			}), &http2.Server{})}
			go func() { _ = hs.Serve(ln) }()
			t.Cleanup(func() { _ = hs.Close() })
			p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "lb", Target: ln.Addr().String()}}, NoSplice: noSplice})
			c := dial(t, p.Addr())
			s, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte("x")})
			require.NoError(t, err)
			_, err = s.Recv()
			assert.Equal(t, tc.want, status.Code(err), "HTTP %d, splice off: %v: %v", tc.http, noSplice, err)
		}
	}
}

// TestSpliceReviewDeadline: a client deadline that passes mid-stream gives
// the client DeadlineExceeded and ends the upstream call, either way.
func TestSpliceReviewDeadline(t *testing.T) {
	for _, noSplice := range []bool{false, true} {
		addr, srv := startProbe(t)
		p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: addr}}, NoSplice: noSplice})
		c := dial(t, p.Addr())
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		s, err := c.DoGet(ctx, &flight.Ticket{Ticket: []byte("block")})
		require.NoError(t, err)
		_, err = s.Recv()
		require.NoError(t, err)
		_, err = s.Recv()
		assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "splice off: %v: %v", noSplice, err)
		select {
		case err := <-srv.ended:
			assert.Error(t, err, "splice off: %v", noSplice)
		case <-time.After(15 * time.Second):
			t.Fatalf("the upstream call did not end, splice off: %v", noSplice)
		}
	}
}

// TestSpliceReviewReadQuota reads about 2.3 MB under a 1 MiB/s quota
// (burst: one second's worth) through a spliced DoGet: the read cannot
// finish before the quota allows it, and every batch arrives. The data is
// written straight to the upstream, so only the read is charged.
func TestSpliceReviewReadQuota(t *testing.T) {
	const batches, rows = 8, 8 << 10 // about 290 KB a batch
	up := startUpstream(t, "", 0)
	putDataset(t, dial(t, up.addr), []string{"rq"}, batches, rows)
	p, reg := startProxy(t, Config{Upstreams: []Upstream{{Target: up.addr}}, Quotas: StaticQuotas{BytesPerSecond: 1 << 20}})
	c := dial(t, p.Addr())
	fi, err := c.GetFlightInfo(context.Background(), pathDesc("rq"))
	require.NoError(t, err)
	start := time.Now()
	seen := readAll(t, c, fi, rows)
	elapsed := time.Since(start)
	require.Len(t, seen, batches)
	for b := range batches {
		assert.Equal(t, 1, seen[b], "batch %d", b)
	}
	read := counter(t, reg, "pipemesh_flight_bytes_total", "rq", "read")
	require.Greater(t, read, float64(3<<19))
	assert.Equal(t, float64(len(fi.Endpoint)), testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoGet")), "the reads were spliced")
	minimum := time.Duration((read - (1 << 20)) / (1 << 20) * float64(time.Second))
	assert.GreaterOrEqual(t, elapsed, minimum*9/10, "%.0f bytes at 1 MiB/s after a 1 MiB burst", read)
}

// probePut writes n messages to the dataset named path and reads the
// answer: the PutResult's metadata, the header, and the call's error.
func probePut(ctx context.Context, c flight.Client, path string, n int) (string, metadata.MD, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "x-blob-bin", "\x00\xfe")
	s, err := c.DoPut(ctx)
	if err != nil {
		return "", nil, err
	}
	for i := range n {
		fd := &flight.FlightData{DataBody: make([]byte, 64<<10)}
		if i == 0 {
			fd.FlightDescriptor = pathDesc(path)
		}
		if err := s.Send(fd); err != nil {
			break // the error comes with Recv
		}
	}
	_ = s.CloseSend()
	var got string
	for {
		r, err := s.Recv()
		if err == io.EOF {
			hdr, _ := s.Header()
			return got, hdr, nil
		}
		if err != nil {
			return got, nil, err
		}
		got = string(r.AppMetadata)
	}
}

// TestSpliceReviewDoPut: a DoPut's messages, metadata and errors (refused
// at once, Trailers-Only, or after the data) come through the same
// spliced as through the message path, and an unreachable upstream gives
// Unavailable naming the route.
func TestSpliceReviewDoPut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gone := ln.Addr().String()
	require.NoError(t, ln.Close())
	want, _ := status.FromError(probeErr())
	for _, noSplice := range []bool{false, true} {
		addr, _ := startProbe(t)
		p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: addr}, {Name: "gone", Target: gone, PathPrefix: "gone"}}, NoSplice: noSplice})
		c := dial(t, p.Addr())
		ctx := context.Background()

		got, hdr, err := probePut(ctx, c, "echo", 40)
		require.NoError(t, err, "splice off: %v", noSplice)
		assert.Equal(t, "40", got, "splice off: %v", noSplice)
		assert.Equal(t, []string{"\x00\xfe"}, hdr.Get("x-blob-bin"), "splice off: %v", noSplice)

		for _, path := range []string{"reject", "reject-after"} {
			_, _, err = probePut(ctx, c, path, 40)
			st, _ := status.FromError(err)
			assert.Equal(t, want.Proto().String(), st.Proto().String(), "%s, splice off: %v", path, noSplice)
		}

		_, _, err = probePut(ctx, c, "gone", 40)
		assert.Equal(t, codes.Unavailable, status.Code(err), "splice off: %v: %v", noSplice, err)
		assert.Contains(t, err.Error(), `"gone"`, "splice off: %v", noSplice)
		_, port, _ := net.SplitHostPort(gone)
		assert.NotContains(t, err.Error(), port, "splice off: %v", noSplice)

		// The connection still serves after the refusals.
		got, _, err = probePut(ctx, c, "echo", 3)
		require.NoError(t, err, "splice off: %v", noSplice)
		assert.Equal(t, "3", got, "splice off: %v", noSplice)
		wantSpliced := 4.0
		if noSplice {
			wantSpliced = 0
		}
		assert.Equal(t, wantSpliced, testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoPut")), "splice off: %v", noSplice)
	}
}

// TestSpliceReviewDoPutCancel: a client that cancels a DoPut mid-stream
// ends the upstream call, either way.
func TestSpliceReviewDoPutCancel(t *testing.T) {
	for _, noSplice := range []bool{false, true} {
		addr, srv := startProbe(t)
		p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: addr}}, NoSplice: noSplice})
		c := dial(t, p.Addr())
		ctx, cancel := context.WithCancel(context.Background())
		s, err := c.DoPut(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Send(&flight.FlightData{FlightDescriptor: pathDesc("block")}))
		<-srv.started
		cancel()
		select {
		case err := <-srv.ended:
			assert.ErrorIs(t, err, context.Canceled, "splice off: %v", noSplice)
		case <-time.After(15 * time.Second):
			t.Fatalf("the upstream call did not end, splice off: %v", noSplice)
		}
	}
}

// TestTrailerStatusMessage decodes grpc-message as gRPC's client does:
// valid escapes decoded, a stray % kept, the rest of the message intact.
func TestTrailerStatusMessage(t *testing.T) {
	for _, tc := range []struct{ wire, want string }{
		{"plain", "plain"},
		{"100%25 done%0A", "100% done\n"},
		{"%C3%BC", "ü"},
		{"50% off, %41", "50% off, A"},
		{"ends in %4", "ends in %4"},
		{"%zz%41", "%zzA"},
		{"a+b", "a+b"},
	} {
		err := trailerStatus([]hpack.HeaderField{{Name: "grpc-status", Value: "5"}, {Name: "grpc-message", Value: tc.wire}})
		st, _ := status.FromError(err)
		assert.Equal(t, codes.NotFound, st.Code(), tc.wire)
		assert.Equal(t, tc.want, st.Message(), tc.wire)
	}
}

// TestSpliceReviewCompressedClient: a client that compresses its messages
// (gRPC gzip) writes and reads a dataset, spliced as through the message
// path: every batch arrives once and the bytes count alike.
func TestSpliceReviewCompressedClient(t *testing.T) {
	const batches, rows = 4, 4 << 10
	got := map[bool][2]float64{}
	for _, noSplice := range []bool{false, true} {
		up := startUpstream(t, "self", 0)
		p, reg := startProxy(t, Config{Upstreams: []Upstream{{Target: up.addr}}, NoSplice: noSplice})
		c, err := flight.NewClientWithMiddleware(p.Addr(), nil, nil,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.UseCompressor(gzip.Name)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		putDataset(t, c, []string{"gz"}, batches, rows)
		fi, err := c.GetFlightInfo(context.Background(), pathDesc("gz"))
		require.NoError(t, err)
		seen := readAll(t, c, fi, rows)
		require.Len(t, seen, batches, "splice off: %v", noSplice)
		for b := range batches {
			assert.Equal(t, 1, seen[b], "batch %d, splice off: %v", b, noSplice)
		}
		assert.Equal(t, boolFloat(!noSplice)*float64(len(fi.Endpoint)), testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoGet")),
			"reads splice: gRPC lets the upstream's uncompressed messages through; splice off: %v", noSplice)
		assert.Zero(t, testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoPut")), "compressed writes take the message path")
		got[noSplice] = [2]float64{
			counter(t, reg, "pipemesh_flight_bytes_total", "gz", "write"),
			counter(t, reg, "pipemesh_flight_bytes_total", "gz", "read"),
		}
	}
	assert.Equal(t, got[true], got[false], "bytes written and read, spliced and not")
}

// flakyListener fails its first Accept the way a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	failed bool
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if !l.failed {
		l.failed = true
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestServeSurvivesTemporaryAcceptError: running out of file descriptors
// for a moment (EMFILE on accept) does not stop the proxy; it serves the
// next client, as gRPC's own server would.
func TestServeSurvivesTemporaryAcceptError(t *testing.T) {
	up := startUpstream(t, "", 0)
	p, err := New(Config{Listen: "127.0.0.1:0", Upstreams: []Upstream{{Target: up.addr}},
		Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	p.ln = &flakyListener{Listener: p.ln}
	serveGRPC(t, p.Serve)
	c := dial(t, p.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.GetFlightInfo(ctx, pathDesc("none"))
	assert.Equal(t, codes.NotFound, status.Code(err), "the proxy still serves: %v", err)
}

// TestSpliceReviewEmpty: an upstream that ends a DoGet with no data and an
// OK status (Trailers-Only) gives the client an empty stream and the
// upstream's trailer, either way.
func TestSpliceReviewEmpty(t *testing.T) {
	for _, noSplice := range []bool{false, true} {
		addr, _ := startProbe(t)
		p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: addr}}, NoSplice: noSplice})
		c := dial(t, p.Addr())
		var trl metadata.MD
		s, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte("empty")}, grpc.Trailer(&trl))
		require.NoError(t, err)
		_, err = s.Recv()
		assert.ErrorIs(t, err, io.EOF, "splice off: %v", noSplice)
		assert.Equal(t, []string{"\x00\xff\x01"}, trl.Get("x-trail-bin"), "splice off: %v", noSplice)
		assert.Equal(t, boolFloat(!noSplice), testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoGet")))
	}
}
