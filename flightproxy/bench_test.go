package flightproxy

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pipemesh/pipemesh/lineage"
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
	m, err := newMetrics(prometheus.NewRegistry(), DefaultMaxLabelValues, nil)
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
	b.Run("lineage=off", func(b *testing.B) { benchDoGet(b, nil) })
	// The lineage feed into a graph, flushed every second as serve does.
	b.Run("lineage=on", func(b *testing.B) {
		g, err := lineage.Open(lineage.Config{})
		require.NoError(b, err)
		feed := NewLineageFeed(g, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go feed.Run(ctx, time.Second)
		benchDoGet(b, feed)
	})
}

func benchDoGet(b *testing.B, obs Observer) {
	up := startUpstream(b, "self", 4)
	p, _ := startProxy(b, Config{Upstreams: []Upstream{{Target: up.addr}}, Observer: obs})
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

// BenchmarkDoGetPolicy compares DoGet through a proxy without a policy and
// through one governed by a policy file (alice with a bearer token: token
// check, Decide, quota lookup per call), same upstream, same run. "small"
// is one 1,000-row batch per call, where the per-call cost shows; "large"
// is 16 MiB per call.
func BenchmarkDoGetPolicy(b *testing.B) {
	up := startUpstream(b, "self", 0)
	plain, _ := startProxy(b, Config{Upstreams: []Upstream{{Target: up.addr}}})
	pc := dial(b, plain.Addr())
	pp := startPolicyProxy(b, enforcePolicy(), Config{Upstreams: []Upstream{{Target: up.addr}}})
	alice := pp.login(b, "alice", "alice-secret")
	for name, batches := range map[string]int{"sales.small": 1, "sales.large": 4} {
		rows := 1000
		if batches > 1 {
			rows = 64 << 10
		}
		require.NoError(b, putDatasetCtx(alice, pp.client, []string{name}, batches, rows))
	}
	for _, size := range []string{"small", "large"} {
		for _, mode := range []string{"no_policy", "policy"} {
			c, ctx := pc, context.Background()
			if mode == "policy" {
				c, ctx = pp.client, alice
			}
			fi, err := c.GetFlightInfo(ctx, pathDesc("sales."+size))
			require.NoError(b, err)
			b.Run(size+"/"+mode, func(b *testing.B) {
				b.SetBytes(fi.TotalBytes)
				b.ReportAllocs()
				for b.Loop() {
					s, err := c.DoGet(ctx, fi.Endpoint[0].Ticket)
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
			})
		}
	}
}
