package benchmarks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// RunOptions are how a run is carried out, as opposed to what it measures
// (Config).
type RunOptions struct {
	// Binary is the pipemesh executable the embedded broker and proxy are
	// started from (`pipemesh broker`, `pipemesh serve`); the CLI passes
	// its own path. Unused when measuring an external setup.
	Binary string
	// Progress receives progress (stderr in the CLI); nil for none.
	Progress io.Writer
	// IsTerminal draws Progress as a bar redrawn in place instead of
	// plain lines.
	IsTerminal bool
	// Logger receives debug detail; nil for none.
	Logger *slog.Logger
}

// ErrRoundsFailed is wrapped by Run's error when a round did not complete or
// did not get back every record it produced: its figures are not to be
// trusted, and the report says which and why.
var ErrRoundsFailed = errors.New("rounds failed")

// Run measures cfg: for each record size, cfg.Rounds rounds of each mode,
// alternating direct and proxied (A B A B) so drift on a shared machine
// touches both alike. Each round produces to a fresh topic, consumes it back
// and checks every record. Without cfg.Direct and cfg.Proxy, Run starts the
// upstream (cfg.Target) and a proxy as child processes of opts.Binary and
// stops them before it returns.
//
// Run returns the report of the rounds it ran even with an error: one
// wrapping ErrRoundsFailed when a round failed, or the error that stopped the
// run (ctx ended, a child exited, the setup could not start).
func Run(ctx context.Context, cfg Config, opts RunOptions) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sizes := cfg.Sweep
	if len(sizes) == 0 {
		sizes = []int{cfg.RecordSize}
	}
	for _, s := range sizes {
		if s < 1 || s > 16<<20 {
			return nil, fmt.Errorf("--sweep record size %d: want 1 byte to 16MiB", s)
		}
	}
	rep := &Report{Started: time.Now(), Machine: thisMachine(), Config: cfg, Upstream: cfg.Target}

	h := &harness{cfg: cfg, log: log, direct: cfg.Direct, proxy: cfg.Proxy,
		runID: strconv.FormatInt(rep.Started.UnixMilli()%1e6, 36)}
	// Phases per size: produce and consume of each mode, warm-up included.
	h.prog = newProgress(opts.Progress, opts.IsTerminal, len(sizes)*(cfg.Rounds+1)*2*2)
	defer h.prog.close()
	if cfg.Direct != "" {
		rep.Upstream = "external"
		if cfg.ProxyPID > 0 {
			pid := cfg.ProxyPID
			h.proxyCPU = func() cpuReading { return procCPU(pid) }
		}
	} else {
		h.prog.note("starting the %s upstream (%d brokers) and the proxy as child processes", cfg.Target, embeddedBrokers)
		emb, err := startEmbedded(ctx, opts.Binary, cfg.Target, log)
		if err != nil {
			return rep, err
		}
		defer emb.close()
		// A child that exits ends the run at once, not at the next timeout.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		go func() {
			select {
			case <-emb.broker.done:
				cancel(emb.broker.exited())
			case <-emb.proxy.done:
				cancel(emb.proxy.exited())
			case <-ctx.Done():
			}
		}()
		h.emb, h.direct, h.proxy = emb, emb.direct, emb.addr
		brokerPID, proxyPID := emb.broker.pid(), emb.proxy.pid()
		h.brokerCPU = func() cpuReading { return procCPU(brokerPID) }
		h.proxyCPU = func() cpuReading { return procCPU(proxyPID) }
		log.Debug("embedded setup ready", "direct", h.direct, "proxy", h.proxy)
	}

	adminCl, err := kgo.NewClient(clientOpts(h.direct, "pipemesh-bench-admin")...)
	if err != nil {
		return rep, fmt.Errorf("benchmarks: admin client for %s: %w", h.direct, err)
	}
	defer adminCl.Close()
	h.admin = kadm.NewClient(adminCl)

	failures, runErr := h.runAll(ctx, rep, sizes)
	rep.Summary = Summarize(rep.Rounds, rep.Machine.CPUs)
	if runErr != nil {
		return rep, runErr
	}
	failed := rep.FailedRounds()
	for _, rd := range failed {
		failures = append(failures, fmt.Sprintf("round %d %s %s: %s", rd.Index, rd.Mode, compactSize(rd.RecordSize), rd.Error))
	}
	switch {
	case len(failed) > 0:
		return rep, fmt.Errorf("%d of %d %w; their figures are left out of the summary and are not to be trusted:\n  %s",
			len(failed), len(rep.Rounds), ErrRoundsFailed, strings.Join(failures, "\n  "))
	case len(failures) > 0:
		return rep, fmt.Errorf("warm-up %w: the setup lost or corrupted data before the measured rounds, which passed:\n  %s",
			ErrRoundsFailed, strings.Join(failures, "\n  "))
	}
	return rep, nil
}

// runAll runs the warm-up and the rounds of every size, adding the rounds
// to rep. It returns what failed (warm-ups included), and the error that
// stopped the run early, if one did.
func (h *harness) runAll(ctx context.Context, rep *Report, sizes []int) (failures []string, stopped error) {
	cfg := h.cfg
	for _, size := range sizes {
		p := newPayloads(size, uint64(size))
		if limit := roundRecordLimit(size); mayExceed(cfg, limit) {
			note := fmt.Sprintf("record size %s: at most %d records (%d MiB) per round, so the upstream can keep every record for the data check",
				compactSize(size), limit, maxRoundBytes>>20)
			if cfg.Duration > 0 {
				note += "; the produce phase ends early if it gets there before --duration"
			}
			h.prog.note("%s", note)
		}
		// Round 0 warms up both paths at this size: the first round of
		// fresh processes runs up to twice as slow while heaps grow and
		// memory is first touched. It is left out of the report, but a
		// warm-up that loses data still fails the run.
		for r := 0; r <= cfg.Rounds; r++ {
			for _, mode := range []Mode{Direct, Proxied} {
				if ctx.Err() != nil {
					return failures, stopCause(ctx)
				}
				rd := h.round(ctx, size, r, mode, p)
				if ctx.Err() != nil {
					return failures, stopCause(ctx) // the round's error is a consequence
				}
				if r > 0 {
					rep.Rounds = append(rep.Rounds, rd)
				} else if rd.Error != "" {
					failures = append(failures, fmt.Sprintf("warm-up %s %s: %s", rd.Mode, compactSize(rd.RecordSize), rd.Error))
				}
			}
		}
	}
	return failures, nil
}

// stopCause says why ctx ended: a child that exited, or an interruption.
func stopCause(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, ctx.Err()) {
		return cause
	}
	return fmt.Errorf("benchmarks: run interrupted: %w", ctx.Err())
}

// FailedRounds lists the rounds that did not complete or did not get every
// record back intact.
func (r *Report) FailedRounds() []Round {
	var out []Round
	for _, rd := range r.Rounds {
		if !rd.Verified || rd.Error != "" {
			out = append(out, rd)
		}
	}
	return out
}

// harness is the state of one Run.
type harness struct {
	cfg           Config
	log           *slog.Logger
	prog          *progress
	direct, proxy string
	emb           *embedded
	admin         *kadm.Client
	runID         string
	// CPU time readers; nil when that process cannot be sampled.
	proxyCPU, brokerCPU func() cpuReading
}

// cpuSources lists what to sample in a round of mode. The proxy is sampled
// only when the traffic goes through it.
func (h *harness) cpuSources(mode Mode) []cpuSource {
	src := []cpuSource{{role: roleClients, read: selfCPU}}
	if h.brokerCPU != nil {
		src = append(src, cpuSource{role: roleBroker, read: h.brokerCPU})
	}
	if mode == Proxied && h.proxyCPU != nil {
		src = append(src, cpuSource{role: roleProxy, read: h.proxyCPU})
	}
	return src
}

// maxRoundBytes bounds the keys and values one round produces. The
// upstream must keep every record until the consumer has read it back for
// the data check, and the embedded ones keep them in memory: the sink
// broker drops the oldest past 1 GiB by default, kfake never does.
const maxRoundBytes = 768 << 20

// roundRecordLimit is the most records of size bytes a round produces.
func roundRecordLimit(size int) int64 { return max(maxRoundBytes/int64(size+keySize), 1) }

// mayExceed reports whether cfg may produce more than limit records a round.
func mayExceed(cfg Config, limit int64) bool {
	if cfg.Duration > 0 {
		return cfg.Rate == 0 || int64(float64(cfg.Rate)*cfg.Duration.Seconds()) > limit
	}
	return cfg.Records > limit
}

// adminTimeout bounds a topic creation, deletion or offset listing.
const adminTimeout = 30 * time.Second

// round runs one round: a fresh topic, the produce phase, the consume phase
// and the data check.
//
// Index 0 is the warm-up, the same workload left out of the report.
func (h *harness) round(ctx context.Context, size, index int, mode Mode, p *payloads) Round {
	cfg := h.cfg
	rd := Round{Index: index, Mode: mode, RecordSize: size}
	label := fmt.Sprintf("round %d/%d %s %s", index, cfg.Rounds, mode, compactSize(size))
	limit := roundRecordLimit(size)
	if cfg.Duration > 0 {
		cfg.Records = limit
	} else {
		cfg.Records = min(cfg.Records, limit)
	}
	if index == 0 {
		label = fmt.Sprintf("warm-up %s %s", mode, compactSize(size))
	}
	addr := h.direct
	if mode == Proxied {
		addr = h.proxy
	}
	fail := func(what string, err error) Round {
		rd.Error = what + ": " + err.Error()
		h.prog.note("%s: FAILED: %s", label, rd.Error)
		return rd
	}

	topic := fmt.Sprintf("bench-%s-%d-%s-%s", compactSize(size), index, mode, h.runID)
	if err := h.createTopic(ctx, topic); err != nil {
		return fail("creating topic "+topic, err)
	}
	defer h.deleteTopic(ctx, topic)

	var machine func() cpuReading
	if h.emb != nil {
		machine = machineCPU // all on this machine: the rest is other load
	}
	win := newCPUWindow(h.cpuSources(mode), machine)
	var ctr phaseCounters
	h.prog.begin(label, "produce", cfg.Records, cfg.Duration, &ctr)
	pr, err := producePhase(ctx, cfg, size, addr, topic, p, &ctr, win)
	rd.Records, rd.Bytes, rd.Produce = pr.produced.Count, pr.bytes, pr.phase
	rd.Latency, rd.LatencyHistogram = pr.latency, pr.hist
	if err != nil {
		h.prog.end("produce failed")
		return fail("produce via "+addr, err)
	}
	h.prog.end(fmt.Sprintf("produce %.1f MB/s, %s rec/s, p99 %s", pr.phase.MBPerSec,
		compactCount(pr.phase.RecordsPerSec), compactDuration(pr.latency.P99)))

	timeout := max(60*time.Second, 10*pr.phase.Duration)
	ctr = phaseCounters{}
	h.prog.begin(label, "consume", pr.produced.Count, 0, &ctr)
	cph, chk, consumeErr := consumePhase(ctx, cfg, addr, topic, p, pr.produced, timeout, &ctr, win)
	rd.Consume = cph
	rd.CPUSeconds = win.seconds
	if sec, ok := win.seconds[roleProxy]; ok && mode == Proxied {
		if moved := float64(rd.Bytes+chk.bytes) / 1e9; moved > 0 && sec > 0 {
			rd.ProxyCPUPerGB = sec / moved
		}
	}
	checkErr := chk.verify(pr.produced)
	if checkErr == nil && consumeErr == nil {
		checkErr = h.checkEndOffsets(ctx, topic, pr.produced.Count)
	}
	switch {
	case consumeErr != nil && checkErr != nil:
		h.prog.end("consume failed")
		return fail("consume via "+addr, fmt.Errorf("%w; %w", consumeErr, checkErr))
	case consumeErr != nil:
		h.prog.end("consume failed")
		return fail("consume via "+addr, consumeErr)
	case checkErr != nil:
		h.prog.end("DATA CHECK FAILED")
		return fail("consume via "+addr, checkErr)
	}
	rd.Verified = true
	h.prog.end(fmt.Sprintf("consume %.1f MB/s, %s rec/s, %d records verified", cph.MBPerSec,
		compactCount(cph.RecordsPerSec), chk.got.Count))
	return rd
}

// createTopic creates topic with cfg.Partitions partitions on the direct
// cluster, with the cluster's default replication factor.
func (h *harness) createTopic(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	resp, err := h.admin.CreateTopic(ctx, int32(h.cfg.Partitions), -1, nil, topic)
	if err != nil {
		return err
	}
	return resp.Err
}

// deleteTopic removes a round's topic so the records do not pile up in an
// in-memory broker; failing that is only logged.
func (h *harness) deleteTopic(ctx context.Context, topic string) {
	timeout := adminTimeout
	if ctx.Err() != nil {
		timeout = 3 * time.Second // the run is ending: try, briefly
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	resp, err := h.admin.DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		h.log.Warn("deleting a benchmark topic failed; delete it by hand", "topic", topic, "err", err)
	}
}

// checkEndOffsets checks the cluster holds exactly the records produced, no
// more: a duplicate past the last record consumed shows up only here.
func (h *harness) checkEndOffsets(ctx context.Context, topic string, produced int64) error {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	offs, err := h.admin.ListEndOffsets(ctx, topic)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		// Not every upstream lists offsets; the record check stands.
		h.log.Warn("listing end offsets failed; skipping the check for records past those consumed", "topic", topic, "err", err)
		return nil
	}
	var total int64
	offs.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != produced {
		return fmt.Errorf("data check failed: the topic's partitions end at %d records in all, %d were produced", total, produced)
	}
	return nil
}

// thisMachine describes the machine the harness runs on.
func thisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, GoVersion: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// compactSize writes a record size as --record-size reads it: 100B, 1KiB,
// 64KiB, 1MiB; used in topic names and progress lines.
func compactSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// compactCount writes a rate as 412k or 1.2M.
func compactCount(v float64) string {
	switch {
	case v >= 10e6:
		return fmt.Sprintf("%.0fM", v/1e6)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 10e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// compactDuration writes a latency in ms with two or three significant digits.
func compactDuration(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0f ms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.2f ms", ms)
}
