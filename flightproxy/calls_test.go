package flightproxy

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/pipemesh/pipemesh/flightserver"
)

func pathDesc(p ...string) *flight.FlightDescriptor {
	return &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: p}
}

// TestRoutingByPathPrefix routes datasets under "sales" to one upstream and
// the rest to the default, and checks DoPut, GetFlightInfo, DoGet and
// ListFlights each reach the right one.
func TestRoutingByPathPrefix(t *testing.T) {
	def := startUpstream(t, "self", 2)
	sales := startUpstream(t, "self", 2)
	p, _ := startProxy(t, Config{Upstreams: []Upstream{
		{Name: "default", Target: def.addr},
		{Name: "sales", Target: "grpc+tcp://" + sales.addr, PathPrefix: "/sales/"},
	}})
	c := dial(t, p.Addr())
	const rows = 1000
	putDataset(t, c, []string{"sales", "q1"}, 5, rows)
	putDataset(t, c, []string{"salesforce"}, 3, rows)
	putDataset(t, c, []string{"web"}, 1, rows)

	assert.DirExists(t, filepath.Join(sales.dir, "sales%2Fq1"))
	assert.NoDirExists(t, filepath.Join(def.dir, "sales%2Fq1"))
	assert.DirExists(t, filepath.Join(def.dir, "salesforce"), "a prefix matches whole path elements only")
	assert.DirExists(t, filepath.Join(def.dir, "web"))

	for path, batches := range map[string]int{"sales/q1": 5, "salesforce": 3} {
		fi, err := c.GetFlightInfo(context.Background(), pathDesc(splitPath(path)...))
		require.NoError(t, err)
		assertNoUpstreamLocation(t, fi, p, def.addr, sales.addr)
		assert.Len(t, readAll(t, c, fi, rows), batches, path)
	}

	ls, err := c.ListFlights(context.Background(), &flight.Criteria{})
	require.NoError(t, err)
	var names []string
	for {
		fi, err := ls.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		assertNoUpstreamLocation(t, fi, p, def.addr, sales.addr)
		names = append(names, joinPath(fi.FlightDescriptor.Path))
	}
	assert.ElementsMatch(t, []string{"sales/q1", "salesforce", "web"}, names)
}

func splitPath(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '/' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func joinPath(p []string) string {
	s := ""
	for i, e := range p {
		if i > 0 {
			s += "/"
		}
		s += e
	}
	return s
}

// TestDoExchangeEcho sends record batches through DoExchange to the
// built-in server, which echoes them, and checks they come back intact.
func TestDoExchangeEcho(t *testing.T) {
	up := startUpstream(t, "", 0)
	p, reg := startProxy(t, Config{Upstreams: []Upstream{{Target: up.addr}}})
	c := dial(t, p.Addr())
	stream, err := c.DoExchange(context.Background())
	require.NoError(t, err)
	const batches, rows = 8, 5000
	sent := make(chan error, 1)
	go func() {
		w := flight.NewRecordWriter(stream, ipc.WithSchema(testSchema), ipc.WithLZ4())
		w.SetFlightDescriptor(pathDesc("echo"))
		for b := range batches {
			rec := testBatch(b, rows)
			if err := w.Write(rec); err != nil {
				sent <- err
				return
			}
			rec.Release()
		}
		_ = w.Close()
		sent <- stream.CloseSend()
	}()
	r, err := flight.NewRecordReader(stream)
	require.NoError(t, err)
	defer r.Release()
	n := 0
	for r.Next() {
		want := testBatch(n, rows)
		assert.True(t, array.RecordEqual(want, r.RecordBatch()), "batch %d", n)
		want.Release()
		n++
	}
	require.NoError(t, r.Err())
	require.NoError(t, <-sent)
	assert.Equal(t, batches, n)
	assert.Equal(t, float64(batches*rows), counter(t, reg, "pipemesh_flight_rows_total", "echo", "write"))
	assert.Equal(t, float64(batches*rows), counter(t, reg, "pipemesh_flight_rows_total", "echo", "read"))
}

// TestOtherCalls covers the calls the data tests do not: GetSchema,
// PollFlightInfo, ListActions, DoAction and Handshake, passed through.
func TestOtherCalls(t *testing.T) {
	up := startUpstream(t, "self", 0)
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: up.addr}}})
	c := dial(t, p.Addr())
	ctx := context.Background()
	putDataset(t, c, []string{"d"}, 2, 100)

	sr, err := c.GetSchema(ctx, pathDesc("d"))
	require.NoError(t, err)
	schema, err := flight.DeserializeSchema(sr.Schema, nil)
	require.NoError(t, err)
	assert.True(t, schema.Equal(testSchema))

	pi, err := c.PollFlightInfo(ctx, pathDesc("d"))
	require.NoError(t, err)
	require.NotNil(t, pi.Info)
	assertNoUpstreamLocation(t, pi.Info, p, up.addr)
	assert.Len(t, readAll(t, c, pi.Info, 100), 2)

	_, err = c.GetFlightInfo(ctx, pathDesc("missing"))
	assert.Equal(t, codes.NotFound, status.Code(err))

	la, err := c.ListActions(ctx, &flight.Empty{})
	require.NoError(t, err)
	at, err := la.Recv()
	require.NoError(t, err)
	assert.Equal(t, flightserver.ActionDelete, at.Type)

	hs, err := c.Handshake(ctx)
	require.NoError(t, err)
	require.NoError(t, hs.Send(&flight.HandshakeRequest{Payload: []byte("hello")}))
	resp, err := hs.Recv()
	require.NoError(t, err)
	assert.Equal(t, "hello", string(resp.Payload))
	require.NoError(t, hs.CloseSend())

	da, err := c.DoAction(ctx, &flight.Action{Type: flightserver.ActionDelete, Body: []byte("d")})
	require.NoError(t, err)
	res, err := da.Recv()
	require.NoError(t, err)
	assert.Equal(t, "d", string(res.Body))
	_, err = c.GetFlightInfo(ctx, pathDesc("d"))
	assert.Equal(t, codes.NotFound, status.Code(err))
}

// TestBadInput sends messages that are not FlightData and forged tickets:
// each gets InvalidArgument and the proxy keeps serving.
func TestBadInput(t *testing.T) {
	up := startUpstream(t, "self", 0)
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: up.addr}}})
	conn, err := grpc.NewClient(p.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec{})))
	require.NoError(t, err)
	defer conn.Close()
	for _, garbage := range [][]byte{{0xff, 0xff}, {0x0a, 0x80}, {0x0a, 0x05, 1}} {
		cs, err := conn.NewStream(context.Background(), bidiDesc, "/"+flightService+"/DoPut")
		require.NoError(t, err)
		require.NoError(t, cs.SendMsg(&frame{data: mem.BufferSlice{mem.SliceBuffer(garbage)}}))
		require.NoError(t, cs.CloseSend())
		err = cs.RecvMsg(&frame{})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%x: %v", garbage, err)
	}

	c := dial(t, p.Addr())
	putDataset(t, c, []string{"ok"}, 1, 10)
	fi, err := c.GetFlightInfo(context.Background(), pathDesc("ok"))
	require.NoError(t, err)
	forged := append([]byte(nil), fi.Endpoint[0].Ticket.Ticket...)
	forged[len(forged)-1] ^= 1
	s, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: forged})
	require.NoError(t, err)
	_, err = s.Recv()
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Len(t, readAll(t, c, fi, 10), 1, "the proxy still serves")
}
