package main

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/pipemesh/pipemesh/flightserver"
	"github.com/pipemesh/pipemesh/internal/config"
)

const flightServerAbout = `Run the built-in Arrow Flight dataset service, for demos, tests and
benchmarks. DoPut stores a dataset (the descriptor path names it) as Arrow IPC
stream files under --data-dir, one file per chunk of --batches-per-chunk
batches; DoGet streams a chunk back as it was written (LZ4 or ZSTD bodies
included); GetFlightInfo answers one endpoint per chunk, so parallel readers
(Spark partitions) fan out; ListFlights lists the datasets; DoExchange echoes;
DoAction "delete" deletes a dataset. It has no authentication: put
'pipemesh serve --flight-upstream' in front of it for that.

Examples:
  pipemesh flight-server --listen 127.0.0.1:8815 --data-dir /tmp/datasets
  pipemesh serve --flight-listen 127.0.0.1:18815 --flight-upstream grpc://127.0.0.1:8815`

func runFlightServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("flight-server", "--data-dir DIR [flags]", flightServerAbout, stderr)
	listen := fs.String("listen", "127.0.0.1:8815", "`host:port` to serve Flight on")
	dir := fs.String("data-dir", "", "`directory` holding the datasets (created if missing; required)")
	location := fs.String("location", "", "`location` put in every endpoint (default grpc://<--listen>; \"none\": no location, meaning this same service)")
	batches := fs.Int64("batches-per-chunk", flightserver.DefaultBatchesPerChunk, "record batches per chunk file, i.e. per FlightInfo endpoint")
	chunkSize := fs.String("chunk-bytes", "64MiB", "start a new chunk past this `size` too")
	maxMsg := fs.String("max-message-bytes", "256MiB", "largest Flight message accepted or sent (`size`)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "--data-dir is required: the directory that holds the datasets")
		fs.Usage()
		return errUsage
	}
	chunkBytes, err := config.ParseBytes(*chunkSize)
	if err != nil {
		return fmt.Errorf("--chunk-bytes: %w", err)
	}
	msgBytes, err := config.ParseBytes(*maxMsg)
	if err != nil || msgBytes < 1<<20 || msgBytes > 1<<31-1 {
		return fmt.Errorf("--max-message-bytes %q: want 1MiB to 2GiB", *maxMsg)
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	loc := *location
	switch loc {
	case "":
		loc = "grpc://" + ln.Addr().String()
	case "none":
		loc = ""
	}
	srv, err := flightserver.New(flightserver.Config{
		Dir: *dir, Location: loc, BatchesPerChunk: *batches, BytesPerChunk: chunkBytes,
		MaxMessageBytes: int(msgBytes), Logger: log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Fprintf(stdout, "Flight dataset service at grpc://%s, data in %s\nFront it with: pipemesh serve --flight-upstream grpc://%s\n",
		ln.Addr(), *dir, ln.Addr())
	return srv.Serve(ctx, ln)
}
