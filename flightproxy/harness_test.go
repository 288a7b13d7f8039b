package flightproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pipemesh/pipemesh/flightserver"
)

// upstream is a built-in Flight dataset server running for a test.
type upstream struct {
	addr string
	dir  string
}

// startUpstream runs flightserver on a loopback port. location "self"
// advertises its own address in endpoints; "" advertises none.
func startUpstream(t testing.TB, location string, batchesPerChunk int64) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := &upstream{addr: ln.Addr().String(), dir: t.TempDir()}
	if location == "self" {
		location = "grpc://" + u.addr
	}
	srv, err := flightserver.New(flightserver.Config{Dir: u.dir, Location: location, BatchesPerChunk: batchesPerChunk})
	require.NoError(t, err)
	serveGRPC(t, func(ctx context.Context) error { return srv.Serve(ctx, ln) })
	return u
}

// serveGRPC runs serve until the test ends.
func serveGRPC(t testing.TB, serve func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	})
}

// startProxy runs a proxy in front of the upstreams and returns it with
// the registry holding its metrics.
func startProxy(t testing.TB, cfg Config) (*Proxy, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Listen = "127.0.0.1:0"
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	serveGRPC(t, p.Serve)
	return p, reg
}

// dial returns an arrow-go Flight client for addr with limits for big batches.
func dial(t testing.TB, addr string) flight.Client {
	t.Helper()
	c, err := flight.NewClientWithMiddleware(addr, nil, nil,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testSchema has the column types the issue names.
var testSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "price", Type: arrow.PrimitiveTypes.Float64},
	{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
}, nil)

// testBatch is batch number b of a dataset: rows [b*n, b*n+n), every value
// derived from the row number so any reader can check it.
func testBatch(b, n int) arrow.RecordBatch {
	bld := array.NewRecordBuilder(memory.DefaultAllocator, testSchema)
	defer bld.Release()
	ids := bld.Field(0).(*array.Int64Builder)
	prices := bld.Field(1).(*array.Float64Builder)
	names := bld.Field(2).(*array.StringBuilder)
	ats := bld.Field(3).(*array.TimestampBuilder)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	for i := b * n; i < b*n+n; i++ {
		ids.Append(int64(i))
		prices.Append(float64(i) * 0.25)
		if i%17 == 0 {
			names.AppendNull()
		} else {
			names.Append(fmt.Sprintf("row-%d", i))
		}
		ats.Append(arrow.Timestamp(base + int64(i)*1000))
	}
	return bld.NewRecordBatch()
}

// putDataset writes batches of testBatch through client under path.
func putDataset(t *testing.T, c flight.Client, path []string, batches, rowsPerBatch int, opts ...ipc.Option) {
	t.Helper()
	require.NoError(t, putDatasetCtx(context.Background(), c, path, batches, rowsPerBatch, opts...))
}

// putDatasetCtx is putDataset with a context (credentials) and an error.
func putDatasetCtx(ctx context.Context, c flight.Client, path []string, batches, rowsPerBatch int, opts ...ipc.Option) error {
	stream, err := c.DoPut(ctx)
	if err != nil {
		return err
	}
	w := flight.NewRecordWriter(stream, append([]ipc.Option{ipc.WithSchema(testSchema)}, opts...)...)
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: path})
	for b := range batches {
		rec := testBatch(b, rowsPerBatch)
		err := w.Write(rec)
		rec.Release()
		if err != nil {
			break // the status comes from Recv
		}
	}
	_ = w.Close()
	_ = stream.CloseSend()
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// readEndpoint reads one endpoint's stream and checks that each batch
// equals the one testBatch makes for its position, returning the batch
// numbers seen.
func readEndpoint(ctx context.Context, c flight.Client, ep *flight.FlightEndpoint, rowsPerBatch int) ([]int, error) {
	stream, err := c.DoGet(ctx, ep.Ticket)
	if err != nil {
		return nil, err
	}
	r, err := flight.NewRecordReader(stream)
	if err != nil {
		return nil, err
	}
	defer r.Release()
	var seen []int
	for r.Next() {
		got := r.RecordBatch()
		if got.NumRows() != int64(rowsPerBatch) {
			return nil, fmt.Errorf("batch of %d rows, want %d", got.NumRows(), rowsPerBatch)
		}
		b := int(got.Column(0).(*array.Int64).Value(0)) / rowsPerBatch
		want := testBatch(b, rowsPerBatch)
		eq := array.RecordEqual(want, got)
		want.Release()
		if !eq {
			return nil, fmt.Errorf("batch %d differs from what was written", b)
		}
		seen = append(seen, b)
	}
	return seen, r.Err()
}

// readAll reads every endpoint of fi in parallel and returns how many times
// each batch number arrived.
func readAll(t *testing.T, c flight.Client, fi *flight.FlightInfo, rowsPerBatch int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	errs := make([]error, len(fi.Endpoint))
	for i, ep := range fi.Endpoint {
		wg.Go(func() {
			seen, err := readEndpoint(context.Background(), c, ep, rowsPerBatch)
			errs[i] = err
			mu.Lock()
			defer mu.Unlock()
			for _, b := range seen {
				counts[b]++
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "endpoint %d", i)
	}
	return counts
}
