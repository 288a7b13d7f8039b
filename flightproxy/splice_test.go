package flightproxy

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSpliceAndMessagePathAgree moves one dataset both ways, spliced and
// through gRPC's message path: the data reads back the same, the spliced
// calls are counted as spliced, and both paths count the same bytes,
// batches and rows.
func TestSpliceAndMessagePathAgree(t *testing.T) {
	const batches, rows = 12, 8 << 10
	type counts struct{ bytes, batches, rows [2]float64 }
	got := map[bool]counts{}
	for _, noSplice := range []bool{false, true} {
		up := startUpstream(t, "self", 4)
		p, reg := startProxy(t, Config{Upstreams: []Upstream{{Target: "grpc://" + up.addr}}, NoSplice: noSplice})
		c := dial(t, p.Addr())
		putDataset(t, c, []string{"agree"}, batches, rows)
		fi, err := c.GetFlightInfo(context.Background(), pathDesc("agree"))
		require.NoError(t, err)
		seen := readAll(t, c, fi, rows)
		require.Len(t, seen, batches)
		for b := range batches {
			assert.Equal(t, 1, seen[b], "batch %d, splice off: %v", b, noSplice)
		}

		wantGet, wantPut := float64(len(fi.Endpoint)), 1.0
		if noSplice {
			wantGet, wantPut = 0, 0
		}
		assert.Equal(t, wantGet, testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoGet")), "splice off: %v", noSplice)
		assert.Equal(t, wantPut, testutil.ToFloat64(p.metrics.spliced.WithLabelValues("DoPut")), "splice off: %v", noSplice)

		var cs counts
		for i, dir := range []string{"write", "read"} {
			cs.bytes[i] = counter(t, reg, "pipemesh_flight_bytes_total", "agree", dir)
			cs.batches[i] = counter(t, reg, "pipemesh_flight_batches_total", "agree", dir)
			cs.rows[i] = counter(t, reg, "pipemesh_flight_rows_total", "agree", dir)
		}
		assert.Equal(t, [2]float64{batches * rows, batches * rows}, cs.rows)
		assert.Equal(t, [2]float64{batches, batches}, cs.batches)
		got[noSplice] = cs
	}
	assert.Equal(t, got[true], got[false], "the spliced and the message path count alike")
}

// TestSplicedStreamsReadOutOfOrder opens a DoGet for every endpoint on one
// connection, then reads them last to first: a stream the client does not
// read yet must not hold up the others (each spliced stream has its own
// upstream connection, and waits only for its own client window).
func TestSplicedStreamsReadOutOfOrder(t *testing.T) {
	const rows = 64 << 10 // 2.3 MB batches: more than a window per endpoint
	up := startUpstream(t, "self", 2)
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Target: "grpc://" + up.addr}}})
	c := dial(t, p.Addr())
	putDataset(t, c, []string{"order"}, 8, rows)
	fi, err := c.GetFlightInfo(context.Background(), pathDesc("order"))
	require.NoError(t, err)
	require.Len(t, fi.Endpoint, 4)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	streams := make([]flight.FlightService_DoGetClient, len(fi.Endpoint))
	for i, ep := range fi.Endpoint {
		streams[i], err = c.DoGet(ctx, ep.Ticket)
		require.NoError(t, err)
	}
	for i := len(streams) - 1; i >= 0; i-- {
		r, err := flight.NewRecordReader(streams[i])
		require.NoError(t, err, "endpoint %d", i)
		var seen []int
		for r.Next() {
			got := r.RecordBatch()
			b := int(got.Column(0).(interface{ Value(int) int64 }).Value(0)) / rows
			want := testBatch(b, rows)
			assert.True(t, slices.Contains([]int{2 * i, 2*i + 1}, b), "endpoint %d brought batch %d", i, b)
			assert.Equal(t, want.NumRows(), got.NumRows())
			want.Release()
			seen = append(seen, b)
		}
		require.NoError(t, r.Err(), "endpoint %d", i)
		r.Release()
		assert.Equal(t, []int{2 * i, 2*i + 1}, seen, "endpoint %d", i)
	}
}
