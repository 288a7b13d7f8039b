// Package admin is the proxy's admin HTTP server: liveness, readiness,
// Prometheus metrics, and the mount point of the lineage API and web view.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultListen is the admin address unless --admin-listen says otherwise.
const DefaultListen = "127.0.0.1:9464"

// ReadyFunc reports whether a component is ready to serve, and why not.
type ReadyFunc func() (bool, string)

// Server serves /healthz, /readyz, /metrics and /debug/pprof/.
type Server struct {
	mux      *http.ServeMux
	registry *prometheus.Registry
	ready    []namedReady
	ln       net.Listener
	log      *slog.Logger
}

type namedReady struct {
	name string
	fn   ReadyFunc
}

// New returns a server with a fresh registry that already holds the Go
// runtime and process collectors.
func New(log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{mux: http.NewServeMux(), registry: reg, log: log.With("component", "admin")}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// Profiles for operators chasing CPU or memory; the admin port binds
	// loopback unless told otherwise.
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return s
}

// Registry is where components register their metrics.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// AddReady makes /readyz depend on fn.
func (s *Server) AddReady(name string, fn ReadyFunc) { s.ready = append(s.ready, namedReady{name, fn}) }

// Handle mounts another admin handler.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	for _, r := range s.ready {
		if ok, why := r.fn(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "%s not ready: %s\n", r.name, why)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

// Listen binds addr.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin: listening on %s: %w (set --admin-listen to a free address)", addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	s.log.Info("admin listening", "addr", s.Addr(), "endpoints", "/healthz /readyz /metrics /debug/pprof/ /lineage /api/v1/lineage /api/v1/openlineage")
	select {
	case err := <-errc:
		return fmt.Errorf("admin: %w", err)
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shut); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("admin: shutting down: %w", err)
		}
		return nil
	}
}
