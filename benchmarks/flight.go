package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
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
	Verified         bool    `json:"verified"`
	Error            string  `json:"error,omitempty"`
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
func (d *flightData) get(ctx context.Context, c flight.Client, path string, streams, perChunk int, byValue bool, ctr *phaseCounters) error {
	fi, err := c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"bench", path}})
	if err != nil {
		return err
	}
	if want := (d.count + perChunk - 1) / perChunk; len(fi.Endpoint) != want {
		return fmt.Errorf("%d endpoints, want %d", len(fi.Endpoint), want)
	}
	next := make(chan int, len(fi.Endpoint))
	for i := range fi.Endpoint {
		next <- i
	}
	close(next)
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for w := range streams {
		wg.Go(func() {
			for i := range next {
				get := d.getEndpoint
				if byValue {
					get = d.getEndpointByValue
				}
				if err := get(ctx, c, fi.Endpoint[i], i*perChunk, min(perChunk, d.count-i*perChunk), ctr); err != nil {
					errs[w] = fmt.Errorf("endpoint %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (d *flightData) getEndpoint(ctx context.Context, c flight.Client, ep *flight.FlightEndpoint, first, n int, ctr *phaseCounters) error {
	s, err := c.DoGet(ctx, ep.Ticket)
	if err != nil {
		return err
	}
	seen := -1 // the schema comes first
	for {
		fd, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		ctr.bytes.Add(int64(len(fd.DataHeader) + len(fd.DataBody)))
		if seen < 0 {
			if !samePadded(fd.DataHeader, d.schema) {
				return errors.New("the first message is not the schema that was written")
			}
		} else {
			if seen >= n {
				return fmt.Errorf("more than the %d batches written", n)
			}
			m := d.batch(first + seen)
			if !samePadded(fd.DataHeader, m.header) || !bytes.Equal(fd.DataBody, m.body) {
				return fmt.Errorf("batch %d differs from the one written", first+seen)
			}
			ctr.records.Add(int64(d.rowsPerBatch))
		}
		seen++
	}
	if seen != n {
		return fmt.Errorf("%d batches, want %d", max(seen, 0), n)
	}
	return nil
}

// getEndpointByValue reads one endpoint that a proxy re-encoded and checks
// each batch equals, value for value, the one written at its place. Bytes
// are counted as written (uncompressed equivalents).
func (d *flightData) getEndpointByValue(ctx context.Context, c flight.Client, ep *flight.FlightEndpoint, first, n int, ctr *phaseCounters) error {
	s, err := c.DoGet(ctx, ep.Ticket)
	if err != nil {
		return err
	}
	r, err := flight.NewRecordReader(s)
	if err != nil {
		return err
	}
	defer r.Release()
	seen := 0
	for r.Next() {
		if seen >= n {
			return fmt.Errorf("more than the %d batches written", n)
		}
		i := first + seen
		if !array.RecordEqual(d.records[i%len(d.records)], r.RecordBatch()) {
			return fmt.Errorf("batch %d differs from the one written", i)
		}
		m := d.batch(i)
		ctr.bytes.Add(int64(len(m.header) + len(m.body)))
		ctr.records.Add(int64(d.rowsPerBatch))
		seen++
	}
	if err := r.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if seen != n {
		return fmt.Errorf("%d batches, want %d", seen, n)
	}
	return nil
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
	Binary     string // the pipemesh binary for the embedded service and proxy
	Progress   io.Writer
	IsTerminal bool
	Logger     *slog.Logger
}

// flightSetup is the service and proxy a run measures.
type flightSetup struct {
	direct, proxy     string
	server, proxyProc *child
	proxyPID          int
	dir               string
}

func (s *flightSetup) close() {
	if s.proxyProc != nil {
		s.proxyProc.stop()
	}
	if s.server != nil {
		s.server.stop()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

func (s *flightSetup) exited() error {
	for _, c := range []*child{s.server, s.proxyProc} {
		if c != nil {
			if err := c.exited(); err != nil {
				return err
			}
		}
	}
	return nil
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
	start := func(role string, args func(port int) []string) (*child, string, error) {
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
	s.server, s.direct, err = start("flight server", func(port int) []string {
		return []string{"flight-server", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--data-dir", dir,
			"--batches-per-chunk", strconv.Itoa(cfg.BatchesPerChunk), "--chunk-bytes", "2GiB", "--log-level", "warn"}
	})
	if err != nil {
		s.close()
		return nil, err
	}
	s.proxyProc, s.proxy, err = start("proxy", func(port int) []string {
		args := []string{"serve", "--flight-listen", "127.0.0.1:" + strconv.Itoa(port), "--flight-upstream", "grpc://" + s.direct,
			"--admin-listen", "127.0.0.1:0", "--log-level", "warn"}
		if cfg.ProxyCompress != "" {
			args = append(args, "--flight-compress", "bench/="+cfg.ProxyCompress)
		}
		return args
	})
	if err != nil {
		s.close()
		return nil, err
	}
	s.proxyPID = s.proxyProc.pid()
	return s, nil
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

// RunFlight measures DoGet and DoPut direct against proxied, rounds
// alternating, checking every batch of every round.
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
	clients := map[Mode]flight.Client{}
	for mode, addr := range map[Mode]string{Direct: setup.direct, Proxied: setup.proxy} {
		c, err := dialBenchFlight(addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[mode] = c
	}
	var sources []cpuSource
	if setup.proxyPID != 0 {
		pid := setup.proxyPID
		sources = append(sources, cpuSource{role: roleProxy, read: func() cpuReading { return procCPU(pid) }})
	}
	if setup.server != nil {
		pid := setup.server.pid()
		sources = append(sources, cpuSource{role: "flight server", read: func() cpuReading { return procCPU(pid) }})
	}
	sources = append(sources, cpuSource{role: roleClients, read: selfCPU})

	// Phases: the shared dataset's DoPut, then a get and a put per round,
	// warm-up rounds included.
	pr := newProgress(opts.Progress, opts.IsTerminal, 1+4*(cfg.Rounds+1))
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
		for _, mode := range []Mode{Direct, Proxied} {
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

func runFlightRound(ctx context.Context, cfg FlightConfig, data *flightData, c flight.Client, mode Mode, i int, sources []cpuSource, pr *progress) FlightRound {
	rd := FlightRound{Mode: mode, Index: i}
	label := fmt.Sprintf("%s round %d", mode, i+1)
	if i < 0 {
		label = string(mode) + " warm-up"
	}
	win := newCPUWindow(sources, nil)

	ctr := &phaseCounters{}
	pr.begin(label, "get", int64(data.count*data.rowsPerBatch), 0, ctr)
	win.begin()
	byValue := mode == Proxied && cfg.ProxyCompress != ""
	err := data.get(ctx, c, "data", cfg.Streams, cfg.BatchesPerChunk, byValue, ctr)
	win.end()
	getWall := win.wall
	getProxyCPU := win.seconds[roleProxy]
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
		err = data.get(ctx, c, path, cfg.Streams, cfg.BatchesPerChunk, byValue, &phaseCounters{})
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
	if mode == Proxied {
		if s, ok := win.seconds[roleProxy]; ok {
			gb := float64(data.bytes) / 1e9
			rd.ProxyCPUPerGB = s / (2 * gb)
			rd.GetProxyCPUPerGB = getProxyCPU / gb
			rd.PutProxyCPUPerGB = (s - getProxyCPU) / gb
		}
	}
	rd.Verified = true
	pr.end(fmt.Sprintf("DoPut %.2f GB/s, read back and checked", rd.PutGBPerSec))
	return rd
}

func (r *FlightReport) summarize() {
	var get, put [2][]float64
	var cpu, getCPU, putCPU []float64
	for _, rd := range r.Rounds {
		if !rd.Verified {
			continue
		}
		k := 0
		if rd.Mode == Proxied {
			k = 1
			if rd.ProxyCPUPerGB > 0 {
				cpu = append(cpu, rd.ProxyCPUPerGB)
				getCPU = append(getCPU, rd.GetProxyCPUPerGB)
				putCPU = append(putCPU, rd.PutProxyCPUPerGB)
			}
		}
		get[k] = append(get[k], rd.GetGBPerSec)
		put[k] = append(put[k], rd.PutGBPerSec)
	}
	cmp := func(v [2][]float64) Compare {
		c := Compare{Direct: statOf(v[0]), Proxied: statOf(v[1])}
		if c.Direct.Median > 0 {
			c.Ratio = c.Proxied.Median / c.Direct.Median
		}
		return c
	}
	r.Get, r.Put, r.ProxyCPUPerGB = cmp(get), cmp(put), statOf(cpu)
	r.GetProxyCPUPerGB, r.PutProxyCPUPerGB = statOf(getCPU), statOf(putCPU)
}

// WriteFlightTable writes the run's summary as a text table.
func WriteFlightTable(w io.Writer, r *FlightReport) error {
	row := func(name string, c Compare) string {
		return fmt.Sprintf("%-22s %-18s %-18s %s\n", name,
			sig3(c.Direct.Median)+" ("+spreadText(c.Direct)+")", sig3(c.Proxied.Median)+" ("+spreadText(c.Proxied)+")", ratioText(c))
	}
	cpuRow := func(name string, s Stat) string {
		return fmt.Sprintf("%-22s %-18s %s\n", name, "", cpuPerGBText(s))
	}
	_, err := fmt.Fprintf(w, "%-22s %-18s %-18s %s\n%s%s%s%s%s",
		"", "direct", "proxied", "proxied/direct",
		row("DoGet GB/s", r.Get), row("DoPut GB/s", r.Put),
		cpuRow("proxy CPU-s per GB", r.ProxyCPUPerGB),
		cpuRow("  DoGet", r.GetProxyCPUPerGB), cpuRow("  DoPut", r.PutProxyCPUPerGB))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "\nmedians of %d rounds per mode, alternated; %.2f GB per phase, %s, %d stream(s); every batch checked\n",
		r.Config.Rounds, float64(r.Config.Bytes)/1e9, r.Config.Compression, r.Config.Streams)
	if err == nil && r.Config.ProxyCompress != "" {
		_, err = fmt.Fprintf(w, "the proxy re-encoded proxied DoGet streams with %s; GB/s counts the bytes as written\n", r.Config.ProxyCompress)
	}
	return err
}
