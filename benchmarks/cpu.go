package benchmarks

import "time"

// cpuReading is the CPU time a process has used, at one instant.
type cpuReading struct {
	ok bool
	// coarse is user+system seconds as the kernel accounts the process,
	// dead threads included, in clock ticks (10 ms on Linux).
	coarse float64
	// fine is the same to the nanosecond, summed over the live threads
	// (Linux schedstat); negative when not known.
	fine float64
}

// coarseEnough is the CPU time from which the tick-based figure is used as
// is: its 10 ms resolution is then an error under 2%.
const coarseEnough = 0.5

// since is the CPU seconds used between r0 and r.
func (r cpuReading) since(r0 cpuReading) (float64, bool) {
	if !r.ok || !r0.ok {
		return 0, false
	}
	coarse := r.coarse - r0.coarse
	if coarse >= coarseEnough || r.fine < 0 || r0.fine < 0 {
		return max(coarse, 0), true
	}
	// Short rounds: ticks are too coarse, use the per-thread nanoseconds,
	// unless a thread exited in between (the sum then went down).
	if fine := r.fine - r0.fine; fine >= 0 {
		return fine, true
	}
	return max(coarse, 0), true
}

// cpuSource reads the CPU time of one role: "proxy", "broker" or "clients".
type cpuSource struct {
	role string
	read func() cpuReading
}

// selfCPU reads the CPU time of this process, where the clients run.
func selfCPU() cpuReading {
	u, s, ok := rusageSelf()
	if !ok {
		return cpuReading{}
	}
	t := (u + s).Seconds()
	return cpuReading{ok: true, coarse: t, fine: t}
}

// cpuWindow accumulates the CPU each role spends over one or more measured
// stretches of a round, and the wall time they took. With a machine reader
// it also counts the "other" role: the busy time of all CPUs that none of
// the sources spent (other processes on a shared machine, interrupt work).
type cpuWindow struct {
	sources      []cpuSource
	machine      func() cpuReading // nil: no "other" role
	start        []cpuReading
	machineStart cpuReading
	began        time.Time
	seconds      map[string]float64
	wall         time.Duration
}

func newCPUWindow(sources []cpuSource, machine func() cpuReading) *cpuWindow {
	return &cpuWindow{sources: sources, machine: machine, seconds: map[string]float64{}}
}

// begin starts a measured stretch.
func (w *cpuWindow) begin() {
	w.start = w.start[:0]
	if w.machine != nil {
		w.machineStart = w.machine()
	}
	for _, s := range w.sources {
		w.start = append(w.start, s.read())
	}
	w.began = time.Now()
}

// end closes the stretch begun last.
func (w *cpuWindow) end() {
	w.wall += time.Since(w.began)
	var ours float64
	for i, s := range w.sources {
		if d, ok := s.read().since(w.start[i]); ok {
			w.seconds[s.role] += d
			ours += d
		}
	}
	if w.machine != nil {
		if all, ok := w.machine().since(w.machineStart); ok {
			w.seconds[roleOther] += max(all-ours, 0)
		}
	}
}

// cores is each role's CPU seconds over the wall seconds measured: 1.0 is one
// core busy throughout.
func (w *cpuWindow) cores() map[string]float64 {
	out := map[string]float64{}
	if w.wall <= 0 {
		return out
	}
	for role, s := range w.seconds {
		out[role] = s / w.wall.Seconds()
	}
	return out
}
