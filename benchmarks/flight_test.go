package benchmarks

import (
	"bytes"
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/pipemesh/pipemesh/flightserver"
)

// alteredInfo is the built-in Flight service with its FlightInfo changed
// by alter, to show the bench notices endpoints that do not add up.
type alteredInfo struct {
	*flightserver.Server
	alter func(*flight.FlightInfo)
}

func (a alteredInfo) GetFlightInfo(ctx context.Context, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	fi, err := a.Server.GetFlightInfo(ctx, d)
	if err == nil && a.alter != nil {
		a.alter(fi)
	}
	return fi, err
}

var _ flight.FlightServer = alteredInfo{}

// startBenchFlightServer serves the built-in Flight service, chunked by cfg
// and with alter applied to its FlightInfo, on loopback until the test
// ends, and returns a client of it.
func startBenchFlightServer(t *testing.T, cfg flightserver.Config, alter func(*flight.FlightInfo)) flight.Client {
	t.Helper()
	cfg.Dir = t.TempDir()
	srv, err := flightserver.New(cfg)
	require.NoError(t, err)
	g := grpc.NewServer(srv.ServerOptions()...)
	flight.RegisterFlightServiceServer(g, alteredInfo{srv, alter})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	c, err := dialBenchFlight(ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// smallFlightData is a dataset of about 40 small batches.
func smallFlightData(t *testing.T) *flightData {
	t.Helper()
	cfg := DefaultFlightConfig()
	cfg.BatchRows, cfg.Bytes = 512, 600<<10
	d, err := newFlightData(cfg)
	require.NoError(t, err)
	require.Greater(t, d.count, 3*distinctBatches)
	return d
}

// TestFlightGetFollowsTheServicesEndpoints: however the service cuts the
// dataset into endpoints (by batch count, by bytes, uneven last chunk), a
// DoGet round reads them all, with one stream or several, and checks every
// batch against the one written at its place.
func TestFlightGetFollowsTheServicesEndpoints(t *testing.T) {
	d := smallFlightData(t)
	for _, tc := range []struct {
		name    string
		batches int64
		bytes   int64
		streams int
	}{
		{"3 batches per chunk", 3, 1 << 30, 1},
		{"3 batches per chunk, 4 streams", 3, 1 << 30, 4},
		{"chunks cut by bytes", 64, 70 << 10, 2},
		{"one chunk", 1000, 1 << 30, 2},
		{"the flight-server defaults", flightserver.DefaultBatchesPerChunk, flightserver.DefaultBytesPerChunk, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startBenchFlightServer(t, flightserver.Config{BatchesPerChunk: tc.batches, BytesPerChunk: tc.bytes}, nil)
			ctx := context.Background()
			require.NoError(t, d.put(ctx, c, "data", &phaseCounters{}))
			fi, err := c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"bench", "data"}})
			require.NoError(t, err)
			t.Logf("%d batches in %d endpoints", d.count, len(fi.Endpoint))
			ctr := &phaseCounters{}
			require.NoError(t, d.get(ctx, c, "data", tc.streams, false, ctr))
			assert.Equal(t, int64(d.count*d.rowsPerBatch), ctr.records.Load(), "every row read once")
			require.NoError(t, d.get(ctx, c, "data", tc.streams, true, &phaseCounters{}), "and checked by value")
		})
	}
}

// TestFlightGetNoticesEndpointsThatDoNotAddUp: endpoints out of order,
// missing or repeated fail the round with a message saying so.
func TestFlightGetNoticesEndpointsThatDoNotAddUp(t *testing.T) {
	d := smallFlightData(t)
	for _, tc := range []struct {
		name  string
		alter func(*flight.FlightInfo)
		want  string
	}{
		{"swapped", func(fi *flight.FlightInfo) { fi.Endpoint[0], fi.Endpoint[1] = fi.Endpoint[1], fi.Endpoint[0] },
			"endpoint 0 of"},
		{"last missing", func(fi *flight.FlightInfo) { fi.Endpoint = fi.Endpoint[:len(fi.Endpoint)-1] },
			"want the"},
		{"one twice", func(fi *flight.FlightInfo) { fi.Endpoint = slices.Insert(fi.Endpoint, 1, fi.Endpoint[0]) },
			"is not batch 3 of the dataset"},
		{"rows miscounted", func(fi *flight.FlightInfo) { fi.TotalRecords++ }, "GetFlightInfo says"},
		{"no endpoints", func(fi *flight.FlightInfo) { fi.Endpoint = nil }, "no endpoints"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startBenchFlightServer(t, flightserver.Config{BatchesPerChunk: 3, BytesPerChunk: 1 << 30}, tc.alter)
			ctx := context.Background()
			require.NoError(t, d.put(ctx, c, "data", &phaseCounters{}))
			for _, byValue := range []bool{false, true} {
				err := d.get(ctx, c, "data", 2, byValue, &phaseCounters{})
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.want)
			}
		})
	}
}

// TestFlightSummaryAndTableWithBaseline: with baseline rounds the report
// sets the forwarder's figures beside direct and proxied, and the table
// shows all three with their ratios.
func TestFlightSummaryAndTableWithBaseline(t *testing.T) {
	r := &FlightReport{Config: FlightConfig{Rounds: 2, Bytes: 1 << 30, Compression: "none", Streams: 1, Baseline: "tcp"}}
	for i := range 2 {
		r.Rounds = append(r.Rounds,
			FlightRound{Mode: Direct, Index: i, GetGBPerSec: 1.0, PutGBPerSec: 0.8, Verified: true},
			FlightRound{Mode: Baseline, Index: i, GetGBPerSec: 0.75, PutGBPerSec: 0.6, Verified: true,
				ForwarderCPUPerGB: 0.4, GetForwarderCPUPerGB: 0.38, PutForwarderCPUPerGB: 0.42},
			FlightRound{Mode: Proxied, Index: i, GetGBPerSec: 0.9, PutGBPerSec: 0.48, Verified: true,
				ProxyCPUPerGB: 0.6, GetProxyCPUPerGB: 0.5, PutProxyCPUPerGB: 0.7})
	}
	r.summarize()
	require.NotNil(t, r.Baseline)
	b := r.Baseline
	assert.InDelta(t, 0.75, b.GetGBPerSec.Median, 1e-9)
	assert.InDelta(t, 0.75, b.GetRatio, 1e-9)
	assert.InDelta(t, 0.75, b.PutRatio, 1e-9)
	assert.InDelta(t, 1.2, b.GetProxiedRatio, 1e-9)
	assert.InDelta(t, 0.8, b.PutProxiedRatio, 1e-9)
	assert.InDelta(t, 0.4, b.CPUPerGB.Median, 1e-9)
	assert.InDelta(t, 0.9, r.Get.Ratio, 1e-9, "proxied/direct is unchanged by the baseline")
	assert.InDelta(t, 0.6, r.ProxyCPUPerGB.Median, 1e-9)

	var out bytes.Buffer
	require.NoError(t, WriteFlightTable(&out, r))
	lines := strings.Split(out.String(), "\n")
	assert.Equal(t, []string{"direct", "tcp-forward", "proxied", "tcp/direct", "proxied/direct", "proxied/tcp"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{"DoGet", "GB/s", "1.00", "(±0%)", "0.750", "(±0%)", "0.900", "(±0%)", "0.750", "0.900", "1.20"}, strings.Fields(lines[1]))
	assert.Equal(t, []string{"CPU-s", "per", "GB", "0.400", "(±0%)", "0.600", "(±0%)", "1.50"}, strings.Fields(lines[3]))
	assert.Contains(t, out.String(), "pipemesh bench tcp-forward, splice(2)")

	r.Config.Baseline, r.Baseline = "", nil
	r.Rounds = slices.DeleteFunc(r.Rounds, func(rd FlightRound) bool { return rd.Mode == Baseline })
	r.summarize()
	assert.Nil(t, r.Baseline)
	out.Reset()
	require.NoError(t, WriteFlightTable(&out, r))
	assert.NotContains(t, out.String(), "tcp-forward")
	assert.Contains(t, out.String(), "proxy CPU-s per GB")
}
