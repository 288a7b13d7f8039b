package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pipemesh/pipemesh/benchmarks"
	"github.com/pipemesh/pipemesh/internal/config"
)

const benchFlightAbout = `Measure Arrow Flight throughput direct to a Flight service and through the
proxy, and what the proxy costs.

With no --direct/--proxy it starts 'pipemesh flight-server' and 'pipemesh serve
--flight-upstream' in front of it as child processes, so each one's CPU is its
own. With --direct and --proxy it measures an existing Flight service and a
proxy in front of it.

The dataset is --bytes of record batches of --batch-rows rows (int64, float64
and string columns, with --compression IPC body compression), encoded once.
Setup writes it to the service. Then each round, direct and proxied
alternating after one warm-up round of each:
  DoGet GB/s       GetFlightInfo, then DoGet of every endpoint (--streams at a
                   time); every message is compared byte for byte with the
                   batch written at that place
  DoPut GB/s       DoPut of the whole dataset, read back afterwards (not
                   timed) and checked the same way
  proxy CPU-s/GB   the proxy process's CPU seconds per GB moved, get plus put
The table gives the median of each mode, its spread, and proxied/direct.

--baseline tcp adds a third mode, the layer-4 reference: 'pipemesh bench
tcp-forward', a plain TCP forwarder (splice(2), or --baseline-buffer), runs as
one more child process in front of the Flight service (in front of --direct
when given), and rounds alternate direct, tcp-forward, proxied. The table then
also gives the forwarder's GB/s and CPU-s/GB, tcp/direct (what a bare second
hop keeps) and proxied/tcp (above 1: the proxy beats the plain forwarder).

The service decides how the dataset is cut into endpoints; the check follows
its GetFlightInfo (each endpoint must continue where the one before ended), so
--direct may be a 'pipemesh flight-server' with any --batches-per-chunk and
--chunk-bytes.

Examples:
  pipemesh bench flight
  pipemesh bench flight --bytes 1GiB --compression lz4 --streams 2
  pipemesh bench flight --proxy-compress zstd
  pipemesh bench flight --bytes 1GiB --baseline tcp
  pipemesh bench flight --direct 127.0.0.1:8815 --proxy 127.0.0.1:18815 --proxy-pid 4242`

func runBenchFlight(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench flight", "[flags]", benchFlightAbout, stderr)
	cfg := benchmarks.DefaultFlightConfig()
	size := fs.String("bytes", "512MiB", "dataset `size` each DoGet and DoPut moves")
	fs.IntVar(&cfg.BatchRows, "batch-rows", cfg.BatchRows, "rows per record batch")
	fs.IntVar(&cfg.BatchesPerChunk, "batches-per-chunk", cfg.BatchesPerChunk, "batches per endpoint of the embedded service")
	fs.IntVar(&cfg.Streams, "streams", cfg.Streams, "endpoints a DoGet round reads at once")
	fs.StringVar(&cfg.Compression, "compression", cfg.Compression, "IPC body compression of the data: none, lz4 or zstd")
	fs.StringVar(&cfg.ProxyCompress, "proxy-compress", "", "lz4 or zstd: the embedded proxy re-encodes DoGet streams toward the client (serve --flight-compress), and proxied rounds check batches by value; measures the re-encoding cost")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds of each mode, direct and proxied alternating")
	fs.StringVar(&cfg.Direct, "direct", "", "`host:port` of an existing Flight service to measure (with --proxy)")
	fs.StringVar(&cfg.Proxy, "proxy", "", "`host:port` of a Flight proxy in front of --direct (with --direct)")
	fs.IntVar(&cfg.ProxyPID, "proxy-pid", 0, "`pid` of the --proxy process, to measure its CPU (Linux)")
	fs.StringVar(&cfg.Baseline, "baseline", "", "`kind` of reference to measure too: tcp, a plain TCP forwarder in front of the Flight service (off by default)")
	baselineBuf := fs.String("baseline-buffer", "0", "with --baseline tcp: the forwarder copies through a read/write buffer of this `size` instead of splice(2); 0: splice")
	jsonPath := fs.String("json", "", "write every round and the summary as JSON to `file`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	n, err := config.ParseBytes(*size)
	if err != nil {
		return fmt.Errorf("--bytes: %w", err)
	}
	cfg.Bytes = n
	if cfg.Baseline == "none" {
		cfg.Baseline = ""
	}
	buf, err := config.ParseBytes(*baselineBuf)
	if err != nil || buf > 64<<20 {
		return fmt.Errorf("--baseline-buffer %q: want 0 (splice) or a size up to 64MiB", *baselineBuf)
	}
	cfg.BaselineBuffer = int(buf)
	if err := cfg.Validate(); err != nil {
		return err
	}
	opts := benchmarks.FlightRunOptions{Progress: stderr}
	if file, ok := stderr.(*os.File); ok {
		if st, err := file.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			opts.IsTerminal = true
		}
	}
	if cfg.Direct == "" || cfg.Baseline != "" {
		if opts.Binary, err = executable(); err != nil {
			return fmt.Errorf("finding the pipemesh binary to start the Flight service, proxy or forwarder: %w", err)
		}
	}
	rep, runErr := benchmarks.RunFlight(ctx, cfg, opts)
	if rep == nil {
		return runErr
	}
	if len(rep.Rounds) > 0 {
		fmt.Fprintln(stdout)
		if err := benchmarks.WriteFlightTable(stdout, rep); err != nil {
			return err
		}
	}
	if *jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonPath, append(b, '\n'), 0o644)
		}
		if err != nil {
			return errors.Join(fmt.Errorf("--json: %w", err), runErr)
		}
	}
	return runErr
}
