package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pipemesh/pipemesh/flightproxy"
	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/config"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/lineage"
)

// flightFlags are serve's Arrow Flight flags.
type flightFlags struct {
	listen     string
	upstream   string
	advertise  string
	maxMessage string
	tlsCert    string
	tlsKey     string
	tlsCA      string
	maxStreams int
	byteRate   string
	compress   listFlag
	ticketKey  string
	splice     bool
}

func (f *flightFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "flight-listen", "127.0.0.1:18815", "`host:port` Arrow Flight clients connect to (with --flight-upstream)")
	fs.StringVar(&f.upstream, "flight-upstream", "", "upstream Flight service `location` (grpc://host:port, grpc+tls://host:port); several, routed by dataset path prefix, go in --config under flight.upstreams")
	fs.StringVar(&f.advertise, "flight-advertise", "", "`location` put in FlightInfo endpoints so clients come back through the proxy (default: grpc://<--flight-listen>)")
	fs.StringVar(&f.maxMessage, "flight-max-message-bytes", "256MiB", "largest Flight message (a record batch) accepted or sent, each way (`size`)")
	fs.StringVar(&f.tlsCert, "flight-tls-cert", "", "PEM certificate `file` to serve Flight over TLS (with --flight-tls-key)")
	fs.StringVar(&f.tlsKey, "flight-tls-key", "", "PEM private key `file` of --flight-tls-cert")
	fs.IntVar(&f.maxStreams, "flight-max-streams", 0, "data streams (DoGet, DoPut, DoExchange) one principal may have open at once; more get ResourceExhausted (0: no cap)")
	fs.StringVar(&f.byteRate, "flight-byte-rate", "0", "bytes per second one principal's data streams may move together, e.g. 200MiB; over it the proxy slows them down (0: no cap)")
	fs.Var(&f.compress, "flight-compress", "`PREFIX=CODEC`: re-encode DoGet streams of datasets whose name starts with PREFIX (* for all) with lz4 or zstd IPC body compression toward the client (repeatable; default: pass streams as they are)")
	fs.StringVar(&f.ticketKey, "flight-ticket-key-file", "", "`file` whose bytes (at least 16) key the tickets and tokens the proxy issues; give every replica behind one address the same file (default: a random key per process, so tickets end with it)")
	fs.BoolVar(&f.splice, "flight-splice", true, "once a DoGet or DoPut is authorized and routed, move its data between client and upstream as the HTTP/2 frames arrive (no re-encoding, no user-space copy); false sends it through gRPC's message path, slower, for comparison")
	fs.StringVar(&f.tlsCA, "flight-tls-client-ca", "", "PEM CA `file`: Flight clients must present a certificate it signed (mTLS); the certificate's common name is the principal, User:<CN>")
}

// resolve returns the Flight proxy's config, or nil when no Flight
// upstream is configured (the Flight proxy is then off).
func (f *flightFlags) resolve(set map[string]bool, file config.Flight) (*flightproxy.Config, error) {
	pick := func(name, flagVal, fileVal string) string {
		if set[name] || fileVal == "" {
			return flagVal
		}
		return fileVal
	}
	c := &flightproxy.Config{
		Listen:    pick("flight-listen", f.listen, file.Listen),
		Advertise: pick("flight-advertise", f.advertise, file.Advertise),
	}
	switch {
	case set["flight-upstream"] && f.upstream != "":
		c.Upstreams = []flightproxy.Upstream{{Name: "default", Target: f.upstream}}
	case len(file.Upstreams) > 0:
		for _, u := range file.Upstreams {
			c.Upstreams = append(c.Upstreams, flightproxy.Upstream{Name: u.Name, Target: u.URL, PathPrefix: u.PathPrefix})
		}
	default:
		if set["flight-listen"] || set["flight-advertise"] {
			return nil, errors.New("--flight-listen given but no Flight upstream: set --flight-upstream grpc://HOST:PORT " +
				"(for a local one, run 'pipemesh flight-server --data-dir DIR' and use grpc://127.0.0.1:8815)")
		}
		return nil, nil
	}
	n, err := config.ParseBytes(f.maxMessage)
	if err != nil {
		return nil, fmt.Errorf("--flight-max-message-bytes: %w", err)
	}
	if !set["flight-max-message-bytes"] && file.MaxMessageBytes != 0 {
		n = int64(file.MaxMessageBytes)
	}
	if n < 1<<20 || n > 1<<31-1 {
		return nil, fmt.Errorf("--flight-max-message-bytes %d: want 1MiB to 2GiB", n)
	}
	c.MaxMessageBytes = int(n)
	c.NoSplice = !f.splice
	if !set["flight-splice"] && file.Splice != nil {
		c.NoSplice = !*file.Splice
	}
	cert := pick("flight-tls-cert", f.tlsCert, file.TLSCert)
	key := pick("flight-tls-key", f.tlsKey, file.TLSKey)
	ca := pick("flight-tls-client-ca", f.tlsCA, file.TLSClientCA)
	if c.TLS, err = flightTLS(cert, key, ca); err != nil {
		return nil, err
	}
	if ca != "" {
		c.Identity = &flightproxy.Identity{}
	}
	if path := pick("flight-ticket-key-file", f.ticketKey, file.TicketKeyFile); path != "" {
		key, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--flight-ticket-key-file: %w", err)
		}
		if len(bytes.TrimSpace(key)) < 16 {
			return nil, fmt.Errorf("--flight-ticket-key-file %s: want at least 16 bytes of key, e.g. from 'head -c 32 /dev/urandom | base64'", path)
		}
		c.TicketKey = bytes.TrimSpace(key)
	}
	var lim flightproxy.Limits
	lim.MaxStreams = f.maxStreams
	if !set["flight-max-streams"] && file.MaxStreams != 0 {
		lim.MaxStreams = file.MaxStreams
	}
	rate, err := config.ParseBytes(f.byteRate)
	if err != nil {
		return nil, fmt.Errorf("--flight-byte-rate: %w", err)
	}
	if !set["flight-byte-rate"] && file.ByteRate != 0 {
		rate = int64(file.ByteRate)
	}
	if lim.MaxStreams < 0 || rate < 0 {
		return nil, errors.New("--flight-max-streams and --flight-byte-rate: want 0 (no cap) or more")
	}
	lim.BytesPerSecond = float64(rate)
	if lim != (flightproxy.Limits{}) {
		c.Quotas = flightproxy.StaticQuotas(lim)
	}
	rules := file.Compress
	if set["flight-compress"] {
		rules = map[string]string{}
		for _, r := range f.compress {
			prefix, codec, ok := strings.Cut(r, "=")
			if !ok || prefix == "" {
				return nil, fmt.Errorf("--flight-compress %q: want PREFIX=CODEC, e.g. reports/=zstd or *=lz4", r)
			}
			rules[prefix] = codec
		}
	}
	if c.Compression, err = compressionRules(rules); err != nil {
		return nil, err
	}
	return c, nil
}

// flightTLS loads the Flight listener's TLS config; nil without a cert.
func flightTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		if caFile != "" {
			return nil, errors.New("--flight-tls-client-ca needs --flight-tls-cert and --flight-tls-key: mTLS runs over TLS")
		}
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("--flight-tls-cert and --flight-tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--flight-tls-cert/--flight-tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--flight-tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--flight-tls-client-ca %s: no PEM certificate in it", caFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// startFlight creates the Flight proxy on the admin server's registry and
// binds its port. run serves it until ctx ends. With a lineage graph, the
// proxy's streams and Flight SQL statements feed it every flush, and once
// more after the proxy's last stream has ended.
func startFlight(c flightproxy.Config, log *slog.Logger, adm *admin.Server, graph *lineage.Graph, flush time.Duration) (run func(context.Context) error, p *flightproxy.Proxy, err error) {
	c.Logger = log
	c.Registerer = adm.Registry()
	var feed *flightproxy.LineageFeed
	if graph != nil {
		feed = flightproxy.NewLineageFeed(graph, log)
		c.Observer = feed
	}
	if p, err = flightproxy.New(c); err != nil {
		return nil, nil, err
	}
	if err := p.Listen(); err != nil {
		return nil, nil, err
	}
	adm.AddReady("flight proxy", p.Ready)
	if feed == nil {
		return p.Serve, p, nil
	}
	if flush <= 0 {
		flush = kafkaproxy.DefaultFlushInterval
	}
	return func(ctx context.Context) error {
		fctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); feed.Run(fctx, flush) }()
		err := p.Serve(ctx)
		stop()
		<-done
		feed.Flush()
		return err
	}, p, nil
}

// kafkaNamespace is the OpenLineage namespace of topics: kafka:// and the
// bootstrap address clients use (none when the Kafka proxy is off): the
// advertised host when one is set, since the bound one may be 0.0.0.0.
func kafkaNamespace(p *kafkaproxy.Proxy, advertiseHost string) string {
	if p == nil {
		return ""
	}
	addr := p.Addr()
	if _, port, err := net.SplitHostPort(addr); err == nil && advertiseHost != "" {
		addr = net.JoinHostPort(advertiseHost, port)
	}
	return "kafka://" + addr
}

// flightNamespace is the OpenLineage namespace of Flight datasets: the
// location Flight clients use, grpc://host:port (see lineage.ExportConfig).
func flightNamespace(p *flightproxy.Proxy) string {
	if p == nil {
		return ""
	}
	return p.Location()
}

// prefixCompression picks the rule of the longest matching dataset prefix.
type prefixCompression map[string]flightproxy.Compression

// FlightCompression implements flightproxy.CompressionRules.
func (r prefixCompression) FlightCompression(dataset string) flightproxy.Compression {
	best, comp := -1, flightproxy.Passthrough
	for prefix, c := range r {
		n := len(prefix)
		if prefix == "*" {
			n = 0
		} else if !strings.HasPrefix(dataset, prefix) {
			continue
		}
		if n > best {
			best, comp = n, c
		}
	}
	return comp
}

func compressionRules(m map[string]string) (flightproxy.CompressionRules, error) {
	if len(m) == 0 {
		return nil, nil
	}
	r := prefixCompression{}
	for prefix, name := range m {
		c, err := flightproxy.ParseCompression(name)
		if err != nil {
			return nil, fmt.Errorf("flight compression for %q: %w", prefix, err)
		}
		r[prefix] = c
	}
	return r, nil
}
