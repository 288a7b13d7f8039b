package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/pipemesh/pipemesh/internal/config"
	"github.com/pipemesh/pipemesh/internal/tcpforward"
)

const benchTCPForwardAbout = `Run a plain TCP forwarder: every connection accepted on --listen is joined
to a new connection to --upstream, and bytes move both ways untouched (a half
close is passed on). It is the layer-4 reference that 'pipemesh bench flight
--baseline tcp' starts in front of the Flight service, so that the proxy can be
compared with a second TCP hop that does nothing else. Run it yourself to
measure it against any service.

By default the bytes go socket to socket by splice(2) (Linux), never through
user memory; --buffer copies through a user-space buffer with read and write
instead, like most L4 proxies.

Example:
  pipemesh bench tcp-forward --listen 127.0.0.1:28815 --upstream 127.0.0.1:8815`

func runBenchTCPForward(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench tcp-forward", "--listen host:port --upstream host:port [flags]", benchTCPForwardAbout, stderr)
	listen := fs.String("listen", "127.0.0.1:0", "`host:port` to accept connections on")
	upstream := fs.String("upstream", "", "`host:port` every connection is forwarded to (required)")
	buffer := fs.String("buffer", "0", "copy through a read/write buffer of this `size` per direction instead of splice(2); 0: splice")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *upstream == "" {
		fmt.Fprintln(stderr, "--upstream is required: the host:port to forward connections to")
		fs.Usage()
		return errUsage
	}
	buf, err := config.ParseBytes(*buffer)
	if err != nil || buf < 0 || buf > 64<<20 {
		return fmt.Errorf("--buffer %q: want 0 (splice) or a size up to 64MiB", *buffer)
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	how := "splice(2)"
	if buf > 0 {
		how = fmt.Sprintf("a %d-byte buffer", buf)
	}
	fmt.Fprintf(stdout, "forwarding %s to %s with %s\n", ln.Addr(), *upstream, how)
	f := &tcpforward.Forwarder{Upstream: *upstream, Buffer: int(buf), Logger: log}
	if err := f.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
