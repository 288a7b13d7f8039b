package flightproxy

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// BenchmarkCountFrame is the proxy's per-message work on a data stream:
// find the IPC header in a FlightData frame split like gRPC splits it, read
// it, count. It should not allocate.
func BenchmarkCountFrame(b *testing.B) {
	var msgs []*flight.FlightData
	w := flight.NewRecordWriter(collect{&msgs}, ipcWithTestSchema())
	rec := testBatch(0, 64<<10)
	require.NoError(b, w.Write(rec))
	rec.Release()
	raw, err := proto.Marshal(msgs[1])
	require.NoError(b, err)
	f := &frame{data: split(raw, 16<<10)}
	m, err := newMetrics(prometheus.NewRegistry())
	require.NoError(b, err)
	e := m.edge(&call{principal: "User:bench", job: "job", method: "DoGet"}, "bench", Read)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		e.count(f)
	}
	require.Equal(b, int64(64<<10), e.obs.Rows/int64(b.N))
}

// BenchmarkDoGetThroughProxy streams a 64 MiB dataset from the built-in
// service through the proxy, all in this process: useful for -benchmem and
// profiles, not for throughput figures (client, proxy and server share the
// CPUs; see `pipemesh bench flight`).
func BenchmarkDoGetThroughProxy(b *testing.B) {
	up := startUpstream(b, "self", 4)
	p, _ := startProxy(b, Config{Upstreams: []Upstream{{Target: up.addr}}})
	c := dial(b, p.Addr())
	const rows = 64 << 10
	require.NoError(b, putDatasetCtx(context.Background(), c, []string{"bench"}, 16, rows))
	fi, err := c.GetFlightInfo(context.Background(), pathDesc("bench"))
	require.NoError(b, err)
	b.SetBytes(fi.TotalBytes)
	b.ReportAllocs()
	for b.Loop() {
		for _, ep := range fi.Endpoint {
			s, err := c.DoGet(context.Background(), ep.Ticket)
			require.NoError(b, err)
			for {
				if _, err := s.Recv(); err != nil {
					if !errors.Is(err, io.EOF) {
						b.Fatal(err)
					}
					break
				}
			}
		}
	}
}
