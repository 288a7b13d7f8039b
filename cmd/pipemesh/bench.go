package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pipemesh/pipemesh/benchmarks"
	"github.com/pipemesh/pipemesh/internal/config"
)

const benchUsage = `Usage: pipemesh bench <benchmark> [flags]

Measure what the mesh costs: the same workload direct to the brokers and
through the proxy, in one run on one machine.

Benchmarks:
  kafka     Kafka produce and consume throughput, produce latency and proxy CPU,
            direct vs proxied
  flight    Arrow Flight DoGet and DoPut throughput and proxy CPU, direct vs proxied
            (--baseline tcp adds a plain TCP forwarder as the L4 reference)

Helpers:
  tcp-forward
            a plain TCP forwarder (splice(2)), the reference --baseline tcp starts

Run 'pipemesh bench kafka --help' (or flight, tcp-forward) for what it measures and its flags.
`

const benchKafkaAbout = `Measure Kafka throughput and latency direct to the brokers and through the
proxy, and what the proxy costs.

With no --direct/--proxy it starts its own upstream (--target: kfake, 3 brokers,
or the sink broker) and a pipemesh proxy in front of it, as child processes, so
each one's CPU is its own. With --direct and --proxy it measures an existing
cluster and a proxy in front of it (any Kafka, any proxy: it only speaks Kafka).

What a round does: create a fresh topic (--partitions), produce --records (or
for --duration) with --producers franz-go clients, then consume them all back
from the start with --consumers clients. It measures:
  produce MB/s and records/s   keys+values acknowledged, first send to last ack
  produce latency              p50/p99/p99.9 from the Produce call to its ack;
                               at full speed this includes waiting in the
                               client's buffer, so use --rate for latency
  consume MB/s and records/s   from the first fetch to the last record
  proxy CPU-s/GB               proxy CPU seconds per GB produced plus consumed
  saturated                    what limited the proxied rounds, from each
                               process's CPU per wall second: a process near a
                               full core (proxy, broker or clients), other load
                               on a shared machine, "all N CPUs" when together
                               they use most of the machine, or "none"; kfake
                               serves requests from one goroutine, so "broker
                               (0.97 of a core)" means kfake, not the proxy,
                               set the pace
Every record is checked: each record's key is its index and its value one of
64 known buffers, so the consumer checks every index comes back exactly once,
every value byte for byte, offsets run without gaps, and a checksum of all
records (FNV-1a of value+key, summed) equals the produced one. A round that
loses, duplicates or corrupts a record reports failure, not a number, and the
command exits non-zero.

How figures are made trustworthy on a noisy machine: a warm-up round of each
mode runs first and is left out (fresh processes run slow while their memory
grows); then direct and proxied rounds alternate (A B A B, --rounds of each),
and the table gives the median of each mode, its spread ((max-min)/median), and
the ratio of the medians proxied/direct. For throughput a ratio below 1 is the
proxy's cost; for latency a ratio above 1 is. A round produces at most 768 MiB,
so the in-memory upstreams keep every record for the check; larger --records
or --duration are capped there, with a note.

Examples:
  pipemesh bench kafka
  pipemesh bench kafka --target sink --record-size 10KiB
  pipemesh bench kafka --sweep record-size=100,1KiB,16KiB,256KiB --report bench.html
  pipemesh bench kafka --rate 2000 --record-size 1KiB --duration 10s
  pipemesh bench kafka --direct 127.0.0.1:9092 --proxy 127.0.0.1:19092 --proxy-pid 4242`

// executable is the pipemesh binary the embedded broker and proxy run as;
// tests point it at a freshly built one.
var executable = os.Executable

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errUsage
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, benchUsage)
		return flag.ErrHelp
	case "kafka":
		return runBenchKafka(ctx, args[1:], stdout, stderr)
	case "flight":
		return runBenchFlight(ctx, args[1:], stdout, stderr)
	case "tcp-forward":
		return runBenchTCPForward(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "pipemesh bench: unknown benchmark %q\n\n%s", args[0], benchUsage)
	return errUsage
}

// benchFlags are the flags of bench kafka.
type benchFlags struct {
	cfg        benchmarks.Config
	recordSize string
	sweep      string
	jsonPath   string
	reportPath string
}

func (f *benchFlags) register(fs *flag.FlagSet) {
	d := benchmarks.DefaultConfig()
	f.cfg = d
	c := &f.cfg
	fs.StringVar(&c.Direct, "direct", "", "bootstrap `host:port` of an existing Kafka cluster to measure (with --proxy)")
	fs.StringVar(&c.Proxy, "proxy", "", "bootstrap `host:port` of a proxy in front of --direct's cluster (with --direct)")
	fs.IntVar(&c.ProxyPID, "proxy-pid", 0, "`pid` of the --proxy process, to measure its CPU (Linux)")
	fs.StringVar(&c.Target, "target", d.Target, "embedded upstream: kfake (realistic) or sink (in-memory, fast enough that the proxy is the bottleneck)")
	fs.StringVar(&f.recordSize, "record-size", "1KiB", "record value `size` (bytes, or KiB/MiB: 100, 1KiB, 64KiB)")
	fs.Int64Var(&c.Records, "records", d.Records, "records to produce per round (or use --duration)")
	fs.DurationVar(&c.Duration, "duration", 0, "produce for this `long` per round instead of a count of --records")
	fs.IntVar(&c.Partitions, "partitions", d.Partitions, "partitions of each round's topic")
	fs.IntVar(&c.Producers, "producers", d.Producers, "producer clients; records are split among them")
	fs.IntVar(&c.Consumers, "consumers", d.Consumers, "consumer clients; partitions are split among them")
	fs.StringVar(&c.Compression, "compression", d.Compression, "producer batch compression: none, gzip, snappy, lz4 or zstd")
	fs.StringVar(&c.Acks, "acks", d.Acks, "producer acks: all or 1")
	fs.DurationVar(&c.Linger, "linger", d.Linger, "producer linger (linger.ms)")
	fs.IntVar(&c.Rate, "rate", d.Rate, "records per second over all producers; 0: as fast as possible")
	fs.IntVar(&c.Rounds, "rounds", d.Rounds, "rounds of each mode, direct and proxied alternating")
	fs.StringVar(&f.sweep, "sweep", "", "run the comparison at several record sizes: record-size=`SIZE,SIZE,...` (e.g. record-size=100,1KiB,16KiB,256KiB)")
	fs.StringVar(&f.jsonPath, "json", "", "write every round and the summary as JSON to `file`")
	fs.StringVar(&f.reportPath, "report", "", "write a self-contained HTML report with plots to `file`.html")
}

// resolve turns the parsed flags into a validated Config.
func (f *benchFlags) resolve(fs *flag.FlagSet) (benchmarks.Config, error) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	c := f.cfg
	size, err := config.ParseBytes(f.recordSize)
	if err != nil {
		return c, fmt.Errorf("--record-size: %w", err)
	}
	if size > 1<<31-1 {
		return c, fmt.Errorf("--record-size %s: want 1 byte to 16MiB", f.recordSize)
	}
	c.RecordSize = int(size)
	if c.Duration < 0 {
		return c, fmt.Errorf("--duration %s: want a positive duration", c.Duration)
	}
	if c.Duration > 0 {
		if set["records"] {
			return c, errors.New("--records and --duration both given: a round produces a count of records or for a time, not both")
		}
		c.Records = 0
	}
	if c.Rate < 0 {
		return c, fmt.Errorf("--rate %d: want 0 (as fast as possible) or more", c.Rate)
	}
	if c.Linger < 0 {
		return c, fmt.Errorf("--linger %s: want 0 or more", c.Linger)
	}
	if f.sweep != "" {
		if set["record-size"] {
			return c, errors.New("--record-size and --sweep both given: --sweep record-size=... lists the sizes")
		}
		if c.Sweep, err = benchmarks.ParseSweep(f.sweep); err != nil {
			return c, err
		}
	}
	if c.ProxyPID != 0 && c.Direct == "" {
		return c, errors.New("--proxy-pid is for an external proxy (--direct and --proxy); the embedded proxy's CPU is always measured")
	}
	if c.Direct != "" && set["target"] {
		return c, errors.New("--target picks the embedded upstream; with --direct and --proxy the upstream is the cluster at --direct")
	}
	return c, c.Validate()
}

func runBenchKafka(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench kafka", "[flags]", benchKafkaAbout, stderr)
	var f benchFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := f.resolve(fs)
	if err != nil {
		return err
	}
	opts := benchmarks.RunOptions{Progress: stderr}
	if file, ok := stderr.(*os.File); ok {
		if st, err := file.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			opts.IsTerminal = true
		}
	}
	if cfg.Direct == "" {
		if opts.Binary, err = executable(); err != nil {
			return fmt.Errorf("finding the pipemesh binary to start the embedded broker and proxy: %w", err)
		}
	}
	rep, runErr := benchmarks.Run(ctx, cfg, opts)
	if rep == nil {
		return runErr
	}
	if len(rep.Rounds) > 0 {
		fmt.Fprintln(stdout)
		if err := benchmarks.WriteTable(stdout, rep); err != nil {
			return err
		}
	}
	var written []string
	if f.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(f.jsonPath, append(b, '\n'), 0o644)
		}
		if err != nil {
			return errors.Join(fmt.Errorf("--json: %w", err), runErr)
		}
		written = append(written, "JSON:   "+f.jsonPath)
	}
	if f.reportPath != "" {
		if err := writeHTMLReport(f.reportPath, rep); err != nil {
			return errors.Join(err, runErr)
		}
		written = append(written, "report: "+f.reportPath)
	}
	if len(written) > 0 {
		fmt.Fprintf(stdout, "\n%s\n", strings.Join(written, "\n"))
	}
	return runErr
}

// writeHTMLReport writes rep as a self-contained HTML page to path.
func writeHTMLReport(path string, rep *benchmarks.Report) error {
	fh, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	if err := benchmarks.WriteHTML(fh, rep); err != nil {
		fh.Close()
		return fmt.Errorf("--report: %w", err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	return nil
}
