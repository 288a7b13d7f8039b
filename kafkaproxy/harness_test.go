package kafkaproxy_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// env is a kfake cluster with a proxy in front of it.
type env struct {
	cluster  *kfake.Cluster
	proxy    *kafkaproxy.Proxy
	addr     string // proxy bootstrap
	registry *prometheus.Registry
	capture  *capture
}

type envOpt func(*kafkaproxy.Config, *devbroker.Config)

func withTopic(name string, partitions int32) envOpt {
	return func(_ *kafkaproxy.Config, d *devbroker.Config) {
		d.Topics = append(d.Topics, devbroker.Topic{Name: name, Partitions: partitions})
	}
}

func withProxyConfig(fn func(*kafkaproxy.Config)) envOpt {
	return func(c *kafkaproxy.Config, _ *devbroker.Config) { fn(c) }
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PIPEMESH_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// startEnv starts a 3-broker kfake cluster and a proxy on free ports, and
// waits until the proxy has learned the brokers.
func startEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	e := &env{registry: prometheus.NewRegistry(), capture: &capture{}}
	dcfg := devbroker.Config{Brokers: 3}
	pcfg := kafkaproxy.Config{
		Listen:         "127.0.0.1:0",
		BrokerPortBase: -1,
		Logger:         testLogger(t),
		Registerer:     e.registry,
		WrapClientConn: e.capture.wrap,
	}
	for _, o := range opts {
		o(&pcfg, &dcfg)
	}
	c, err := devbroker.Start(dcfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	e.cluster = c
	pcfg.Upstreams = c.ListenAddrs()
	p, err := kafkaproxy.New(pcfg)
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	e.proxy, e.addr = p, p.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { ok, _ := p.Ready(); return ok }, 10*time.Second, 10*time.Millisecond)
	return e
}

// capture records every byte the proxy writes to clients.
type capture struct {
	mu  sync.Mutex
	out []*bytes.Buffer
}

func (c *capture) wrap(nc net.Conn) net.Conn {
	buf := new(bytes.Buffer)
	c.mu.Lock()
	c.out = append(c.out, buf)
	c.mu.Unlock()
	return &capturedConn{Conn: nc, c: c, buf: buf}
}

// streams returns a copy of what each client connection received.
func (c *capture) streams() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]byte, len(c.out))
	for i, b := range c.out {
		out[i] = bytes.Clone(b.Bytes())
	}
	return out
}

type capturedConn struct {
	net.Conn
	c   *capture
	buf *bytes.Buffer
}

func (cc *capturedConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	cc.c.mu.Lock()
	cc.buf.Write(p[:n])
	cc.c.mu.Unlock()
	return n, err
}

// Request capture, opt in per env (noleak_test.go): with it, a capture also
// keeps every byte clients send, so responses can be matched to requests.
// It lives outside capture so that envs that do not ask pay nothing.
var requestCaptures sync.Map // *capture -> *requestLog

type requestLog struct {
	mu sync.Mutex
	in map[*bytes.Buffer]*bytes.Buffer // by the connection's response buffer
}

// recordRequests makes c keep what clients send on connections from now on.
func (c *capture) recordRequests(t testing.TB) {
	requestCaptures.Store(c, &requestLog{in: make(map[*bytes.Buffer]*bytes.Buffer)})
	t.Cleanup(func() { requestCaptures.Delete(c) })
}

func (cc *capturedConn) Read(p []byte) (int, error) {
	n, err := cc.Conn.Read(p)
	if n > 0 {
		if v, ok := requestCaptures.Load(cc.c); ok {
			l := v.(*requestLog)
			l.mu.Lock()
			b := l.in[cc.buf]
			if b == nil {
				b = new(bytes.Buffer)
				l.in[cc.buf] = b
			}
			b.Write(p[:n])
			l.mu.Unlock()
		}
	}
	return n, err
}

// exchanges returns, per client connection, what the client sent (nil
// unless recordRequests was called) and what it received.
func (c *capture) exchanges() (requests, responses [][]byte) {
	v, _ := requestCaptures.Load(c)
	l, _ := v.(*requestLog)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, out := range c.out {
		var in []byte
		if l != nil {
			l.mu.Lock()
			if b := l.in[out]; b != nil {
				in = bytes.Clone(b.Bytes())
			}
			l.mu.Unlock()
		}
		requests = append(requests, in)
		responses = append(responses, bytes.Clone(out.Bytes()))
	}
	return requests, responses
}
