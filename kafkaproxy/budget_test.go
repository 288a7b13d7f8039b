package kafkaproxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBudget(t *testing.T) {
	m, err := newShapeMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	whole := newBudget(200, m)
	assert.Equal(t, int64(100), whole.requests.total, "half for requests")
	assert.Equal(t, int64(100), whole.responses.total, "half for responses")
	require.True(t, whole.requests.acquire(100, nil))
	require.True(t, whole.responses.acquire(100, nil), "responses never wait for memory requests hold")
	assert.Equal(t, int64(200), whole.inUse())
	whole.requests.release(100)
	whole.responses.release(100)

	b := &whole.requests
	never := make(chan struct{})

	require.True(t, b.acquire(60, never))
	require.True(t, b.acquire(40, never))
	assert.Equal(t, int64(100), b.inUse())

	// Over budget: the next acquire waits until memory is given back.
	got := make(chan bool)
	go func() { got <- b.acquire(30, never) }()
	select {
	case <-got:
		t.Fatal("acquire did not wait with the budget used up")
	case <-time.After(50 * time.Millisecond):
	}
	b.release(40)
	assert.True(t, <-got)
	assert.Equal(t, int64(90), b.inUse())

	// A waiter gives up when its connection closes, taking nothing.
	done := make(chan struct{})
	go func() { got <- b.acquire(50, done) }()
	close(done)
	assert.False(t, <-got)
	assert.Equal(t, int64(90), b.inUse())

	// More than the whole budget is granted only when nothing else is held.
	b.release(90)
	require.True(t, b.acquire(250, never))
	go func() { got <- b.acquire(1, never) }()
	select {
	case <-got:
		t.Fatal("acquire did not wait behind an oversized grant")
	case <-time.After(50 * time.Millisecond):
	}
	b.release(250)
	assert.True(t, <-got)
	b.release(1)
	assert.Zero(t, b.inUse())
}

func TestDefaultMemoryBytes(t *testing.T) {
	d := defaultMemoryBytes()
	assert.GreaterOrEqual(t, d, int64(minDefaultMemoryBytes))
	assert.LessOrEqual(t, d, int64(maxDefaultMemoryBytes))
	if mem := machineMemory(); mem > 0 && cgroupMemoryLimit() == 0 {
		assert.Equal(t, min(max(mem/4, minDefaultMemoryBytes), maxDefaultMemoryBytes), d)
	}
}
