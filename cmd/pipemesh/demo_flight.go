package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/pipemesh/pipemesh/flightproxy"
	"github.com/pipemesh/pipemesh/flightserver"
)

// Names of the demo's Flight datasets and jobs, as lineage and metrics show them.
const (
	demoTrips      = "trips"
	demoReport     = "reports/fares_by_region"
	demoIngestJob  = "trips-ingest"
	demoReportJob  = "fare-report"
	demoTripRows   = 200_000
	demoTripsBatch = 10_000
)

var demoRegions = []string{"north", "south", "east", "west", "center"}

var tripsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "trip_id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "region", Type: arrow.BinaryTypes.String},
	{Name: "fare", Type: arrow.PrimitiveTypes.Float64},
	{Name: "pickup_at", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
}, nil)

var reportSchema = arrow.NewSchema([]arrow.Field{
	{Name: "region", Type: arrow.BinaryTypes.String},
	{Name: "trips", Type: arrow.PrimitiveTypes.Int64},
	{Name: "fare_total", Type: arrow.PrimitiveTypes.Float64},
}, nil)

// dialFlight connects an arrow-go Flight client with limits for big batches.
func dialFlight(addr string) (flight.Client, error) {
	return flight.NewClientWithMiddleware(addr, nil, nil,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
}

// asJob names the calling job to the proxy, for lineage.
func asJob(ctx context.Context, job string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-pipemesh-job", job)
}

// putTrips writes the demo's trips dataset: fare = trip_id % 50 + 2.5.
func putTrips(ctx context.Context, c flight.Client) error {
	s, err := c.DoPut(asJob(ctx, demoIngestJob))
	if err != nil {
		return err
	}
	w := flight.NewRecordWriter(s, ipc.WithSchema(tripsSchema), ipc.WithLZ4())
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{demoTrips}})
	b := array.NewRecordBuilder(memory.DefaultAllocator, tripsSchema)
	defer b.Release()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for id := int64(0); id < demoTripRows; id++ {
		b.Field(0).(*array.Int64Builder).Append(id)
		b.Field(1).(*array.StringBuilder).Append(demoRegions[id%int64(len(demoRegions))])
		b.Field(2).(*array.Float64Builder).Append(float64(id%50) + 2.5)
		b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(start + id*1000))
		if (id+1)%demoTripsBatch == 0 {
			rec := b.NewRecordBatch()
			err := w.Write(rec)
			rec.Release()
			if err != nil {
				break // the status comes from Recv
			}
		}
	}
	_ = w.Close()
	return closePut(s)
}

func closePut(s flight.FlightService_DoPutClient) error {
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// reportResult is what one run of the fare-report job did.
type reportResult struct {
	endpoints int
	rows      int64
	totals    map[string]float64
	counts    map[string]int64
}

// runFareReport is a Spark-style job: GetFlightInfo, DoGet every endpoint in
// parallel (one "partition" each), aggregate fares by region, write the
// result back with DoPut.
func runFareReport(ctx context.Context, c flight.Client) (*reportResult, error) {
	ctx = asJob(ctx, demoReportJob)
	fi, err := c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{demoTrips}})
	if err != nil {
		return nil, fmt.Errorf("GetFlightInfo %s: %w", demoTrips, err)
	}
	res := &reportResult{endpoints: len(fi.Endpoint), totals: map[string]float64{}, counts: map[string]int64{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(fi.Endpoint))
	for i, ep := range fi.Endpoint {
		wg.Go(func() {
			totals, counts, rows, err := readPartition(ctx, c, ep)
			errs[i] = err
			mu.Lock()
			defer mu.Unlock()
			res.rows += rows
			for r, v := range totals {
				res.totals[r] += v
				res.counts[r] += counts[r]
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return res, writeReport(ctx, c, res)
}

func readPartition(ctx context.Context, c flight.Client, ep *flight.FlightEndpoint) (map[string]float64, map[string]int64, int64, error) {
	s, err := c.DoGet(ctx, ep.Ticket)
	if err != nil {
		return nil, nil, 0, err
	}
	r, err := flight.NewRecordReader(s)
	if err != nil {
		return nil, nil, 0, err
	}
	defer r.Release()
	totals, counts := map[string]float64{}, map[string]int64{}
	var rows int64
	for r.Next() {
		rec := r.RecordBatch()
		regions := rec.Column(1).(*array.String)
		fares := rec.Column(2).(*array.Float64)
		for i := range int(rec.NumRows()) {
			totals[regions.Value(i)] += fares.Value(i)
			counts[regions.Value(i)]++
		}
		rows += rec.NumRows()
	}
	return totals, counts, rows, r.Err()
}

func writeReport(ctx context.Context, c flight.Client, res *reportResult) error {
	s, err := c.DoPut(ctx)
	if err != nil {
		return err
	}
	w := flight.NewRecordWriter(s, ipc.WithSchema(reportSchema))
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"reports", "fares_by_region"}})
	b := array.NewRecordBuilder(memory.DefaultAllocator, reportSchema)
	defer b.Release()
	regions := make([]string, 0, len(res.totals))
	for r := range res.totals {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, r := range regions {
		b.Field(0).(*array.StringBuilder).Append(r)
		b.Field(1).(*array.Int64Builder).Append(res.counts[r])
		b.Field(2).(*array.Float64Builder).Append(res.totals[r])
	}
	rec := b.NewRecordBatch()
	err = w.Write(rec)
	rec.Release()
	_ = w.Close()
	if cerr := closePut(s); cerr != nil || err != nil {
		return errors.Join(err, cerr)
	}
	return nil
}

// expectedFareTotal is the sum of all fares putTrips writes, to check the job.
func expectedFareTotal() float64 {
	var sum float64
	for id := int64(0); id < demoTripRows; id++ {
		sum += float64(id%50) + 2.5
	}
	return sum
}

func (r *reportResult) total() float64 {
	var s float64
	for _, v := range r.totals {
		s += v
	}
	return s
}

// demoFlight is the demo's Flight side: the built-in dataset service, the
// Flight proxy in front of it (started by serve), and the jobs.
type demoFlight struct {
	upstream string // the dataset service's address
	proxy    chan *flightproxy.Proxy
	log      *slog.Logger

	mu      sync.Mutex
	runs    int
	last    *reportResult
	failure error
}

// startDemoFlight runs the dataset service in dir (a temporary one when
// empty) and configures s to run the Flight proxy on listen in front of it.
func startDemoFlight(ctx context.Context, listen, dir string, s *settings, log *slog.Logger) (*demoFlight, func(), error) {
	cleanup := func() {}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "pipemesh-demo-flight-")
		if err != nil {
			return nil, nil, err
		}
		dir, cleanup = tmp, func() { os.RemoveAll(tmp) }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	addr := ln.Addr().String()
	// Small chunks so the demo's dataset has several endpoints to fan out over.
	srv, err := flightserver.New(flightserver.Config{Dir: dir, Location: "grpc://" + addr, BatchesPerChunk: 5, Logger: log})
	if err != nil {
		ln.Close()
		cleanup()
		return nil, nil, err
	}
	srvCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(srvCtx, ln) }()
	d := &demoFlight{upstream: addr, proxy: make(chan *flightproxy.Proxy, 1), log: log}
	s.flight = &flightproxy.Config{Listen: listen, Upstreams: []flightproxy.Upstream{{Name: "datasets", Target: "grpc://" + addr}}}
	s.onFlight = func(p *flightproxy.Proxy) { d.proxy <- p }
	return d, func() { stop(); <-done; cleanup() }, nil
}

// run writes the trips dataset through the proxy, then runs the fare
// report every interval until ctx ends.
func (d *demoFlight) run(ctx context.Context, proxyAddr string, every time.Duration) {
	c, err := dialFlight(proxyAddr)
	if err != nil {
		d.fail(err)
		return
	}
	defer c.Close()
	if err := putTrips(ctx, c); err != nil {
		if ctx.Err() != nil {
			return // stopped while writing: not a failure
		}
		d.fail(fmt.Errorf("flight demo: writing %s: %w", demoTrips, err))
		return
	}
	want := expectedFareTotal()
	for {
		res, err := runFareReport(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if err == nil && (res.rows != demoTripRows || res.total() != want) {
			err = fmt.Errorf("flight demo: the report read %d rows, fares %.1f; want %d rows, %.1f", res.rows, res.total(), demoTripRows, want)
		}
		if err != nil {
			d.fail(err)
			return
		}
		d.mu.Lock()
		d.runs++
		d.last = res
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func (d *demoFlight) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failure == nil {
		d.failure = err
		d.log.Error("flight demo job failed", "err", err)
	}
}

func (d *demoFlight) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failure
}

func (d *demoFlight) status() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		return time.Now().Format(time.TimeOnly) + "  flight: writing the trips dataset..."
	}
	return fmt.Sprintf("%s  flight: job %q ran %d times; last read %d rows of %q over %d endpoints in parallel, wrote %d regions to %q",
		time.Now().Format(time.TimeOnly), demoReportJob, d.runs, d.last.rows, demoTrips, d.last.endpoints, len(d.last.totals), demoReport)
}
