// Package flightserver is pipemesh's small built-in Arrow Flight dataset
// service, the upstream of the demo, the tests and `pipemesh bench flight`
// (run alone as `pipemesh flight-server`).
//
// DoPut stores a stream as Arrow IPC stream files (one directory per
// dataset under the data directory, a chunk file per so many batches);
// DoGet streams a chunk back; GetFlightInfo answers one endpoint per chunk
// so that parallel readers such as Spark partitions fan out; ListFlights
// lists the datasets. Streams are stored and replayed as the client sent
// them, message by message: headers are checked, bodies are never decoded,
// so a stream written with LZ4 or ZSTD body compression is served as is.
//
// It lives in its own package, not under benchmarks/, because it is a
// user-facing command and the upstream of the demo and of the Flight
// proxy's tests, not only a benchmark peer.
package flightserver

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipemesh/pipemesh/internal/arrowipc"
)

// Defaults of Config.
const (
	DefaultBatchesPerChunk = 64
	DefaultBytesPerChunk   = 64 << 20
	DefaultMaxMessageBytes = 256 << 20
)

// maxMetaBytes bounds one IPC metadata flatbuffer read back from disk.
const maxMetaBytes = 16 << 20

// Config configures a Server.
type Config struct {
	// Dir holds the datasets; it is created if missing.
	Dir string
	// Location is the URI the server puts in every endpoint, such as
	// grpc://127.0.0.1:8815. Empty: endpoints carry no location, which in
	// Flight means "this same service".
	Location string
	// BatchesPerChunk and BytesPerChunk bound a chunk file (one endpoint):
	// a new chunk starts when either is reached.
	BatchesPerChunk int64
	BytesPerChunk   int64
	// MaxMessageBytes is the largest gRPC message received or sent.
	MaxMessageBytes int
	Logger          *slog.Logger
}

// Server is the Flight dataset service.
type Server struct {
	flight.BaseFlightServer
	cfg Config
	log *slog.Logger
	mu  sync.Mutex // serialises replacing dataset directories
}

// New checks cfg and creates the data directory.
func New(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("flightserver: no data directory; set --data-dir DIR")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("flightserver: data directory: %w", err)
	}
	if cfg.BatchesPerChunk <= 0 {
		cfg.BatchesPerChunk = DefaultBatchesPerChunk
	}
	if cfg.BytesPerChunk <= 0 {
		cfg.BytesPerChunk = DefaultBytesPerChunk
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Location != "" {
		if u, err := url.Parse(cfg.Location); err != nil || u.Scheme == "" {
			return nil, fmt.Errorf("flightserver: location %q is not a URI such as grpc://127.0.0.1:8815", cfg.Location)
		}
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "flight-server")}, nil
}

// ServerOptions are the gRPC options the service wants: message limits of
// MaxMessageBytes and windows sized for large batches.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(s.cfg.MaxMessageBytes),
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(4 << 20),
		grpc.WriteBufferSize(256 << 10),
		grpc.ReadBufferSize(256 << 10),
	}
}

// Serve serves Flight on ln until ctx ends, then stops gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	g := grpc.NewServer(s.ServerOptions()...)
	flight.RegisterFlightServiceServer(g, s)
	stop := context.AfterFunc(ctx, g.GracefulStop)
	defer stop()
	s.log.Info("serving Arrow Flight", "listen", ln.Addr().String(), "data_dir", s.cfg.Dir)
	if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("flightserver: %w", err)
	}
	return nil
}

// ticket names one chunk of one dataset.
type ticket struct {
	Dataset string `json:"dataset"`
	Chunk   int    `json:"chunk"`
}

func (s *Server) datasetDir(path []string) (string, string, error) {
	name, err := datasetName(path)
	if err != nil {
		return "", "", status.Error(codes.InvalidArgument, "flightserver: "+err.Error())
	}
	return name, filepath.Join(s.cfg.Dir, dirName(name)), nil
}

func (s *Server) load(desc *flight.FlightDescriptor) (*manifest, error) {
	if desc.GetType() != flight.DescriptorPATH {
		return nil, status.Error(codes.InvalidArgument, "flightserver: only PATH descriptors name datasets here")
	}
	name, dir, err := s.datasetDir(desc.GetPath())
	if err != nil {
		return nil, err
	}
	m, err := readManifest(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "flightserver: no dataset %q; write it with DoPut first", name)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "flightserver: dataset %q: %v", name, err)
	}
	return m, nil
}

func (s *Server) info(m *manifest) *flight.FlightInfo {
	fi := &flight.FlightInfo{
		Schema:           arrowipc.AppendMessage(nil, m.Schema),
		FlightDescriptor: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: m.Path},
		TotalRecords:     m.Rows,
		TotalBytes:       m.Bytes,
		Ordered:          true,
	}
	for i := range m.Chunks {
		t, _ := json.Marshal(ticket{Dataset: m.Name, Chunk: i})
		ep := &flight.FlightEndpoint{Ticket: &flight.Ticket{Ticket: t}}
		if s.cfg.Location != "" {
			ep.Location = []*flight.Location{{Uri: s.cfg.Location}}
		}
		fi.Endpoint = append(fi.Endpoint, ep)
	}
	return fi
}

// GetFlightInfo describes a dataset: one endpoint per chunk.
func (s *Server) GetFlightInfo(_ context.Context, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	m, err := s.load(desc)
	if err != nil {
		return nil, err
	}
	return s.info(m), nil
}

// PollFlightInfo answers at once with the complete FlightInfo: datasets
// here are never still being computed.
func (s *Server) PollFlightInfo(ctx context.Context, desc *flight.FlightDescriptor) (*flight.PollInfo, error) {
	fi, err := s.GetFlightInfo(ctx, desc)
	if err != nil {
		return nil, err
	}
	done := 1.0
	return &flight.PollInfo{Info: fi, Progress: &done}, nil
}

// GetSchema returns a dataset's schema.
func (s *Server) GetSchema(_ context.Context, desc *flight.FlightDescriptor) (*flight.SchemaResult, error) {
	m, err := s.load(desc)
	if err != nil {
		return nil, err
	}
	return &flight.SchemaResult{Schema: arrowipc.AppendMessage(nil, m.Schema)}, nil
}

// ListFlights lists the datasets whose name starts with the criteria's
// expression (all when it is empty), in name order.
func (s *Server) ListFlights(c *flight.Criteria, stream flight.FlightService_ListFlightsServer) error {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return status.Errorf(codes.Internal, "flightserver: listing %s: %v", s.cfg.Dir, err)
	}
	prefix := string(c.GetExpression())
	var infos []*flight.FlightInfo
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		m, err := readManifest(filepath.Join(s.cfg.Dir, e.Name()))
		if err != nil || !strings.HasPrefix(m.Name, prefix) {
			continue
		}
		infos = append(infos, s.info(m))
	}
	sort.Slice(infos, func(i, j int) bool {
		return strings.Join(infos[i].FlightDescriptor.Path, "/") < strings.Join(infos[j].FlightDescriptor.Path, "/")
	})
	for _, fi := range infos {
		if err := stream.Send(fi); err != nil {
			return err
		}
	}
	return nil
}

// DoGet streams one chunk as it was stored.
func (s *Server) DoGet(t *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	var tk ticket
	if err := json.Unmarshal(t.GetTicket(), &tk); err != nil {
		return status.Errorf(codes.InvalidArgument, "flightserver: ticket is not one of ours (from GetFlightInfo): %v", err)
	}
	m, err := s.load(&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: strings.Split(tk.Dataset, "/")})
	if err != nil {
		return err
	}
	if tk.Chunk < 0 || tk.Chunk >= len(m.Chunks) {
		return status.Errorf(codes.NotFound, "flightserver: dataset %q has no chunk %d (it was rewritten?); call GetFlightInfo again", tk.Dataset, tk.Chunk)
	}
	_, dir, _ := s.datasetDir(m.Path)
	f, err := os.Open(filepath.Join(dir, m.Chunks[tk.Chunk].File))
	if err != nil {
		return status.Errorf(codes.NotFound, "flightserver: dataset %q chunk %d: %v", tk.Dataset, tk.Chunk, err)
	}
	defer f.Close()
	r := arrowipc.NewReader(bufio.NewReaderSize(f, 1<<20), maxMetaBytes, int64(s.cfg.MaxMessageBytes))
	var fd flight.FlightData
	for {
		meta, _, body, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.DataLoss, "flightserver: dataset %q chunk %d: %v", tk.Dataset, tk.Chunk, err)
		}
		// Send marshals before it returns, so the reader may reuse its buffers.
		fd.DataHeader, fd.DataBody = meta, body
		if err := stream.Send(&fd); err != nil {
			return err
		}
	}
}

// DoPut stores the stream under the descriptor's path, replacing a dataset
// of that name once the whole stream has arrived.
func (s *Server) DoPut(stream flight.FlightService_DoPutServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	desc := first.GetFlightDescriptor()
	if desc.GetType() != flight.DescriptorPATH {
		return status.Error(codes.InvalidArgument, "flightserver: DoPut needs a PATH descriptor naming the dataset in its first message")
	}
	name, dir, err := s.datasetDir(desc.GetPath())
	if err != nil {
		return err
	}
	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	tmp := filepath.Join(s.cfg.Dir, ".put-"+hex.EncodeToString(suffix[:]))
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return status.Errorf(codes.Internal, "flightserver: %v", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed into place
	m := &manifest{Name: name, Path: desc.GetPath()}
	cw := &chunkWriter{dir: tmp, batchesPerChunk: s.cfg.BatchesPerChunk, bytesPerChunk: s.cfg.BytesPerChunk, m: m}
	defer cw.abort()
	for msg := first; ; {
		if err := s.putMessage(cw, m, msg); err != nil {
			return err
		}
		if msg, err = stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	if m.Schema == nil {
		return status.Error(codes.InvalidArgument, "flightserver: the stream carried no schema message")
	}
	if err := cw.finish(); err != nil {
		return status.Errorf(codes.Internal, "flightserver: %v", err)
	}
	if err := writeManifest(tmp, m); err != nil {
		return status.Errorf(codes.Internal, "flightserver: %v", err)
	}
	if err := s.replace(tmp, dir); err != nil {
		return status.Errorf(codes.Internal, "flightserver: storing dataset %q: %v", name, err)
	}
	s.log.Info("stored dataset", "dataset", name, "rows", m.Rows, "batches", m.Batches, "chunks", len(m.Chunks), "bytes", m.Bytes)
	meta, _ := json.Marshal(map[string]int64{"rows": m.Rows, "batches": m.Batches, "chunks": int64(len(m.Chunks))})
	return stream.Send(&flight.PutResult{AppMetadata: meta})
}

func (s *Server) putMessage(cw *chunkWriter, m *manifest, msg *flight.FlightData) error {
	if len(msg.DataHeader) == 0 {
		return nil // app_metadata only
	}
	h, err := arrowipc.ParseHeader(msg.DataHeader)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "flightserver: %v", err)
	}
	if h.BodyLength != int64(len(msg.DataBody)) {
		return status.Errorf(codes.InvalidArgument, "flightserver: %s header announces a body of %d bytes, got %d", h.Kind, h.BodyLength, len(msg.DataBody))
	}
	switch {
	case h.Kind == arrowipc.KindSchema && m.Schema == nil:
		m.Schema = append([]byte(nil), msg.DataHeader...)
		return nil
	case h.Kind == arrowipc.KindSchema:
		return status.Error(codes.InvalidArgument, "flightserver: a second schema message in one stream")
	case m.Schema == nil:
		return status.Errorf(codes.InvalidArgument, "flightserver: the stream must begin with a schema, got a %s", h.Kind)
	case h.Kind != arrowipc.KindRecordBatch && h.Kind != arrowipc.KindDictionaryBatch:
		return status.Errorf(codes.InvalidArgument, "flightserver: unexpected %s message in a dataset stream", h.Kind)
	}
	if err := cw.add(msg.DataHeader, h, msg.DataBody); err != nil {
		return status.Errorf(codes.Internal, "flightserver: %v", err)
	}
	return nil
}

// replace swaps the finished directory tmp into place at dir.
func (s *Server) replace(tmp, dir string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := ""
	if _, err := os.Stat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}

// DoExchange echoes every message back, which tests and benchmarks use to
// see a bidirectional stream pass through a proxy unchanged.
func (s *Server) DoExchange(stream flight.FlightService_DoExchangeServer) error {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

// Handshake echoes each payload: the service has no authentication of its
// own (put the proxy in front for that).
func (s *Server) Handshake(stream flight.FlightService_HandshakeServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&flight.HandshakeResponse{ProtocolVersion: req.GetProtocolVersion(), Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// ActionDelete is the action type that deletes the dataset named by the
// body (path elements joined with "/").
const ActionDelete = "delete"

// ListActions lists the actions DoAction takes.
func (s *Server) ListActions(_ *flight.Empty, stream flight.FlightService_ListActionsServer) error {
	return stream.Send(&flight.ActionType{Type: ActionDelete, Description: "delete the dataset named by the body (path elements joined with '/')"})
}

// DoAction runs an action; see ListActions.
func (s *Server) DoAction(a *flight.Action, stream flight.FlightService_DoActionServer) error {
	if a.GetType() != ActionDelete {
		return status.Errorf(codes.Unimplemented, "flightserver: unknown action %q; ListActions lists the known ones", a.GetType())
	}
	name, dir, err := s.datasetDir(strings.Split(string(a.GetBody()), "/"))
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, manifestFile)); err != nil {
		return status.Errorf(codes.NotFound, "flightserver: no dataset %q", name)
	}
	if err := os.RemoveAll(dir); err != nil {
		return status.Errorf(codes.Internal, "flightserver: deleting %q: %v", name, err)
	}
	return stream.Send(&flight.Result{Body: []byte(name)})
}

var _ flight.FlightServer = (*Server)(nil)
