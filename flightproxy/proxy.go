// Package flightproxy is pipemesh's Arrow Flight data plane: a gRPC Flight
// service that forwards every call to upstream Flight services, frame by
// frame, and on the way identifies the caller, authorizes the dataset,
// rewrites FlightInfo locations so clients come back through it, and counts
// bytes, batches and rows from IPC message headers.
//
// FlightData streams are never re-encoded: the proxy's gRPC codec hands the
// received buffers to the other side as they are (see codec.go), and reads
// only the data_header flatbuffer of each message. Backpressure is gRPC's
// own flow control: one message is in the proxy per stream direction at a
// time, so a slow reader slows its writer, end to end.
package flightproxy

import (
	"github.com/pipemesh/pipemesh/internal/h2relay"

	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/experimental"

	"github.com/pipemesh/pipemesh/policy"
)

// flightService is the gRPC service of Flight.proto.
const flightService = "arrow.flight.protocol.FlightService"

// Defaults of Config.
const (
	DefaultMaxMessageBytes = 256 << 20
	DefaultStreamWindow    = 4 << 20
	DefaultConnWindow      = 16 << 20
)

// Config configures a Proxy.
type Config struct {
	// Listen is the host:port Flight clients connect to.
	Listen string
	// Upstreams are the Flight services behind the proxy; exactly one has no
	// PathPrefix and is the default route.
	Upstreams []Upstream
	// Advertise is the location put in rewritten FlightInfo endpoints.
	// Default: grpc://<the listen address> (grpc+tls:// with TLS).
	Advertise string
	// MaxMessageBytes is the largest gRPC message accepted or sent, either
	// side. Default DefaultMaxMessageBytes.
	MaxMessageBytes int
	// StreamWindow and ConnWindow are the HTTP/2 flow-control windows (per
	// stream and per connection) on both sides. Larger windows carry large
	// batches at full speed; they also bound what is in flight per stream.
	StreamWindow int32
	ConnWindow   int32
	// TicketKey signs the tickets the proxy issues. Replicas behind one
	// address need the same key; default: a random key per process.
	TicketKey []byte
	// NoSplice serves DoGet and DoPut data through gRPC's message path
	// instead of splicing it through the relay (for comparison; slower).
	NoSplice bool
	// TLS, when set, serves clients over TLS; with ClientAuth requiring
	// verified certificates and Identity set, the certificate's common name
	// is the principal (mTLS).
	TLS *tls.Config
	// Identity resolves callers to principals. Default: every caller is
	// User:ANONYMOUS and Handshake passes through to the default upstream.
	Identity *Identity
	// Authorizer decides access to datasets. Default: allow everything.
	// UsePolicy sets it (and Identity and Quotas) from a policy file.
	Authorizer Authorizer
	// AuditLog, when set, receives one JSON line per denied or audited
	// (would_deny) call, and per allowed one with AuditAllows; the lines
	// have the Kafka proxy's audit fields. Without it, denials go to the
	// log at warn level.
	AuditLog    io.Writer
	AuditAllows bool
	// Compression re-encodes DoGet streams of the datasets it names with
	// LZ4_FRAME or ZSTD body compression toward the client. Default: every
	// stream passes as it is.
	Compression CompressionRules
	// Quotas caps each principal's data streams and byte rate. Optional.
	Quotas Quotas
	// Observer receives stream and query observations (lineage). Optional.
	Observer Observer
	// ProgressEvery is how often a long stream reports its progress to
	// the Observer while it runs, so lineage rates follow a long DoGet or
	// DoPut instead of jumping when it ends. Default DefaultProgressEvery.
	ProgressEvery time.Duration
	// MaxLabelValues caps the distinct values each of the principal and
	// dataset labels of the pipemesh_flight_* metrics takes (both come
	// from clients); later values read "other", first come first kept, as
	// on the Kafka metrics. Lineage is not capped this way. Default
	// DefaultMaxLabelValues.
	MaxLabelValues int
	// LabelAllow lists, per label ("principal", "dataset"), values that
	// always keep their own series, past the cap.
	LabelAllow map[string][]string
	// Logger receives logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the pipemesh_flight_* metrics. Default: a private
	// registry.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() error {
	if c.Listen == "" {
		return errors.New("flightproxy: no listen address; set --flight-listen HOST:PORT")
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.StreamWindow <= 0 {
		c.StreamWindow = DefaultStreamWindow
	}
	if c.ConnWindow <= 0 {
		c.ConnWindow = DefaultConnWindow
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = DefaultProgressEvery
	}
	if c.MaxLabelValues <= 0 {
		c.MaxLabelValues = DefaultMaxLabelValues
	}
	if len(c.TicketKey) == 0 {
		c.TicketKey = make([]byte, 32)
		_, _ = rand.Read(c.TicketKey)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Authorizer == nil {
		c.Authorizer = AllowAll{}
	}
	return nil
}

// Proxy is a running Flight proxy.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	router    *router
	metrics   *metrics
	ticketKey []byte
	tickets   *ticketSealer
	shaper    *shaper
	advertise string
	ln        net.Listener
	server    *grpc.Server
	relay     *h2relay.Relay
	backend   *backendListener
	closeOnce sync.Once
	auditLog  *policy.AuditLog
	logins    *loginLimiter
}

// New validates cfg, registers metrics and prepares the upstream
// connections (dialled lazily by gRPC, so an upstream that is down now
// does not stop the proxy from starting).
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer, cfg.MaxLabelValues, cfg.LabelAllow)
	if err != nil {
		return nil, fmt.Errorf("flightproxy: metrics: %w", err)
	}
	pool := newBufferPool()
	dialOpts := []grpc.DialOption{
		experimental.WithBufferPool(pool),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(codec{}),
			grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(cfg.MaxMessageBytes),
		),
		grpc.WithInitialWindowSize(cfg.StreamWindow),
		grpc.WithInitialConnWindowSize(cfg.ConnWindow),
		grpc.WithWriteBufferSize(256 << 10),
		grpc.WithReadBufferSize(256 << 10),
	}
	r, err := newRouter(cfg.Upstreams, dialOpts)
	if err != nil {
		return nil, err
	}
	ts, err := newTicketSealer(cfg.TicketKey)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("flightproxy: ticket key: %w", err)
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger.With("component", "flight-proxy"), router: r, metrics: m, ticketKey: cfg.TicketKey, tickets: ts, shaper: newShaper(cfg.Quotas), logins: newLoginLimiter()}
	p.auditLog = policy.NewAuditLog(cfg.AuditLog, p.log)
	serverOpts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{}),
		experimental.BufferPool(pool),
		grpc.MaxRecvMsgSize(cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(cfg.MaxMessageBytes),
		grpc.InitialWindowSize(cfg.StreamWindow),
		grpc.InitialConnWindowSize(cfg.ConnWindow),
		grpc.WriteBufferSize(256 << 10),
		grpc.ReadBufferSize(256 << 10),
	}
	// The relay terminates TLS; the gRPC server behind it reads the
	// client's TLS state from relayCreds.
	serverOpts = append(serverOpts, grpc.Creds(relayCreds{secure: cfg.TLS != nil}))
	p.server = grpc.NewServer(serverOpts...)
	p.backend = newBackendListener(&net.UnixAddr{Name: "pipemesh-flight-relay", Net: "unix"})
	p.relay = h2relay.New(h2relay.Config{
		Backend:      p.backend.dial,
		StreamWindow: cfg.StreamWindow,
		ConnWindow:   cfg.ConnWindow,
		Hold:         func(path string) bool { return !cfg.NoSplice && path == "/"+flightService+"/DoPut" },
		Logger:       p.log,
	})
	p.server.RegisterService(p.serviceDesc(), p)
	return p, nil
}

func (p *Proxy) compressionFor(dataset string) Compression {
	if p.cfg.Compression == nil || dataset == "" {
		return Passthrough
	}
	return p.cfg.Compression.FlightCompression(dataset)
}

// Listen binds the listen address; Serve calls it if it was not called.
func (p *Proxy) Listen() error {
	if p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("flightproxy: listen on %s: %w", p.cfg.Listen, err)
	}
	p.ln = ln
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() && p.cfg.Advertise == "" {
		p.log.Warn("the Flight proxy listens on all interfaces but advertises " + ln.Addr().String() +
			" in FlightInfo endpoints, which clients cannot dial; set --flight-advertise grpc://NAME:PORT to the name clients reach it by")
	}
	p.advertise = p.cfg.Advertise
	if p.advertise == "" {
		p.advertise = "grpc://" + ln.Addr().String()
		if p.cfg.TLS != nil {
			p.advertise = "grpc+tls://" + ln.Addr().String()
		}
	}
	return nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Location is the location the proxy advertises in FlightInfo endpoints.
func (p *Proxy) Location() string { return p.advertise }

// Ready reports whether the proxy listens and every configured upstream
// is reachable: an upstream whose connection is failing (dial errors,
// refused) makes the proxy unready, with its name, so an orchestrator
// routes clients elsewhere. Connections not yet used are dialled here.
func (p *Proxy) Ready() (bool, string) {
	if p.ln == nil {
		return false, "flight proxy not listening yet"
	}
	for _, rt := range p.router.routes {
		switch rt.conn.GetState() {
		case connectivity.Idle:
			rt.conn.Connect()
		case connectivity.TransientFailure:
			return false, fmt.Sprintf("flight upstream %q (%s) unreachable", rt.Name, rt.Target)
		}
	}
	return true, ""
}

// Serve serves Flight clients until ctx ends, then stops gracefully: calls
// in progress may finish for up to 10 seconds, then are cancelled.
func (p *Proxy) Serve(ctx context.Context) error {
	if err := p.Listen(); err != nil {
		return err
	}
	defer p.router.close()
	served := make(chan error, 1)
	go func() { served <- p.server.Serve(p.backend) }()
	var conns sync.WaitGroup
	connCtx, cancelConns := context.WithCancel(context.Background())
	defer cancelConns()
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		_ = p.ln.Close()
		t := time.AfterFunc(10*time.Second, func() {
			p.server.Stop()
			cancelConns()
		})
		defer t.Stop()
		p.server.GracefulStop()
	})
	p.log.Info("serving Arrow Flight", "listen", p.Addr(), "advertise", p.advertise, "upstreams", len(p.cfg.Upstreams))
	var err error
	var backoff time.Duration
	for {
		nc, aerr := p.ln.Accept()
		if aerr != nil {
			// Out of file descriptors, or a connection aborted before it
			// was accepted: wait a little and accept again, as gRPC's own
			// server does, rather than stop serving everyone.
			var te interface{ Temporary() bool }
			if ctx.Err() == nil && errors.As(aerr, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("cannot accept a Flight client connection; retrying", "error", aerr, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				continue
			}
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		backoff = 0
		conns.Add(1)
		go func() {
			defer conns.Done()
			p.serveConn(connCtx, nc)
		}()
	}
	if stop() {
		// The listener failed on its own: nothing to wait for.
		close(stopped)
		p.server.Stop()
	}
	<-stopped
	cancelConns()
	conns.Wait()
	if serr := <-served; serr != nil && !errors.Is(serr, grpc.ErrServerStopped) && err == nil {
		err = serr
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("flightproxy: %w", err)
	}
	return nil
}
