// Command pipemesh is the one pipemesh binary: the proxy (serve), an embedded
// Kafka cluster or benchmark sink for local work (broker), a self-contained
// demo (demo), the throughput harness (bench), and its version (version).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `pipemesh is a data-pipeline-aware service mesh for Kafka and Arrow Flight.
Point any Kafka client at the proxy's bootstrap address; nothing else changes.

Usage:
  pipemesh <command> [flags]

Commands:
  serve     run the proxy in front of a Kafka cluster and/or Arrow Flight services
  broker    run an embedded 3-broker Kafka cluster (kfake), or with --sink a fast in-memory sink for benchmarks
  flight-server
            run a small built-in Arrow Flight dataset service (demo, tests, benchmarks)
  demo      run broker, proxy and a small live pipeline, and print the addresses
  bench     measure throughput and latency direct vs through the proxy
  policy    check a policy file, or explain a decision it makes
  version   print the version

Run 'pipemesh <command> --help' for the flags of a command.
Docs: docs/quickstart.md, docs/configuration.md, docs/architecture.md.
`

// command is one subcommand. run returns when its work is done or ctx ends.
type command struct {
	name string
	run  func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"serve", runServe},
	{"broker", runBroker},
	{"flight-server", runFlightServer},
	{"demo", runDemo},
	{"bench", runBench},
	{"policy", runPolicy},
	{"version", runVersion},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a command and turns its error into an exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "pipemesh %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "pipemesh: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// errUsage marks a flag error that the flag package already printed.
var errUsage = errors.New("usage")

// newFlagSet returns a flag set that prints help in our shape and reports
// errors instead of exiting.
func newFlagSet(name, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pipemesh "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n", strings.TrimSpace("pipemesh "+name+" "+synopsis), about)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args, mapping flag errors to errUsage or flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}

// listFlag is a repeatable flag that also splits on commas.
type listFlag []string

func (l *listFlag) String() string { return fmt.Sprint([]string(*l)) }

func (l *listFlag) Set(s string) error {
	for _, v := range splitComma(s) {
		*l = append(*l, v)
	}
	return nil
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if v := s[start:i]; v != "" {
				out = append(out, v)
			}
			start = i + 1
		}
	}
	return out
}
