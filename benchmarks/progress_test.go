package benchmarks

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	pr := newProgress(&out, false, 4)
	var ctr phaseCounters
	pr.begin("round 1/1 direct 1KiB", "produce", 1000, 0, &ctr)
	pr.end("produce 412.0 MB/s, 401k rec/s, p99 2.10 ms")
	pr.begin("round 1/1 direct 1KiB", "consume", 1000, 0, &ctr)
	pr.end("consume 500.0 MB/s, 488k rec/s, 1000 records verified")
	pr.begin("round 1/1 proxied 1KiB", "produce", 0, 10*time.Second, &ctr)
	pr.close()
	assert.Equal(t, `round 1/1 direct 1KiB: producing 1000 records
round 1/1 direct 1KiB: produce 412.0 MB/s, 401k rec/s, p99 2.10 ms
round 1/1 direct 1KiB: consuming 1000 records
round 1/1 direct 1KiB: consume 500.0 MB/s, 488k rec/s, 1000 records verified
round 1/1 proxied 1KiB: producing for 10s
`, out.String())
}

func TestProgressBarRedrawsInPlace(t *testing.T) {
	var out syncBuffer
	now := time.Unix(1000, 0)
	pr := &progress{w: &out, term: true, now: func() time.Time { return now }, total: 4, stop: make(chan struct{})}
	pr.start = now
	var ctr phaseCounters
	pr.begin("round 2/2 proxied 1KiB", "produce", 1000, 0, &ctr)
	now = now.Add(time.Second)
	ctr.records.Store(400)
	ctr.bytes.Store(412e6)
	pr.mu.Lock()
	pr.draw()
	pr.mu.Unlock()
	line := out.String()[strings.LastIndex(out.String(), "\r")+1:]
	assert.Equal(t, "[##..................]  10%  round 2/2 proxied 1KiB  produce 412 MB/s  eta 9s\033[K", line)
	pr.end("produce 412.0 MB/s")
	assert.Contains(t, out.String(), "\r\033[Kround 2/2 proxied 1KiB: produce 412.0 MB/s\n", "results stay above the bar")
	close(pr.stop)
}

func TestProgressRedrawLoopStops(t *testing.T) {
	var out syncBuffer
	pr := newProgress(&out, true, 2)
	var ctr phaseCounters
	pr.begin("round 1/1 direct 100B", "produce", 10, 0, &ctr)
	for deadline := time.Now().Add(10 * time.Second); strings.Count(out.String(), "\r[") < 2 && time.Now().Before(deadline); {
		time.Sleep(progressRedraw / 2)
	}
	pr.close()
	s := out.String()
	assert.GreaterOrEqual(t, strings.Count(s, "\r["), 2, "redrawn by the ticker")
	assert.True(t, strings.HasSuffix(s, "\r\033[K"), "the bar is cleared at the end")
}
