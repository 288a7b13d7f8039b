package flightproxy

import (
	"context"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dataRows is the size of the round-trip datasets: the 1M rows,
// but 128Ki under -race or -short, where 1M takes minutes on 2 cores.
func dataRows() int {
	if raceEnabled || testing.Short() {
		return 128 << 10
	}
	return 1 << 20
}

// TestDoPutDoGetRoundTrip writes a dataset through the proxy with the
// arrow-go Flight client, reads it back through the proxy over all its
// endpoints in parallel, and checks every batch arrived once, value for
// value, for each IPC body compression.
func TestDoPutDoGetRoundTrip(t *testing.T) {
	const rowsPerBatch = 32 << 10
	batches := dataRows() / rowsPerBatch
	up := startUpstream(t, "self", 4)
	p, reg := startProxy(t, Config{Upstreams: []Upstream{{Name: "store", Target: "grpc://" + up.addr}}})
	c := dial(t, p.Addr())
	for _, tc := range []struct {
		name string
		opts []ipc.Option
	}{
		{"uncompressed", nil},
		{"lz4", []ipc.Option{ipc.WithLZ4()}},
		{"zstd", []ipc.Option{ipc.WithZstd()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := []string{"trips", tc.name}
			putDataset(t, c, path, batches, rowsPerBatch, tc.opts...)

			fi, err := c.GetFlightInfo(context.Background(), &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: path})
			require.NoError(t, err)
			assert.Equal(t, int64(batches*rowsPerBatch), fi.TotalRecords)
			require.Len(t, fi.Endpoint, (batches+3)/4, "one endpoint per chunk of 4 batches")
			assertNoUpstreamLocation(t, fi, p, up.addr)

			counts := readAll(t, c, fi, rowsPerBatch)
			require.Len(t, counts, batches)
			for b := range batches {
				assert.Equal(t, 1, counts[b], "batch %d", b)
			}
			name := strings.Join(path, "/")
			assert.Equal(t, float64(batches*rowsPerBatch), counter(t, reg, "pipemesh_flight_rows_total", name, "write"))
			assert.Equal(t, float64(batches*rowsPerBatch), counter(t, reg, "pipemesh_flight_rows_total", name, "read"))
			assert.Equal(t, float64(batches), counter(t, reg, "pipemesh_flight_batches_total", name, "read"))
			assert.Positive(t, counter(t, reg, "pipemesh_flight_bytes_total", name, "read"))
		})
	}
}

// assertNoUpstreamLocation checks every endpoint leads back to the proxy.
func assertNoUpstreamLocation(t *testing.T, fi *flight.FlightInfo, p *Proxy, upstreamAddrs ...string) {
	t.Helper()
	for i, ep := range fi.Endpoint {
		for _, loc := range ep.Location {
			assert.Contains(t, []string{p.Location(), reuseConnection}, loc.Uri, "endpoint %d", i)
			for _, a := range upstreamAddrs {
				assert.NotContains(t, loc.Uri, a, "endpoint %d leaks upstream %s", i, a)
			}
		}
		for _, a := range upstreamAddrs {
			assert.NotContains(t, string(ep.Ticket.GetTicket()), a, "ticket of endpoint %d names upstream %s", i, a)
		}
	}
}

// counter reads one pipemesh_flight_* counter for the anonymous principal.
func counter(t *testing.T, reg *prometheus.Registry, name, dataset, direction string) float64 {
	t.Helper()
	return counterFor(t, reg, name, Anonymous, dataset, direction)
}

// counterFor reads one pipemesh_flight_* counter.
func counterFor(t *testing.T, reg *prometheus.Registry, name, principal, dataset, direction string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	want := map[string]string{"principal": principal, "dataset": dataset, "direction": direction}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if labelsMatch(m, want) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.Label {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}
