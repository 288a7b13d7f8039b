package benchmarks

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCPUReadingSince(t *testing.T) {
	r := func(coarse, fine float64) cpuReading { return cpuReading{ok: true, coarse: coarse, fine: fine} }
	tests := []struct {
		name   string
		r0, r1 cpuReading
		want   float64
		ok     bool
	}{
		{"short: nanoseconds beat ticks", r(1.00, 1.0004), r(1.00, 1.0074), 0.007, true},
		{"long: ticks, which count exited threads", r(1.0, 1.0), r(3.0, 2.5), 2.0, true},
		{"a thread exited: ticks", r(1.0, 1.2), r(1.01, 1.1), 0.01, true},
		{"no nanoseconds: ticks", r(1.0, -1), r(1.2, -1), 0.2, true},
		{"unknown", cpuReading{}, r(1, 1), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.r1.since(tt.r0)
			assert.Equal(t, tt.ok, ok)
			assert.InDelta(t, tt.want, got, 1e-9)
		})
	}
}

func TestCPUWindowCountsRolesAndOtherLoad(t *testing.T) {
	var proxy, machine float64
	w := newCPUWindow([]cpuSource{{role: roleProxy, read: func() cpuReading {
		return cpuReading{ok: true, coarse: proxy, fine: -1}
	}}}, func() cpuReading { return cpuReading{ok: true, coarse: machine, fine: -1} })
	w.begin()
	proxy, machine = 1.0, 1.5
	w.end()
	proxy, machine = 1.5, 2.5 // between stretches: not counted
	w.begin()
	proxy, machine = 2.5, 3.5
	w.end()
	assert.InDelta(t, 2.0, w.seconds[roleProxy], 1e-9)
	assert.InDelta(t, 0.5, w.seconds[roleOther], 1e-9)
}

func TestProcAndSelfCPUMove(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	p0, s0, m0 := procCPU(os.Getpid()), selfCPU(), machineCPU()
	require.True(t, p0.ok)
	require.True(t, s0.ok)
	require.True(t, m0.ok)
	assert.GreaterOrEqual(t, p0.fine, 0.0, "schedstat is readable")
	// Burn 50ms of CPU, however long a loaded machine takes to give it.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if d, _ := selfCPU().since(s0); d >= 0.05 {
			break
		}
	}
	p, ok := procCPU(os.Getpid()).since(p0)
	require.True(t, ok)
	assert.Greater(t, p, 0.02)
	s, _ := selfCPU().since(s0)
	assert.Greater(t, s, 0.02)
	m, _ := machineCPU().since(m0)
	assert.Greater(t, m, 0.0)
	assert.False(t, procCPU(1<<30).ok, "no such process")
}
