package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/pipemesh/pipemesh/flightproxy"
	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/config"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

const serveAbout = `Run the Kafka proxy. Clients use --kafka-listen as their bootstrap address
(bootstrap.servers); each upstream broker gets a listener of its own on port
--broker-port-base + node id, and every address the brokers return is
rewritten to those listeners. Flags override the keys of --config.

With --flight-upstream it also runs the Arrow Flight proxy on --flight-listen
(or only it, without a Kafka upstream): Flight clients connect there, and every
FlightInfo endpoint is rewritten to lead back through it. See docs/flight.md.

Examples:
  pipemesh serve --kafka-listen 127.0.0.1:19092 --kafka-upstream 127.0.0.1:9092
  kcat -b 127.0.0.1:19092 -L
  pipemesh serve --flight-listen 127.0.0.1:18815 --flight-upstream grpc://127.0.0.1:8815`

// serveFlags are serve's flags; demo and the tests reuse them.
type serveFlags struct {
	configPath     string
	listen         string
	upstream       listFlag
	advertiseHost  string
	brokerPortBase int
	adminListen    string
	maxFrame       string
	idleTimeout    time.Duration
	dialTimeout    time.Duration
	maxInFlight    int
	metaRefresh    time.Duration
	logLevel       string
	logFormat      string
	policyPath     string
	auditLog       string
	auditAllows    bool
	security       securityFlags
	flight         flightFlags
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.configPath, "config", "", "YAML config `file`; see docs/configuration.md")
	fs.StringVar(&f.listen, "kafka-listen", "127.0.0.1:19092", "bootstrap `host:port` Kafka clients connect to")
	fs.Var(&f.upstream, "kafka-upstream", "upstream Kafka bootstrap `host:port` (repeat or comma-separate for several)")
	fs.StringVar(&f.advertiseHost, "advertise-host", "", "`host` clients are told to connect to (default: the host of --kafka-listen)")
	fs.IntVar(&f.brokerPortBase, "broker-port-base", 0, "broker listener `port` = this + node id (default: the --kafka-listen port + 1; -1: OS-assigned, single proxy only)")
	fs.StringVar(&f.adminListen, "admin-listen", admin.DefaultListen, "`host:port` for /healthz, /readyz, /metrics and /debug/pprof/")
	fs.StringVar(&f.maxFrame, "max-frame-bytes", "100MiB", "largest request or response `size` accepted (bytes, or KiB/MiB/GiB)")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", kafkaproxy.DefaultIdleTimeout, "close client connections idle this `long` (like connections.max.idle.ms)")
	fs.DurationVar(&f.dialTimeout, "dial-timeout", kafkaproxy.DefaultDialTimeout, "upstream connect `timeout`")
	fs.IntVar(&f.maxInFlight, "max-in-flight", kafkaproxy.DefaultMaxInFlight, "requests one connection may have outstanding before the proxy stops reading it")
	fs.DurationVar(&f.metaRefresh, "metadata-refresh", kafkaproxy.DefaultMetadataRefresh, "how often the proxy refreshes brokers and topics on its own")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&f.policyPath, "policy", "", "policy `file`: principals (Kafka SASL, Flight basic auth) and Kafka-style ACLs on topics, groups and Flight datasets, reloaded on SIGHUP and on change; see docs/security.md")
	fs.StringVar(&f.auditLog, "audit-log", "", "`file` to append one JSON line per denied request to (- for stderr; default: denials go to the log)")
	fs.BoolVar(&f.auditAllows, "audit-allows", false, "also write allowed decisions to --audit-log")
	f.security.register(fs)
	f.flight.register(fs)
}

// settings is the merged result of defaults, config file and flags.
type settings struct {
	proxy       kafkaproxy.Config
	adminListen string
	logLevel    string
	logFormat   string
	policyPath  string
	auditLog    string
	auditAllows bool
	security    securitySettings
	// flight is the Flight proxy's config; nil when it is off. noKafka
	// turns the Kafka proxy off (only Flight upstreams configured).
	flight   *flightproxy.Config
	noKafka  bool
	onFlight func(*flightproxy.Proxy) // called once the Flight proxy listens
}

// resolve merges the config file (if any) under the flags the user set.
func (f *serveFlags) resolve(fs *flag.FlagSet) (*settings, error) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var file config.File
	if f.configPath != "" {
		cf, err := config.Load(f.configPath)
		if err != nil {
			return nil, err
		}
		file = *cf
	}
	pick := func(flagName string, flagVal, fileVal string) string {
		if set[flagName] || fileVal == "" {
			return flagVal
		}
		return fileVal
	}
	s := &settings{
		adminListen: pick("admin-listen", f.adminListen, file.Admin.Listen),
		logLevel:    pick("log-level", f.logLevel, file.Log.Level),
		logFormat:   pick("log-format", f.logFormat, file.Log.Format),
		policyPath:  pick("policy", f.policyPath, file.Policy),
		auditLog:    pick("audit-log", f.auditLog, file.Audit.Log),
		auditAllows: f.auditAllows || (!set["audit-allows"] && file.Audit.Allows),
	}
	k := file.Kafka
	s.proxy.Listen = pick("kafka-listen", f.listen, k.Listen)
	s.proxy.Upstreams = k.Upstream
	if set["kafka-upstream"] || len(k.Upstream) == 0 {
		s.proxy.Upstreams = f.upstream
	}
	s.proxy.AdvertiseHost = pick("advertise-host", f.advertiseHost, k.AdvertiseHost)
	s.proxy.BrokerPortBase = f.brokerPortBase
	if !set["broker-port-base"] && k.BrokerPortBase != 0 {
		s.proxy.BrokerPortBase = k.BrokerPortBase
	}
	maxFrame, err := config.ParseBytes(f.maxFrame)
	if err != nil {
		return nil, fmt.Errorf("--max-frame-bytes: %w", err)
	}
	if !set["max-frame-bytes"] && k.MaxFrameBytes != 0 {
		maxFrame = int64(k.MaxFrameBytes)
	}
	if maxFrame <= 0 || maxFrame > 1<<31-1 {
		return nil, fmt.Errorf("--max-frame-bytes %d: want 1 byte to 2GiB", maxFrame)
	}
	s.proxy.MaxFrameBytes = int32(maxFrame)
	dur := func(name string, flagVal time.Duration, fileVal config.Duration) time.Duration {
		if set[name] || fileVal == 0 {
			return flagVal
		}
		return time.Duration(fileVal)
	}
	s.proxy.IdleTimeout = dur("idle-timeout", f.idleTimeout, k.IdleTimeout)
	s.proxy.DialTimeout = dur("dial-timeout", f.dialTimeout, k.DialTimeout)
	s.proxy.MetadataRefresh = dur("metadata-refresh", f.metaRefresh, k.MetadataRefresh)
	s.proxy.MaxInFlight = f.maxInFlight
	if !set["max-in-flight"] && k.MaxInFlight != 0 {
		s.proxy.MaxInFlight = k.MaxInFlight
	}
	if s.security, err = f.security.resolve(set, k, os.LookupEnv); err != nil {
		return nil, err
	}
	if s.flight, err = f.flight.resolve(set, file.Flight); err != nil {
		return nil, err
	}
	if len(s.proxy.Upstreams) == 0 && s.flight != nil {
		s.noKafka = true
		return s, nil
	}
	if len(s.proxy.Upstreams) == 0 {
		return nil, errors.New("no upstream Kafka cluster: set --kafka-upstream HOST:PORT (or kafka.upstream in --config); " +
			"for a local one, run 'pipemesh broker' and use --kafka-upstream 127.0.0.1:9092")
	}
	return s, nil
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("serve", "[flags]", serveAbout, stderr)
	var f serveFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s, err := f.resolve(fs)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, s.logLevel, s.logFormat)
	if err != nil {
		return err
	}
	return serve(ctx, s, log, nil)
}

// serve runs the admin server and the proxy until ctx ends. started, when
// not nil, is called once both listen.
func serve(ctx context.Context, s *settings, log *slog.Logger, started func(*kafkaproxy.Proxy, *admin.Server)) error {
	adm := admin.New(log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	closePolicy, err := setupPolicy(ctx, s, log, adm.Registry(), os.Stderr)
	if err != nil {
		return err
	}
	defer closePolicy()
	var runs []func(context.Context) error
	var p *kafkaproxy.Proxy
	if !s.noKafka {
		if err := setupSecurity(ctx, s, log); err != nil {
			return err
		}
		s.proxy.Logger = log
		s.proxy.Registerer = adm.Registry()
		if p, err = kafkaproxy.New(s.proxy); err != nil {
			return err
		}
		if err := p.Listen(); err != nil {
			return err
		}
		adm.AddReady("kafka proxy", p.Ready)
		runs = append(runs, p.Serve)
	}
	if s.flight != nil {
		run, fp, err := startFlight(*s.flight, log, adm)
		if err != nil {
			return err
		}
		runs = append(runs, run)
		if s.onFlight != nil {
			s.onFlight(fp)
		}
	}
	if err := adm.Listen(s.adminListen); err != nil {
		return err
	}
	if started != nil {
		started(p, adm)
	}
	runs = append(runs, adm.Serve)
	var wg sync.WaitGroup
	errs := make([]error, len(runs))
	for i, run := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); defer cancel(); errs[i] = run(ctx) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}
