package flightproxy

import (
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// seriesLabels lists the values label takes in the series of one metric.
func seriesLabels(t *testing.T, reg *prometheus.Registry, name, label string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == label {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestMetricsDatasetLabelCapped: dataset names come from clients, so the
// pipemesh_flight_* series per dataset must stop growing at the cap, as
// the Kafka metrics' topic label does; later datasets read "other" while
// their bytes are still counted, and lineage still gets every name.
func TestMetricsDatasetLabelCapped(t *testing.T) {
	u := startUpstream(t, "self", 0)
	rec := &recorder{}
	p, reg := startProxy(t, Config{Upstreams: []Upstream{{Target: u.addr}}, Observer: rec,
		MaxLabelValues: 2, LabelAllow: map[string][]string{"dataset": {"keep"}}})
	c := dial(t, p.Addr())
	names := []string{"a", "b", "c", "d", "keep"}
	for _, n := range names {
		putDataset(t, c, []string{n}, 1, 10)
	}
	assert.Equal(t, []string{"a", "b", "keep", "other"}, seriesLabels(t, reg, "pipemesh_flight_bytes_total", "dataset"))
	assert.Equal(t, []string{"a", "b", "keep", "other"}, seriesLabels(t, reg, "pipemesh_flight_rows_total", "dataset"))
	assert.Equal(t, float64(20), counter(t, reg, "pipemesh_flight_rows_total", "other", "write"), "c and d counted as other")

	// The observer hears of a stream once its handler returns, which may
	// be just after the client saw the end.
	require.Eventually(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.streams) >= len(names)
	}, 10*time.Second, 10*time.Millisecond)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	seen := map[string]bool{}
	for _, o := range rec.streams {
		seen[o.Dataset] = true
	}
	for _, n := range names {
		assert.True(t, seen[n], "lineage sees %s by its name", n)
	}
}
