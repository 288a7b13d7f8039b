package flightproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// tapConn keeps every byte a client reads from the proxy.
type tapConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// TestNoUpstreamAddressOnTheWire runs every kind of call through the
// proxy and searches all bytes the client received for the upstream's
// address: FlightInfo, ListFlights, PollFlightInfo, tickets, errors.
func TestNoUpstreamAddressOnTheWire(t *testing.T) {
	up := startUpstream(t, "self", 2)
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "store", Target: "grpc://" + up.addr}}})
	var mu sync.Mutex
	var got bytes.Buffer
	c, err := flight.NewClientWithMiddleware(p.Addr(), nil, nil,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return tapConn{Conn: conn, mu: &mu, buf: &got}, nil
		}))
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()

	putDataset(t, c, []string{"leak", "check"}, 6, 100)
	fi, err := c.GetFlightInfo(ctx, pathDesc("leak", "check"))
	require.NoError(t, err)
	readAll(t, c, fi, 100)
	_, err = c.PollFlightInfo(ctx, pathDesc("leak", "check"))
	require.NoError(t, err)
	_, err = c.GetSchema(ctx, pathDesc("leak", "check"))
	require.NoError(t, err)
	ls, err := c.ListFlights(ctx, &flight.Criteria{})
	require.NoError(t, err)
	for err == nil {
		_, err = ls.Recv()
	}
	require.ErrorIs(t, err, io.EOF)
	_, err = c.GetFlightInfo(ctx, pathDesc("missing"))
	require.Equal(t, codes.NotFound, status.Code(err))

	mu.Lock()
	defer mu.Unlock()
	_, port, _ := net.SplitHostPort(up.addr)
	require.Greater(t, got.Len(), 10000, "the tap saw the traffic")
	assert.False(t, bytes.Contains(got.Bytes(), []byte(up.addr)), "the upstream's address reached the client")
	assert.False(t, bytes.Contains(got.Bytes(), []byte(":"+port)), "the upstream's port reached the client")
}

// proxyGoroutines counts goroutines running the proxy's call code.
func proxyGoroutines() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	count := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "flightproxy.(*call)") || strings.Contains(g, "flightproxy.(*Proxy).dataStream") {
			count++
		}
	}
	return count
}

// TestCancelledStreamsEndCleanly cancels a DoPut and a DoGet mid-stream:
// the cut DoPut must not be stored upstream as a whole dataset, and no
// proxy goroutine is left behind.
func TestCancelledStreamsEndCleanly(t *testing.T) {
	up := startUpstream(t, "self", 0)
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: up.addr}}})
	c := dial(t, p.Addr())
	putDataset(t, c, []string{"big"}, 40, 10000)

	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.DoPut(ctx)
	require.NoError(t, err)
	all := encodeBatches(t, 5, 1000)
	all[0].FlightDescriptor = pathDesc("cut")
	for _, m := range all[:3] {
		require.NoError(t, s.Send(m))
	}
	cancel()

	ctx2, cancel2 := context.WithCancel(context.Background())
	g, err := c.DoGet(ctx2, firstTicket(t, c, "big"))
	require.NoError(t, err)
	_, err = g.Recv()
	require.NoError(t, err)
	cancel2()

	require.Eventually(t, func() bool { return proxyGoroutines() == 0 }, 10*time.Second, 20*time.Millisecond,
		"proxy call goroutines left: %d", proxyGoroutines())
	_, err = c.GetFlightInfo(context.Background(), pathDesc("cut"))
	assert.Equal(t, codes.NotFound, status.Code(err), "a cancelled DoPut is not stored")
}

func firstTicket(t *testing.T, c flight.Client, name string) *flight.Ticket {
	fi, err := c.GetFlightInfo(context.Background(), pathDesc(name))
	require.NoError(t, err)
	return fi.Endpoint[0].Ticket
}

// encodeBatches returns the FlightData messages of a testBatch stream.
func encodeBatches(t *testing.T, batches, rows int) []*flight.FlightData {
	var msgs []*flight.FlightData
	w := flight.NewRecordWriter(collect{&msgs}, ipcWithTestSchema())
	for b := range batches {
		rec := testBatch(b, rows)
		require.NoError(t, w.Write(rec))
		rec.Release()
	}
	require.NoError(t, w.Close())
	return msgs
}
