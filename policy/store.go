package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultWatchInterval is how often a Store looks at its file for changes.
const DefaultWatchInterval = 2 * time.Second

// Store holds the policy in force and reloads it from its file on SIGHUP
// and when the file changes. A reload compiles the new file completely and
// then swaps it in atomically; connections pick it up on their next request.
// An invalid file is refused, its errors logged, pipemesh_policy_reload_failed
// set to 1, and the policy in force stays.
type Store struct {
	path string
	opts Options
	log  *slog.Logger

	cur      atomic.Pointer[Policy]
	mu       sync.Mutex // one reload at a time
	subMu    sync.Mutex // orders swaps and their OnChange calls
	subs     []func(*Policy)
	lastHash [32]byte

	reloads   *prometheus.CounterVec
	failed    prometheus.Gauge
	rules     prometheus.Gauge
	decisions [3]prometheus.Counter // by Result
}

// StoreConfig configures NewStore.
type StoreConfig struct {
	Path    string
	Options Options
	Logger  *slog.Logger
	// Registerer receives the policy metrics. Default: a private registry.
	Registerer prometheus.Registerer
}

// NewStore loads the policy at cfg.Path. An invalid file is an error here:
// the proxy does not start without a policy it was told to use.
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	s := &Store{path: cfg.Path, opts: cfg.Options, log: cfg.Logger.With("component", "policy")}
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pipemesh_policy_reloads_total", Help: "Policy reloads, by result (ok, error).",
	}, []string{"result"})
	s.failed = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pipemesh_policy_reload_failed", Help: "1 when the last policy reload was refused (the previous policy stays in force), else 0.",
	})
	s.rules = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pipemesh_policy_rules", Help: "ACL rules in the policy in force.",
	})
	dec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pipemesh_policy_decisions_total", Help: "Authorization decisions, by result (allow, deny, would_deny in audit mode).",
	}, []string{"result"})
	for r := range s.decisions {
		s.decisions[r] = dec.WithLabelValues(Result(r).String())
	}
	for _, c := range []prometheus.Collector{s.reloads, s.failed, s.rules, dec} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("policy: registering metrics: %w", err)
		}
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(s.path, data, s.opts)
	if err != nil {
		return nil, err
	}
	s.lastHash = sha256.Sum256(data)
	s.swap(p)
	return s, nil
}

// NewStaticStore wraps an already compiled policy, for tests and embedding;
// Reload re-reads p.File when it names a file.
func NewStaticStore(p *Policy) *Store {
	s := &Store{path: p.File, log: slog.Default()}
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipemesh_policy_reloads_total"}, []string{"result"})
	s.failed = prometheus.NewGauge(prometheus.GaugeOpts{Name: "pipemesh_policy_reload_failed"})
	s.rules = prometheus.NewGauge(prometheus.GaugeOpts{Name: "pipemesh_policy_rules"})
	dec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipemesh_policy_decisions_total"}, []string{"result"})
	for r := range s.decisions {
		s.decisions[r] = dec.WithLabelValues(Result(r).String())
	}
	s.swap(p)
	return s
}

// Current returns the policy in force.
func (s *Store) Current() *Policy { return s.cur.Load() }

// Count records one decision in pipemesh_policy_decisions_total.
func (s *Store) Count(r Result) {
	if int(r) < len(s.decisions) {
		s.decisions[r].Inc()
	}
}

// Set swaps in a compiled policy directly (tests, and callers that build
// policies themselves).
func (s *Store) Set(p *Policy) { s.swap(p) }

func (s *Store) swap(p *Policy) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	// Subscribers first: once Current returns p, what they compile from
	// it is in force too.
	for _, fn := range s.subs {
		fn(p)
	}
	s.cur.Store(p)
	s.rules.Set(float64(len(p.rules)))
}

// OnChange calls fn with the policy in force now, and then with every
// policy swapped in, in swap order, on the goroutine that swaps it, before
// Current returns it (so a reload has returned, and Current shows the new
// policy, only once fn has seen it). fn must be quick and must
// not call OnChange. Parts of the policy that are compiled elsewhere (the
// Kafka proxy's compression and quota rules) follow reloads this way.
func (s *Store) OnChange(fn func(*Policy)) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.subs = append(s.subs, fn)
	fn(s.cur.Load())
}

// Reload re-reads the file. On success the new policy is in force when it
// returns; on error the old one stays and the error says why.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err == nil {
		return s.reloadLocked(data, true)
	}
	s.refused(fmt.Errorf("policy: %w", err))
	return err
}

func (s *Store) reloadLocked(data []byte, force bool) error {
	h := sha256.Sum256(data)
	if !force && bytes.Equal(h[:], s.lastHash[:]) {
		return nil
	}
	s.lastHash = h
	p, err := Parse(s.path, data, s.opts)
	if err != nil {
		s.refused(err)
		return err
	}
	s.swap(p)
	s.reloads.WithLabelValues("ok").Inc()
	s.failed.Set(0)
	s.log.Info("policy reloaded", "file", s.path, "rules", len(p.rules), "principals", len(p.creds), "mode", p.Mode.String())
	return nil
}

func (s *Store) refused(err error) {
	s.reloads.WithLabelValues("error").Inc()
	s.failed.Set(1)
	s.log.Error("policy reload refused; the previous policy stays in force. Fix the file (pipemesh policy check) and save it again",
		"file", s.path, "err", err.Error())
}

// Run reloads on SIGHUP and whenever the file's content changes (checked
// every interval; <= 0 takes DefaultWatchInterval) until ctx ends. Polling
// the content, not watching inodes, also follows Kubernetes ConfigMap
// updates, which swap a symlink.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			s.log.Info("SIGHUP: reloading the policy", "file", s.path)
			_ = s.Reload()
		case <-t.C:
			data, err := os.ReadFile(s.path)
			if err != nil {
				continue // a rename in progress; the next tick sees the file
			}
			s.mu.Lock()
			_ = s.reloadLocked(data, false)
			s.mu.Unlock()
		}
	}
}
