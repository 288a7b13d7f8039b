package benchmarks

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progressRedraw is how often the terminal progress bar is redrawn.
const progressRedraw = 100 * time.Millisecond

// progressBarWidth is the number of cells in the bar.
const progressBarWidth = 20

// progress tells the user how far a run is. On a terminal it is one line,
// redrawn in place, with results of finished rounds printed above it;
// otherwise (a file, a CI log) it writes a plain line when a phase starts
// and when it ends.
type progress struct {
	w      io.Writer
	term   bool
	now    func() time.Time
	total  int // phases in the run
	start  time.Time
	mu     sync.Mutex
	done   int // phases finished
	label  string
	phase  string
	target int64         // records the phase moves, 0 when timed
	timed  time.Duration // the phase's duration, 0 when counted
	began  time.Time
	ctr    *phaseCounters
	drawn  bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

// newProgress reports on w a run of total phases (produce or consume).
func newProgress(w io.Writer, term bool, total int) *progress {
	if w == nil {
		w = io.Discard
	}
	pr := &progress{w: w, term: term, now: time.Now, total: total, stop: make(chan struct{})}
	pr.start = pr.now()
	if term {
		pr.wg.Add(1)
		go pr.redrawLoop()
	}
	return pr
}

func (pr *progress) redrawLoop() {
	defer pr.wg.Done()
	t := time.NewTicker(progressRedraw)
	defer t.Stop()
	for {
		select {
		case <-pr.stop:
			return
		case <-t.C:
			pr.mu.Lock()
			pr.draw()
			pr.mu.Unlock()
		}
	}
}

// begin starts a phase ("produce" or "consume") of the round called label,
// moving target records or lasting timed.
func (pr *progress) begin(label, phase string, target int64, timed time.Duration, ctr *phaseCounters) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.label, pr.phase, pr.target, pr.timed, pr.ctr = label, phase, target, timed, ctr
	pr.began = pr.now()
	if pr.term {
		pr.draw()
		return
	}
	what := fmt.Sprintf("%d records", target)
	if timed > 0 {
		what = "for " + timed.String()
	}
	verb := map[string]string{"produce": "producing", "consume": "consuming", "get": "DoGet of", "put": "DoPut of"}[phase]
	fmt.Fprintf(pr.w, "%s: %s %s\n", label, verb, what)
}

// end finishes the current phase with a result line.
func (pr *progress) end(result string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.done++
	pr.ctr = nil
	pr.println(fmt.Sprintf("%s: %s", pr.label, result))
}

// println writes a line that stays, above the bar on a terminal.
func (pr *progress) println(line string) {
	if pr.term && pr.drawn {
		fmt.Fprint(pr.w, "\r\033[K")
	}
	fmt.Fprintln(pr.w, line)
	if pr.term {
		pr.draw()
	}
}

// note writes a line that stays, for events outside the phases.
func (pr *progress) note(format string, args ...any) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.println(fmt.Sprintf(format, args...))
}

// close removes the bar.
func (pr *progress) close() {
	if !pr.term {
		return
	}
	close(pr.stop)
	pr.wg.Wait()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.drawn {
		fmt.Fprint(pr.w, "\r\033[K")
		pr.drawn = false
	}
}

// fraction is how much of the run is done, from 0 to 1.
func (pr *progress) fraction() float64 {
	if pr.total == 0 {
		return 1
	}
	f := float64(pr.done)
	if pr.ctr != nil {
		switch {
		case pr.timed > 0:
			f += min(pr.now().Sub(pr.began).Seconds()/pr.timed.Seconds(), 1)
		case pr.target > 0:
			f += min(float64(pr.ctr.records.Load())/float64(pr.target), 1)
		}
	}
	return min(f/float64(pr.total), 1)
}

// draw redraws the bar; pr.mu is held.
func (pr *progress) draw() {
	if pr.label == "" {
		return
	}
	f := pr.fraction()
	cells := int(f * progressBarWidth)
	bar := strings.Repeat("#", cells) + strings.Repeat(".", progressBarWidth-cells)
	line := fmt.Sprintf("[%s] %3.0f%%  %s", bar, f*100, pr.label)
	if pr.ctr != nil {
		line += "  " + pr.phase
		if secs := pr.now().Sub(pr.began).Seconds(); secs > 0 {
			line += fmt.Sprintf(" %.0f MB/s", float64(pr.ctr.bytes.Load())/1e6/secs)
		}
	}
	if elapsed := pr.now().Sub(pr.start); f > 0.02 && f < 1 {
		eta := time.Duration(float64(elapsed) * (1 - f) / f)
		line += "  eta " + eta.Round(time.Second).String()
	}
	fmt.Fprint(pr.w, "\r"+line+"\033[K")
	pr.drawn = true
}
