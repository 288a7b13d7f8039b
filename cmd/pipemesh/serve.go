package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pipemesh/pipemesh/flightproxy"
	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/config"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/lineage"
)

const serveAbout = `Run the Kafka proxy. Clients use --kafka-listen as their bootstrap address
(bootstrap.servers); each upstream broker gets a listener of its own on port
--broker-port-base + node id, and every address the brokers return is
rewritten to those listeners. Flags override the keys of --config.

With --flight-upstream it also runs the Arrow Flight proxy on --flight-listen
(or only it, without a Kafka upstream): Flight clients connect there, and every
FlightInfo endpoint is rewritten to lead back through it. See docs/flight.md.
Per-topic recompression of produced batches and quotas (throttled the Kafka
way, with throttle_time_ms) are set in the --policy file, under compression:
and quotas:, and follow its reloads; --config still accepts them (then fixed
until restart; not in both files). The memory budget is --config's limits:
(docs/compression.md, docs/quotas.md).

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
	telemetry      telemetryFlags
}

// telemetryFlags are the observe stage's and lineage's flags.
type telemetryFlags struct {
	enabled        bool
	flush          time.Duration
	dataDir        string
	retention      time.Duration
	olURL          string
	olEvery        time.Duration
	olNamespace    string
	maxLabelValues int
	labelAllow     listFlag
}

func (f *telemetryFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.enabled, "telemetry", true, "count bytes and records per topic, client and group (Kafka), and per job and dataset (Flight), and build the lineage graph from both (false: only connection and request counters, and pipemesh_flight_* metrics)")
	fs.DurationVar(&f.flush, "telemetry-flush", kafkaproxy.DefaultFlushInterval, "how often counters go to /metrics and the lineage graph")
	fs.StringVar(&f.dataDir, "data-dir", "", "`dir` for the lineage graph's file (lineage.db), so it survives restarts (default: memory only)")
	fs.DurationVar(&f.retention, "lineage-retention", lineage.DefaultRetention, "forget lineage edges not seen for this `long`")
	fs.StringVar(&f.olURL, "openlineage-url", "", "push OpenLineage run events to this `URL` (for example Marquez: http://marquez:5000/api/v1/lineage)")
	fs.DurationVar(&f.olEvery, "openlineage-every", lineage.DefaultPushEvery, "how often to push to --openlineage-url")
	fs.StringVar(&f.olNamespace, "openlineage-namespace", lineage.DefaultJobNamespace, "OpenLineage job `namespace` for the applications, groups and jobs pipemesh sees")
	fs.IntVar(&f.maxLabelValues, "metrics-max-label-values", kafkaproxy.DefaultMaxLabelValues, "distinct values each of the topic, principal, client_id, group and (Flight) dataset labels may take before the rest read \"other\"")
	fs.Var(&f.labelAllow, "metrics-label-allow", "`label=value` that always keeps its own series, past the cap (repeat or comma-separate; labels: topic, principal, client_id, group, dataset)")
}

// fromFile takes the config file's telemetry: and lineage: keys for the
// flags the user did not set.
func (f *telemetryFlags) fromFile(set map[string]bool, file *config.File) {
	t, l := file.Telemetry, file.Lineage
	if !set["telemetry"] && t.Enabled != nil {
		f.enabled = *t.Enabled
	}
	if !set["telemetry-flush"] && t.Flush != 0 {
		f.flush = time.Duration(t.Flush)
	}
	if !set["metrics-max-label-values"] && t.MaxLabelValues != 0 {
		f.maxLabelValues = t.MaxLabelValues
	}
	if !set["metrics-label-allow"] && len(t.LabelAllow) > 0 {
		f.labelAllow = t.LabelAllow
	}
	if !set["data-dir"] && l.DataDir != "" {
		f.dataDir = l.DataDir
	}
	if !set["lineage-retention"] && l.Retention != 0 {
		f.retention = time.Duration(l.Retention)
	}
	if !set["openlineage-url"] && l.OpenLineage.URL != "" {
		f.olURL = l.OpenLineage.URL
	}
	if !set["openlineage-every"] && l.OpenLineage.Every != 0 {
		f.olEvery = time.Duration(l.OpenLineage.Every)
	}
	if !set["openlineage-namespace"] && l.OpenLineage.Namespace != "" {
		f.olNamespace = l.OpenLineage.Namespace
	}
}

// telemetrySettings is the resolved telemetry and lineage setup.
type telemetrySettings struct {
	lineage     lineage.Config
	enabled     bool
	olURL       string
	olEvery     time.Duration
	olNamespace string
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
	fs.StringVar(&f.policyPath, "policy", "", "policy `file`: principals (Kafka SASL, Flight basic auth), Kafka-style ACLs on topics, groups and Flight datasets, compression and quota rules, reloaded on SIGHUP and on change; see docs/security.md")
	fs.StringVar(&f.auditLog, "audit-log", "", "`file` to append one JSON line per denied request to (- for stderr; default: denials go to the log)")
	fs.BoolVar(&f.auditAllows, "audit-allows", false, "also write allowed decisions to --audit-log")
	f.security.register(fs)
	f.flight.register(fs)
	f.telemetry.register(fs)
}

// settings is the merged result of defaults, config file and flags.
type settings struct {
	proxy       kafkaproxy.Config
	adminListen string
	logLevel    string
	logFormat   string
	policyPath  string
	rulesIn     string // the config file, when it sets compression or quotas
	auditLog    string
	auditAllows bool
	security    securitySettings
	// flight is the Flight proxy's config; nil when it is off. noKafka
	// turns the Kafka proxy off (only Flight upstreams configured).
	flight    *flightproxy.Config
	noKafka   bool
	onFlight  func(*flightproxy.Proxy) // called once the Flight proxy listens
	telemetry telemetrySettings
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
	f.telemetry.fromFile(set, &file)
	if err := f.telemetry.resolve(s); err != nil {
		return nil, err
	}
	applyRules(s, &file, f.configPath)
	if s.flight, err = f.flight.resolve(set, file.Flight); err != nil {
		return nil, err
	}
	if s.flight != nil {
		// The Flight metrics' principal and dataset labels take the same cap.
		s.flight.MaxLabelValues = s.proxy.Telemetry.MaxLabelValues
		s.flight.LabelAllow = s.proxy.Telemetry.LabelAllow
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

func (f *telemetryFlags) resolve(s *settings) error {
	t := &s.telemetry
	t.enabled = f.enabled
	s.proxy.Telemetry.Disabled = !f.enabled
	if f.flush <= 0 || f.retention <= 0 || f.olEvery <= 0 {
		return errors.New("--telemetry-flush, --lineage-retention and --openlineage-every must be positive durations")
	}
	if f.maxLabelValues < 1 {
		return fmt.Errorf("--metrics-max-label-values %d: want at least 1", f.maxLabelValues)
	}
	s.proxy.Telemetry.FlushInterval = f.flush
	s.proxy.Telemetry.MaxLabelValues = f.maxLabelValues
	for _, kv := range f.labelAllow {
		label, value, ok := strings.Cut(kv, "=")
		switch label {
		case "topic", "principal", "client_id", "group", "dataset":
		default:
			ok = false
		}
		if !ok || value == "" {
			return fmt.Errorf("--metrics-label-allow %q: want LABEL=VALUE with LABEL one of topic, principal, client_id, group, dataset", kv)
		}
		if s.proxy.Telemetry.LabelAllow == nil {
			s.proxy.Telemetry.LabelAllow = map[string][]string{}
		}
		s.proxy.Telemetry.LabelAllow[label] = append(s.proxy.Telemetry.LabelAllow[label], value)
	}
	t.lineage = lineage.Config{DataDir: f.dataDir, Retention: f.retention}
	if f.olURL != "" {
		u, err := url.Parse(f.olURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--openlineage-url %q: want an http(s) URL such as http://marquez:5000/api/v1/lineage", f.olURL)
		}
		if !f.enabled {
			return errors.New("--openlineage-url needs --telemetry (lineage comes from the observe stage)")
		}
	}
	t.olURL, t.olEvery, t.olNamespace = f.olURL, f.olEvery, f.olNamespace
	return nil
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
	var graph *lineage.Graph
	if s.telemetry.enabled {
		lc := s.telemetry.lineage
		lc.Logger = log
		if graph, err = lineage.Open(lc); err != nil {
			return err
		}
		if lc.DataDir == "" {
			log.Info("lineage graph kept in memory only; set --data-dir to keep it across restarts")
		}
	}
	var runs []func(context.Context) error
	var p *kafkaproxy.Proxy
	if !s.noKafka {
		if err := setupSecurity(ctx, s, log); err != nil {
			closeGraph(graph, log)
			return err
		}
		s.proxy.Logger = log
		s.proxy.Registerer = adm.Registry()
		if graph != nil {
			s.proxy.Telemetry.Lineage = graph
		}
		if p, err = kafkaproxy.New(s.proxy); err != nil {
			closeGraph(graph, log)
			return err
		}
		if err := p.Listen(); err != nil {
			closeGraph(graph, log)
			return err
		}
		adm.AddReady("kafka proxy", p.Ready)
		runs = append(runs, p.Serve)
	}
	var fp *flightproxy.Proxy
	if s.flight != nil {
		var run func(context.Context) error
		run, fp, err = startFlight(*s.flight, log, adm, graph, s.proxy.Telemetry.FlushInterval)
		if err != nil {
			closeGraph(graph, log)
			return err
		}
		runs = append(runs, run)
		if s.onFlight != nil {
			s.onFlight(fp)
		}
	}
	if err := adm.Listen(s.adminListen); err != nil {
		closeGraph(graph, log)
		return err
	}
	if graph != nil {
		export := lineage.NewExporter(graph, lineage.ExportConfig{
			Namespace: s.telemetry.olNamespace, KafkaNamespace: kafkaNamespace(p, s.proxy.AdvertiseHost), FlightNamespace: flightNamespace(fp),
			URL: s.telemetry.olURL, Every: s.telemetry.olEvery, Logger: log,
		})
		graph.Register(adm)
		export.Register(adm)
		lineage.RegisterWebView(adm)
		// The graph outlives the proxy: it is saved (and pushed) after
		// the proxy's last flush, so the file holds everything counted.
		lctx, lcancel := context.WithCancel(context.Background())
		var lwg sync.WaitGroup
		lwg.Add(2)
		go func() { defer lwg.Done(); graph.Run(lctx) }()
		go func() { defer lwg.Done(); export.Run(lctx) }()
		defer func() {
			lcancel()
			lwg.Wait()
			closeGraph(graph, log)
		}()
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

// closeGraph saves and closes the lineage graph, if there is one.
func closeGraph(g *lineage.Graph, log *slog.Logger) {
	if g == nil {
		return
	}
	if err := g.Close(); err != nil {
		log.Error("saving the lineage graph at shutdown failed; the last seconds of lineage are lost", "err", err)
	}
}
