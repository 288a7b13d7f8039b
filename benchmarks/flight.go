package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pipemesh/pipemesh/internal/arrowipc"
)

// FlightConfig is what `pipemesh bench flight` measures.
type FlightConfig struct {
	// Bytes is the size of the dataset each DoGet and DoPut round moves
	// (IPC bodies, about what is on the wire).
	Bytes int64
	// BatchRows is the rows of each record batch.
	BatchRows int
	// BatchesPerChunk is the batches per endpoint of the embedded service.
	BatchesPerChunk int
	// Streams is how many endpoints a DoGet round reads at once.
	Streams int
	// Compression is the IPC body compression of the data: none, lz4, zstd.
	Compression string
	// ProxyCompress, lz4 or zstd, makes the embedded proxy re-encode the
	// DoGet streams toward the client (serve --flight-compress); proxied
	// rounds then check every batch by value instead of byte for byte.
	// With an external proxy, say how it is configured.
	ProxyCompress string
	// Rounds of each mode, direct and proxied alternating.
	Rounds int
	// Direct and Proxy measure an existing Flight service and a proxy in
	// front of it instead of starting both; ProxyPID is the proxy's pid.
	Direct, Proxy string
	ProxyPID      int
	// Baseline "tcp" adds a third mode: rounds through a plain TCP
	// forwarder (`pipemesh bench tcp-forward`, a child process) in front
	// of the Flight service, the layer-4 reference for the proxy. Empty:
	// none.
	Baseline string
	// BaselineBuffer, when positive, makes the forwarder copy through a
	// user-space buffer of this size instead of splice(2).
	BaselineBuffer int
}

// DefaultFlightConfig is bench flight's defaults: sized for a 2-core machine.
func DefaultFlightConfig() FlightConfig {
	return FlightConfig{Bytes: 512 << 20, BatchRows: 64 << 10, BatchesPerChunk: 16, Streams: 1, Compression: "none", Rounds: 3}
}

// Validate checks c.
func (c FlightConfig) Validate() error {
	switch {
	case c.Bytes < 1<<20:
		return fmt.Errorf("bench flight: --bytes %d: want at least 1MiB", c.Bytes)
	case c.BatchRows < 1 || c.BatchRows > 1<<22:
		return fmt.Errorf("bench flight: --batch-rows %d: want 1 to 4Mi", c.BatchRows)
	case c.Streams < 1 || c.Streams > 64:
		return fmt.Errorf("bench flight: --streams %d: want 1 to 64", c.Streams)
	case c.Rounds < 1 || c.Rounds > 100:
		return fmt.Errorf("bench flight: --rounds %d: want 1 to 100", c.Rounds)
	case (c.Direct == "") != (c.Proxy == ""):
		return errors.New("bench flight: --direct and --proxy go together")
	case c.Baseline != "" && c.Baseline != "tcp":
		return fmt.Errorf("bench flight: --baseline %q: want tcp (a plain TCP forwarder) or none", c.Baseline)
	case c.BaselineBuffer < 0 || c.BaselineBuffer > 64<<20:
		return fmt.Errorf("bench flight: --baseline-buffer %d: want 0 (splice) to 64MiB", c.BaselineBuffer)
	case c.BaselineBuffer > 0 && c.Baseline == "":
		return errors.New("bench flight: --baseline-buffer sizes the forwarder of --baseline tcp; add --baseline tcp")
	}
	switch c.Compression {
	case "none", "lz4", "zstd":
	default:
		return fmt.Errorf("bench flight: --compression %q: want none, lz4 or zstd", c.Compression)
	}
	switch c.ProxyCompress {
	case "", "lz4", "zstd":
	default:
		return fmt.Errorf("bench flight: --proxy-compress %q: want lz4 or zstd", c.ProxyCompress)
	}
	return nil
}

// FlightRound is one measured DoGet and DoPut in one mode.
type FlightRound struct {
	Mode        Mode               `json:"mode"`
	Index       int                `json:"index"`
	GetGBPerSec float64            `json:"get_gb_per_sec"`
	PutGBPerSec float64            `json:"put_gb_per_sec"`
	Bytes       int64              `json:"bytes"`
	CPUSeconds  map[string]float64 `json:"cpu_seconds"` // per role, both phases
	// ProxyCPUPerGB is the proxy's CPU seconds per GB moved (get plus put);
	// GetProxyCPUPerGB and PutProxyCPUPerGB split it by phase.
	ProxyCPUPerGB    float64 `json:"proxy_cpu_per_gb,omitempty"`
	GetProxyCPUPerGB float64 `json:"get_proxy_cpu_per_gb,omitempty"`
	PutProxyCPUPerGB float64 `json:"put_proxy_cpu_per_gb,omitempty"`
	// ForwarderCPUPerGB and its split are the same for the TCP forwarder
	// of baseline rounds.
	ForwarderCPUPerGB    float64 `json:"forwarder_cpu_per_gb,omitempty"`
	GetForwarderCPUPerGB float64 `json:"get_forwarder_cpu_per_gb,omitempty"`
	PutForwarderCPUPerGB float64 `json:"put_forwarder_cpu_per_gb,omitempty"`
	Verified             bool    `json:"verified"`
	Error                string  `json:"error,omitempty"`
}

// FlightReport is a whole bench flight run.
type FlightReport struct {
	Config           FlightConfig  `json:"config"`
	Rounds           []FlightRound `json:"rounds"`
	Get              Compare       `json:"get_gb_per_sec"`
	Put              Compare       `json:"put_gb_per_sec"`
	ProxyCPUPerGB    Stat          `json:"proxy_cpu_per_gb"`
	GetProxyCPUPerGB Stat          `json:"get_proxy_cpu_per_gb"`
	PutProxyCPUPerGB Stat          `json:"put_proxy_cpu_per_gb"`
	// Baseline is the reference forwarder's figures, with --baseline.
	Baseline *FlightBaseline `json:"baseline,omitempty"`
}

// FlightBaseline is what the baseline rounds (a plain TCP forwarder in front
// of the Flight service) measured, set beside direct and proxied.
type FlightBaseline struct {
	Kind string `json:"kind"` // "tcp"
	// BufferBytes is the forwarder's copy buffer; 0 means splice(2).
	BufferBytes int  `json:"buffer_bytes"`
	GetGBPerSec Stat `json:"get_gb_per_sec"`
	PutGBPerSec Stat `json:"put_gb_per_sec"`
	// GetRatio and PutRatio are the baseline median over the direct one:
	// what the second hop alone keeps.
	GetRatio float64 `json:"get_baseline_over_direct"`
	PutRatio float64 `json:"put_baseline_over_direct"`
	// GetProxiedRatio and PutProxiedRatio are the proxied median over the
	// baseline one: above 1, the proxy beats the plain forwarder.
	GetProxiedRatio float64 `json:"get_proxied_over_baseline"`
	PutProxiedRatio float64 `json:"put_proxied_over_baseline"`
	// CPUPerGB is the forwarder's CPU seconds per GB moved, get plus put,
	// and split by phase.
	CPUPerGB    Stat `json:"forwarder_cpu_per_gb"`
	GetCPUPerGB Stat `json:"get_forwarder_cpu_per_gb"`
	PutCPUPerGB Stat `json:"put_forwarder_cpu_per_gb"`
}

// flightData is the benchmark's dataset, encoded once: what every DoPut
// sends and every DoGet must return, message for message.
type flightData struct {
	schema  []byte // the schema message's flatbuffer
	batches []flightMsg
	records []arrow.RecordBatch // the same batches decoded, to check by value
	count   int                 // batches in the dataset: batches are repeated to reach it
	bytes   int64               // header+body bytes of count batches

	rowsPerBatch int
}

type flightMsg struct{ header, body []byte }

// batch is the i-th batch of the dataset.
func (d *flightData) batch(i int) flightMsg { return d.batches[i%len(d.batches)] }

// distinctBatches is how many different batches the dataset cycles through.
const distinctBatches = 8

// newFlightData encodes distinctBatches batches of int64, float64 and
// string columns with arrow-go's IPC writer.
func newFlightData(cfg FlightConfig) (*flightData, error) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "value", Type: arrow.PrimitiveTypes.Float64},
		{Name: "label", Type: arrow.BinaryTypes.String},
	}, nil)
	opts := []ipc.Option{ipc.WithSchema(schema)}
	switch cfg.Compression {
	case "lz4":
		opts = append(opts, ipc.WithLZ4())
	case "zstd":
		opts = append(opts, ipc.WithZstd())
	}
	var buf bytes.Buffer
	var records []arrow.RecordBatch
	w := ipc.NewWriter(&buf, opts...)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for k := range distinctBatches {
		for i := range cfg.BatchRows {
			n := k*cfg.BatchRows + i
			b.Field(0).(*array.Int64Builder).Append(int64(n))
			b.Field(1).(*array.Float64Builder).Append(float64(n) * 1.5)
			b.Field(2).(*array.StringBuilder).Append("label-" + strconv.Itoa(n%10007))
		}
		rec := b.NewRecordBatch()
		records = append(records, rec)
		if err := w.Write(rec); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	d := &flightData{records: records, rowsPerBatch: cfg.BatchRows}
	r := arrowipc.NewReader(&buf, 1<<20, 1<<31-1)
	for {
		meta, h, body, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		meta = bytes.Clone(meta)
		if h.Kind == arrowipc.KindSchema {
			d.schema = meta
			continue
		}
		d.batches = append(d.batches, flightMsg{header: meta, body: bytes.Clone(body)})
	}
	var per int64
	for _, m := range d.batches {
		per += int64(len(m.header) + len(m.body))
	}
	per /= int64(len(d.batches))
	d.count = int(max(cfg.Bytes/per, 1))
	for i := range d.count {
		m := d.batch(i)
		d.bytes += int64(len(m.header) + len(m.body))
	}
	return d, nil
}

// put writes the dataset under path with DoPut.
func (d *flightData) put(ctx context.Context, c flight.Client, path string, ctr *phaseCounters) error {
	s, err := c.DoPut(ctx)
	if err != nil {
		return err
	}
	send := func(fd *flight.FlightData) error {
		if err := s.Send(fd); err != nil {
			return err
		}
		ctr.bytes.Add(int64(len(fd.DataHeader) + len(fd.DataBody)))
		return nil
	}
	first := &flight.FlightData{FlightDescriptor: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"bench", path}}, DataHeader: d.schema}
	err = send(first)
	var fd flight.FlightData
	for i := 0; err == nil && i < d.count; i++ {
		m := d.batch(i)
		fd.DataHeader, fd.DataBody = m.header, m.body
		err = send(&fd)
		ctr.records.Add(int64(d.rowsPerBatch))
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = s.CloseSend()
	}
	for err == nil {
		_, err = s.Recv()
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// get reads every endpoint of the dataset at path, streams at a time, and
// checks each message is the one the dataset has at that place.
//
// The service decides how the dataset is cut into endpoints (the embedded
// one by --batches-per-chunk, an external one by its own settings), so the
// places are found, not assumed: each endpoint's stream must be a run of
// consecutive dataset batches, its first batch says where in the cycle of
// distinct batches the run starts, and once all are read the runs must
// follow one another in endpoint order and add up to the whole dataset.
// That checks every batch against the batch written at its position.
func (d *flightData) get(ctx context.Context, c flight.Client, path string, streams int, byValue bool, ctr *phaseCounters) error {
	fi, err := c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"bench", path}})
	if err != nil {
		return err
	}
	if want := int64(d.count * d.rowsPerBatch); fi.TotalRecords > 0 && fi.TotalRecords != want {
		return fmt.Errorf("GetFlightInfo says %d rows, the dataset written has %d", fi.TotalRecords, want)
	}
	if len(fi.Endpoint) == 0 {
		return errors.New("GetFlightInfo lists no endpoints")
	}
	next := make(chan int, len(fi.Endpoint))
	for i := range fi.Endpoint {
		next <- i
	}
	close(next)
	runs := make([]batchRun, len(fi.Endpoint))
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for w := range streams {
		wg.Go(func() {
			for i := range next {
				get := d.getEndpoint
				if byValue {
					get = d.getEndpointByValue
				}
				run, err := get(ctx, c, fi.Endpoint[i], ctr)
				if err != nil {
					errs[w] = fmt.Errorf("endpoint %d of %d: %w", i, len(fi.Endpoint), err)
					return
				}
				runs[i] = run
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	pos := 0
	for i, r := range runs {
		if r.n > 0 && r.phase != pos%len(d.batches) {
			return fmt.Errorf("endpoint %d of %d starts with a batch that is not batch %d of the dataset: endpoints out of order, or batches lost or repeated",
				i, len(fi.Endpoint), pos)
		}
		pos += r.n
	}
	if pos != d.count {
		return fmt.Errorf("%d batches over %d endpoints, want the %d written", pos, len(fi.Endpoint), d.count)
	}
	return nil
}

// batchRun is what one endpoint returned: n consecutive dataset batches,
// the first of them at a position whose index modulo len(batches) is phase.
type batchRun struct{ n, phase int }

// phaseOf finds which of the distinct batches m is, or -1.
func (d *flightData) phaseOf(header, body []byte) int {
	for k, b := range d.batches {
		if samePadded(header, b.header) && bytes.Equal(body, b.body) {
			return k
		}
	}
	return -1
}

func (d *flightData) getEndpoint(ctx context.Context, c flight.Client, ep *flight.FlightEndpoint, ctr *phaseCounters) (batchRun, error) {
	var run batchRun
	s, err := c.DoGet(ctx, ep.Ticket)
	if err != nil {
		return run, err
	}
	seen := -1 // the schema comes first
	for {
		fd, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return run, err
		}
		ctr.bytes.Add(int64(len(fd.DataHeader) + len(fd.DataBody)))
		switch {
		case seen < 0:
			if !samePadded(fd.DataHeader, d.schema) {
				return run, errors.New("the first message is not the schema that was written")
			}
		case seen >= d.count:
			return run, fmt.Errorf("more than the %d batches written", d.count)
		case seen == 0:
			if run.phase = d.phaseOf(fd.DataHeader, fd.DataBody); run.phase < 0 {
				return run, errors.New("the first batch is none of the batches written")
			}
		default:
			m := d.batch(run.phase + seen)
			if !samePadded(fd.DataHeader, m.header) || !bytes.Equal(fd.DataBody, m.body) {
				return run, fmt.Errorf("batch %d of the endpoint differs from the one written at its place", seen)
			}
		}
		if seen >= 0 {
			ctr.records.Add(int64(d.rowsPerBatch))
		}
		seen++
	}
	run.n = max(seen, 0)
	return run, nil
}

// getEndpointByValue reads one endpoint that a proxy re-encoded and checks
// each batch equals, value for value, the one written at its place. Bytes
// are counted as written (uncompressed equivalents).
func (d *flightData) getEndpointByValue(ctx context.Context, c flight.Client, ep *flight.FlightEndpoint, ctr *phaseCounters) (batchRun, error) {
	var run batchRun
	s, err := c.DoGet(ctx, ep.Ticket)
	if err != nil {
		return run, err
	}
	r, err := flight.NewRecordReader(s)
	if err != nil {
		return run, err
	}
	defer r.Release()
	for r.Next() {
		rec := r.RecordBatch()
		switch {
		case run.n >= d.count:
			return run, fmt.Errorf("more than the %d batches written", d.count)
		case run.n == 0:
			run.phase = slices.IndexFunc(d.records, func(w arrow.RecordBatch) bool { return array.RecordEqual(w, rec) })
			if run.phase < 0 {
				return run, errors.New("the first batch is none of the batches written")
			}
		case !array.RecordEqual(d.records[(run.phase+run.n)%len(d.records)], rec):
			return run, fmt.Errorf("batch %d of the endpoint differs from the one written at its place", run.n)
		}
		m := d.batch(run.phase + run.n)
		ctr.bytes.Add(int64(len(m.header) + len(m.body)))
		ctr.records.Add(int64(d.rowsPerBatch))
		run.n++
	}
	if err := r.Err(); err != nil && !errors.Is(err, io.EOF) {
		return run, err
	}
	return run, nil
}

// samePadded tells whether got is want, allowing the zero padding to 8
// bytes that IPC files add to metadata.
func samePadded(got, want []byte) bool {
	if !bytes.HasPrefix(got, want) || len(got)-len(want) >= 8 {
		return false
	}
	for _, b := range got[len(want):] {
		if b != 0 {
			return false
		}
	}
	return true
}

// FlightRunOptions are how a flight run is carried out.
type FlightRunOptions struct {
	// Binary is the pipemesh binary for the embedded service, proxy and
	// baseline forwarder.
	Binary     string
	Progress   io.Writer
	IsTerminal bool
	Logger     *slog.Logger
}

// roleForwarder is the CPU role of the baseline TCP forwarder.
const roleForwarder = "tcp forwarder"

// flightSetup is the service, proxy and baseline forwarder a run measures.
type flightSetup struct {
	direct, proxy, baseline    string
	server, proxyProc, forward *child
	proxyPID                   int
	dir                        string
}

func (s *flightSetup) close() {
	for _, c := range []*child{s.forward, s.proxyProc, s.server} {
		if c != nil {
			c.stop()
		}
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

func (s *flightSetup) exited() error {
	for _, c := range []*child{s.server, s.proxyProc, s.forward} {
		if c != nil {
			if err := c.exited(); err != nil {
				return err
			}
		}
	}
	return nil
}

// startFlightChild starts binary with args(port) on a free port as the
// process for role and waits until it answers Flight calls there; a port
// taken meanwhile is retried.
func startFlightChild(ctx context.Context, role, binary string, args func(port int) []string, log *slog.Logger) (*child, string, error) {
	var lastErr error
	for range 3 {
		port, err := freePorts(1)
		if err != nil {
			return nil, "", err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c, err := startChild(role, binary, args(port), log)
		if err != nil {
			return nil, "", err
		}
		if lastErr = waitFlight(ctx, c, addr); lastErr == nil {
			return c, addr, nil
		}
		c.stop()
	}
	return nil, "", lastErr
}

// startFlightSetup starts `pipemesh flight-server` and `pipemesh serve
// --flight-upstream` in front of it as child processes.
func startFlightSetup(ctx context.Context, cfg FlightConfig, binary string, log *slog.Logger) (*flightSetup, error) {
	if binary == "" {
		return nil, errors.New("benchmarks: no pipemesh binary to start the Flight service and proxy with")
	}
	dir, err := os.MkdirTemp("", "pipemesh-bench-flight-")
	if err != nil {
		return nil, err
	}
	s := &flightSetup{dir: dir}
	s.server, s.direct, err = startFlightChild(ctx, "flight server", binary, func(port int) []string {
		return []string{"flight-server", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--data-dir", dir,
			"--batches-per-chunk", strconv.Itoa(cfg.BatchesPerChunk), "--chunk-bytes", "2GiB", "--log-level", "warn"}
	}, log)
	if err != nil {
		s.close()
		return nil, err
	}
	s.proxyProc, s.proxy, err = startFlightChild(ctx, "proxy", binary, func(port int) []string {
		args := []string{"serve", "--flight-listen", "127.0.0.1:" + strconv.Itoa(port), "--flight-upstream", "grpc://" + s.direct,
			"--admin-listen", "127.0.0.1:0", "--log-level", "warn"}
		if cfg.ProxyCompress != "" {
			args = append(args, "--flight-compress", "bench/="+cfg.ProxyCompress)
		}
		return args
	}, log)
	if err != nil {
		s.close()
		return nil, err
	}
	s.proxyPID = s.proxyProc.pid()
	return s, nil
}

// startForwarder starts `pipemesh bench tcp-forward` in front of the Flight
// service at s.direct, the baseline of --baseline tcp.
func (s *flightSetup) startForwarder(ctx context.Context, cfg FlightConfig, binary string, log *slog.Logger) error {
	if binary == "" {
		return errors.New("benchmarks: no pipemesh binary to start the baseline TCP forwarder with")
	}
	var err error
	s.forward, s.baseline, err = startFlightChild(ctx, roleForwarder, binary, func(port int) []string {
		return []string{"bench", "tcp-forward", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--upstream", s.direct,
			"--buffer", strconv.Itoa(cfg.BaselineBuffer), "--log-level", "warn"}
	}, log)
	return err
}

// waitFlight waits until addr answers ListActions, or c exits.
func waitFlight(ctx context.Context, c *child, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cl, err := dialBenchFlight(addr)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		if err := c.exited(); err != nil {
			return err
		}
		s, err := cl.ListActions(ctx, &flight.Empty{})
		if err == nil {
			if _, err = s.Recv(); err == nil || errors.Is(err, io.EOF) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("benchmarks: the %s at %s did not answer Flight calls within %s: %v; its last output:\n%s",
				c.role, addr, readyTimeout, err, c.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func dialBenchFlight(addr string) (flight.Client, error) {
	return flight.NewClientWithMiddleware(addr, nil, nil,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)),
		grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(16<<20),
		grpc.WithReadBufferSize(256<<10), grpc.WithWriteBufferSize(256<<10))
}

// RunFlight measures DoGet and DoPut direct against proxied (and through
// the baseline forwarder with cfg.Baseline), rounds alternating, checking
// every batch of every round.
func RunFlight(ctx context.Context, cfg FlightConfig, opts FlightRunOptions) (*FlightReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	data, err := newFlightData(cfg)
	if err != nil {
		return nil, fmt.Errorf("benchmarks: encoding the dataset: %w", err)
	}
	setup := &flightSetup{direct: cfg.Direct, proxy: cfg.Proxy, proxyPID: cfg.ProxyPID}
	if cfg.Direct == "" {
		if setup, err = startFlightSetup(ctx, cfg, opts.Binary, log); err != nil {
			return nil, err
		}
	}
	defer setup.close()
	modes := []Mode{Direct, Proxied}
	addrs := map[Mode]string{Direct: setup.direct, Proxied: setup.proxy}
	if cfg.Baseline != "" {
		if err := setup.startForwarder(ctx, cfg, opts.Binary, log); err != nil {
			return nil, err
		}
		modes = []Mode{Direct, Baseline, Proxied}
		addrs[Baseline] = setup.baseline
	}
	clients := map[Mode]flight.Client{}
	for _, mode := range modes {
		c, err := dialBenchFlight(addrs[mode])
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[mode] = c
	}
	var sources []cpuSource
	for role, pid := range map[string]int{roleProxy: setup.proxyPID, roleForwarder: setup.forward.pidOrZero(), "flight server": setup.server.pidOrZero()} {
		if pid != 0 {
			sources = append(sources, cpuSource{role: role, read: func() cpuReading { return procCPU(pid) }})
		}
	}
	sources = append(sources, cpuSource{role: roleClients, read: selfCPU})

	// Phases: the shared dataset's DoPut, then a get and a put per round
	// and mode, warm-up rounds included.
	pr := newProgress(opts.Progress, opts.IsTerminal, 1+2*len(modes)*(cfg.Rounds+1))
	defer pr.close()
	pr.note("dataset: %d batches of %d rows, %.2f GB, compression %s", data.count, cfg.BatchRows, float64(data.bytes)/1e9, cfg.Compression)
	ctr := &phaseCounters{}
	pr.begin("setup", "put", int64(data.count*data.rowsPerBatch), 0, ctr)
	if err := data.put(ctx, clients[Direct], "data", ctr); err != nil {
		return nil, fmt.Errorf("benchmarks: writing the dataset: %w", err)
	}
	pr.end("dataset written")

	rep := &FlightReport{Config: cfg}
	for i := -1; i < cfg.Rounds; i++ { // round -1 is the warm-up, left out
		for _, mode := range modes {
			if err := setup.exited(); err != nil {
				return rep, err
			}
			rd := runFlightRound(ctx, cfg, data, clients[mode], mode, i, sources, pr)
			if i >= 0 {
				rep.Rounds = append(rep.Rounds, rd)
			}
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
		}
	}
	rep.summarize()
	for _, rd := range rep.Rounds {
		if !rd.Verified {
			return rep, fmt.Errorf("benchmarks: %w: %s round %d: %s", ErrRoundsFailed, rd.Mode, rd.Index, rd.Error)
		}
	}
	return rep, nil
}

// pidOrZero is c's process id, or 0 when c was not started.
func (c *child) pidOrZero() int {
	if c == nil {
		return 0
	}
	return c.pid()
}

// modeLabel names a mode in progress lines.
func modeLabel(m Mode) string {
	if m == Baseline {
		return "tcp-forward"
	}
	return string(m)
}

func runFlightRound(ctx context.Context, cfg FlightConfig, data *flightData, c flight.Client, mode Mode, i int, sources []cpuSource, pr *progress) FlightRound {
	rd := FlightRound{Mode: mode, Index: i}
	label := fmt.Sprintf("%s round %d", modeLabel(mode), i+1)
	if i < 0 {
		label = modeLabel(mode) + " warm-up"
	}
	// The process between the clients and the service, whose CPU per GB
	// the round reports.
	middle := map[Mode]string{Proxied: roleProxy, Baseline: roleForwarder}[mode]
	win := newCPUWindow(sources, nil)

	ctr := &phaseCounters{}
	pr.begin(label, "get", int64(data.count*data.rowsPerBatch), 0, ctr)
	win.begin()
	byValue := mode == Proxied && cfg.ProxyCompress != ""
	err := data.get(ctx, c, "data", cfg.Streams, byValue, ctr)
	win.end()
	getWall := win.wall
	getMiddleCPU := win.seconds[middle]
	if err != nil {
		rd.Error = "DoGet: " + err.Error()
		pr.end("DoGet failed: " + err.Error())
		return rd
	}
	rd.GetGBPerSec = float64(data.bytes) / 1e9 / getWall.Seconds()
	check := "every batch checked byte for byte"
	if byValue {
		check = "re-encoded by the proxy (" + cfg.ProxyCompress + "), every batch checked value for value"
	}
	pr.end(fmt.Sprintf("DoGet %.2f GB/s, %s", rd.GetGBPerSec, check))

	ctr = &phaseCounters{}
	path := fmt.Sprintf("put-%s-%d", mode, i+1)
	pr.begin(label, "put", int64(data.count*data.rowsPerBatch), 0, ctr)
	win.begin()
	err = data.put(ctx, c, path, ctr)
	win.end()
	if err == nil {
		// Read it back (unmeasured) to check the put stored every batch.
		err = data.get(ctx, c, path, cfg.Streams, byValue, &phaseCounters{})
	}
	if s, derr := c.DoAction(ctx, &flight.Action{Type: "delete", Body: []byte("bench/" + path)}); derr == nil {
		for derr == nil {
			_, derr = s.Recv()
		}
	}
	if err != nil {
		rd.Error = "DoPut: " + err.Error()
		pr.end("DoPut failed: " + err.Error())
		return rd
	}
	rd.PutGBPerSec = float64(data.bytes) / 1e9 / (win.wall - getWall).Seconds()
	rd.Bytes = 2 * data.bytes
	rd.CPUSeconds = win.seconds
	if s, ok := win.seconds[middle]; ok && middle != "" {
		gb := float64(data.bytes) / 1e9
		all, get, put := s/(2*gb), getMiddleCPU/gb, (s-getMiddleCPU)/gb
		if mode == Proxied {
			rd.ProxyCPUPerGB, rd.GetProxyCPUPerGB, rd.PutProxyCPUPerGB = all, get, put
		} else {
			rd.ForwarderCPUPerGB, rd.GetForwarderCPUPerGB, rd.PutForwarderCPUPerGB = all, get, put
		}
	}
	rd.Verified = true
	pr.end(fmt.Sprintf("DoPut %.2f GB/s, read back and checked", rd.PutGBPerSec))
	return rd
}

func (r *FlightReport) summarize() {
	get, put := map[Mode][]float64{}, map[Mode][]float64{}
	var cpu, getCPU, putCPU [2][]float64 // proxy, forwarder
	for _, rd := range r.Rounds {
		if !rd.Verified {
			continue
		}
		get[rd.Mode] = append(get[rd.Mode], rd.GetGBPerSec)
		put[rd.Mode] = append(put[rd.Mode], rd.PutGBPerSec)
		if rd.ProxyCPUPerGB > 0 {
			cpu[0] = append(cpu[0], rd.ProxyCPUPerGB)
			getCPU[0] = append(getCPU[0], rd.GetProxyCPUPerGB)
			putCPU[0] = append(putCPU[0], rd.PutProxyCPUPerGB)
		}
		if rd.ForwarderCPUPerGB > 0 {
			cpu[1] = append(cpu[1], rd.ForwarderCPUPerGB)
			getCPU[1] = append(getCPU[1], rd.GetForwarderCPUPerGB)
			putCPU[1] = append(putCPU[1], rd.PutForwarderCPUPerGB)
		}
	}
	r.Get, r.Put = compareModes(get, Direct, Proxied), compareModes(put, Direct, Proxied)
	r.ProxyCPUPerGB, r.GetProxyCPUPerGB, r.PutProxyCPUPerGB = statOf(cpu[0]), statOf(getCPU[0]), statOf(putCPU[0])
	if r.Config.Baseline == "" {
		return
	}
	b := &FlightBaseline{Kind: r.Config.Baseline, BufferBytes: r.Config.BaselineBuffer,
		CPUPerGB: statOf(cpu[1]), GetCPUPerGB: statOf(getCPU[1]), PutCPUPerGB: statOf(putCPU[1])}
	g, p := compareModes(get, Direct, Baseline), compareModes(put, Direct, Baseline)
	b.GetGBPerSec, b.PutGBPerSec, b.GetRatio, b.PutRatio = g.Proxied, p.Proxied, g.Ratio, p.Ratio
	b.GetProxiedRatio = compareModes(get, Baseline, Proxied).Ratio
	b.PutProxiedRatio = compareModes(put, Baseline, Proxied).Ratio
	r.Baseline = b
}

// compareModes sets mode b's figures beside mode a's: a in Direct, b in
// Proxied, Ratio the median of b over the median of a.
func compareModes(v map[Mode][]float64, a, b Mode) Compare {
	c := Compare{Direct: statOf(v[a]), Proxied: statOf(v[b])}
	if c.Direct.Median > 0 {
		c.Ratio = c.Proxied.Median / c.Direct.Median
	}
	return c
}

// WriteFlightTable writes the run's summary as a text table.
func WriteFlightTable(w io.Writer, r *FlightReport) error {
	var err error
	if r.Baseline == nil {
		err = writeFlightPairTable(w, r)
	} else {
		err = writeFlightBaselineTable(w, r)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "\nmedians of %d rounds per mode, alternated; %.2f GB per phase, %s, %d stream(s); every batch checked\n",
		r.Config.Rounds, float64(r.Config.Bytes)/1e9, r.Config.Compression, r.Config.Streams)
	if err == nil && r.Baseline != nil {
		how := "splice(2)"
		if r.Baseline.BufferBytes > 0 {
			how = fmt.Sprintf("a %d-byte read/write buffer", r.Baseline.BufferBytes)
		}
		_, err = fmt.Fprintf(w, "tcp-forward: a plain TCP forwarder (pipemesh bench tcp-forward, %s) in front of the Flight service;\n"+
			"CPU-s per GB: the forwarder's or the proxy's own CPU seconds per GB moved\n", how)
	}
	if err == nil && r.Config.ProxyCompress != "" {
		_, err = fmt.Fprintf(w, "the proxy re-encoded proxied DoGet streams with %s; GB/s counts the bytes as written\n", r.Config.ProxyCompress)
	}
	return err
}

// withSpread formats a median with its spread.
func withSpread(s Stat) string { return sig3(s.Median) + " (" + spreadText(s) + ")" }

// writeFlightPairTable is the table of a run without a baseline: direct
// and proxied.
func writeFlightPairTable(w io.Writer, r *FlightReport) error {
	row := func(name string, c Compare) string {
		return fmt.Sprintf("%-22s %-18s %-18s %s\n", name, withSpread(c.Direct), withSpread(c.Proxied), ratioText(c))
	}
	cpuRow := func(name string, s Stat) string {
		return fmt.Sprintf("%-22s %-18s %s\n", name, "", cpuPerGBText(s))
	}
	_, err := fmt.Fprintf(w, "%-22s %-18s %-18s %s\n%s%s%s%s%s",
		"", "direct", "proxied", "proxied/direct",
		row("DoGet GB/s", r.Get), row("DoPut GB/s", r.Put),
		cpuRow("proxy CPU-s per GB", r.ProxyCPUPerGB),
		cpuRow("  DoGet", r.GetProxyCPUPerGB), cpuRow("  DoPut", r.PutProxyCPUPerGB))
	return err
}

// writeFlightBaselineTable is the table of a run with the tcp-forward
// baseline: direct, tcp-forward and proxied, and the ratios between them.
func writeFlightBaselineTable(w io.Writer, r *FlightReport) error {
	b := r.Baseline
	const head = "%-14s %-16s %-16s %-16s %-11s %-15s %s\n"
	row := func(name string, direct, base, prox Stat, baseRatio, proxRatio, proxBase float64) string {
		ratio := func(num, den Stat, v float64) string {
			return ratioText(Compare{Direct: den, Proxied: num, Ratio: v})
		}
		return fmt.Sprintf(head, name, withSpread(direct), withSpread(base), withSpread(prox),
			ratio(base, direct, baseRatio), ratio(prox, direct, proxRatio), ratio(prox, base, proxBase))
	}
	cpuRow := func(name string, base, prox Stat) string {
		ratio := "n/a"
		if base.Median > 0 && prox.Median > 0 {
			ratio = sig3(prox.Median / base.Median)
		}
		return fmt.Sprintf(head, name, "", cpuPerGBText(base), cpuPerGBText(prox), "", "", ratio)
	}
	_, err := fmt.Fprint(w,
		fmt.Sprintf(head, "", "direct", "tcp-forward", "proxied", "tcp/direct", "proxied/direct", "proxied/tcp"),
		row("DoGet GB/s", r.Get.Direct, b.GetGBPerSec, r.Get.Proxied, b.GetRatio, r.Get.Ratio, b.GetProxiedRatio),
		row("DoPut GB/s", r.Put.Direct, b.PutGBPerSec, r.Put.Proxied, b.PutRatio, r.Put.Ratio, b.PutProxiedRatio),
		cpuRow("CPU-s per GB", b.CPUPerGB, r.ProxyCPUPerGB),
		cpuRow("  DoGet", b.GetCPUPerGB, r.GetProxyCPUPerGB),
		cpuRow("  DoPut", b.PutCPUPerGB, r.PutProxyCPUPerGB))
	return err
}
