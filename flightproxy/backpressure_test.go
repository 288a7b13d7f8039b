package flightproxy

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
)

// floodServer's DoGet sends 1 MiB messages until its client stops it,
// counting what gRPC accepted from it.
type floodServer struct {
	flight.BaseFlightServer
	sent atomic.Int64
}

func (s *floodServer) DoGet(_ *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	msg := &flight.FlightData{AppMetadata: make([]byte, 1<<20)}
	for range 1024 { // 1 GiB if nothing held it back
		if err := stream.Send(msg); err != nil {
			return err
		}
		s.sent.Add(1)
	}
	return nil
}

// TestBackpressure checks a client that stops reading stops the upstream:
// the proxy holds one message per stream and gRPC flow control does the
// rest, so what the upstream manages to send stays within the HTTP/2
// windows on the way, far below the 1 GiB it would send unchecked.
func TestBackpressure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	fs := &floodServer{}
	g := grpc.NewServer(grpc.MaxSendMsgSize(4 << 20))
	flight.RegisterFlightServiceServer(g, fs)
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: ln.Addr().String()}}})
	c := dial(t, p.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.DoGet(ctx, &flight.Ticket{Ticket: []byte("x")})
	require.NoError(t, err)
	_, err = s.Recv() // the stream is up; now stop reading
	require.NoError(t, err)

	// Wait until the upstream is stuck: no progress for half a second.
	last, still := int64(-1), 0
	for deadline := time.Now().Add(20 * time.Second); still < 5 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		if n := fs.sent.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	require.Equal(t, 5, still, "the upstream never stalled: nothing holds it back")
	// Windows on the way: client 4 MiB-ish (BDP-grown up to 16 MiB),
	// proxy in and out DefaultStreamWindow each, plus a message or two.
	assert.Less(t, fs.sent.Load(), int64(48), "MiB the upstream got out while the client read nothing")
}
