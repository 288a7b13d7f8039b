package flightproxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestStreamCap lets a principal hold one data stream: the second is
// refused with ResourceExhausted until the first ends.
func TestStreamCap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer(grpc.MaxSendMsgSize(4 << 20))
	flight.RegisterFlightServiceServer(g, &floodServer{})
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: ln.Addr().String()}}, Quotas: StaticQuotas{MaxStreams: 1}})
	c := dial(t, p.Addr())

	ctx1, cancel1 := context.WithCancel(context.Background())
	s1, err := c.DoGet(ctx1, &flight.Ticket{Ticket: []byte("x")})
	require.NoError(t, err)
	_, err = s1.Recv()
	require.NoError(t, err, "the first stream is open")

	s2, err := c.DoGet(context.Background(), &flight.Ticket{Ticket: []byte("x")})
	require.NoError(t, err)
	_, err = s2.Recv()
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Contains(t, err.Error(), "User:ANONYMOUS has 1 Flight data streams open")

	cancel1()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := c.DoGet(ctx, &flight.Ticket{Ticket: []byte("x")})
		if err != nil {
			return false
		}
		_, err = s.Recv()
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "a stream is admitted once the first has ended")
}

// TestByteRateQuota writes 3 MiB under a 1 MiB/s quota (burst: one
// second's worth). The write cannot finish before the quota allows it;
// every batch still arrives.
func TestByteRateQuota(t *testing.T) {
	up := startUpstream(t, "self", 0)
	p, reg := startProxy(t, Config{Upstreams: []Upstream{{Target: up.addr}}, Quotas: StaticQuotas{BytesPerSecond: 1 << 20}})
	c := dial(t, p.Addr())
	const batches, rows = 12, 8 << 10 // about 256 KiB a batch
	start := time.Now()
	putDataset(t, c, []string{"q"}, batches, rows)
	elapsed := time.Since(start)
	written := counter(t, reg, "pipemesh_flight_bytes_total", "q", "write")
	require.Greater(t, written, float64(2<<20))
	minimum := time.Duration((written - (1 << 20)) / (1 << 20) * float64(time.Second))
	assert.GreaterOrEqual(t, elapsed, minimum*9/10, "%.0f bytes at 1 MiB/s after a 1 MiB burst", written)
	fi, err := c.GetFlightInfo(context.Background(), pathDesc("q"))
	require.NoError(t, err)
	assert.Equal(t, int64(batches*rows), fi.TotalRecords)
}
