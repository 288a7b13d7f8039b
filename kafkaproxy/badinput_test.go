package kafkaproxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// These tests speak raw bytes to the proxy the way broken, hostile or
// confused clients do, and check that the proxy closes the connection
// promptly with the right reason, says why in its log, and keeps serving
// well-behaved clients afterwards.

// logBuffer collects what the proxy logs, for tests that check its words.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// badLogger logs at info level to logs and to the test's output.
func badLogger(t testing.TB, logs *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// closedTotal reads pipemesh_kafka_connections_closed_total{reason} from
// the registry, without going through /metrics.
func closedTotal(t testing.TB, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "pipemesh_kafka_connections_closed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// requireClosedCount waits for the reason's counter to reach want; the
// count is taken once both halves of the connection have finished. Closes
// by well-behaved clients (client_closed) may add to the count at any time,
// so only other reasons are required to stop at want.
func requireClosedCount(t testing.TB, reg *prometheus.Registry, reason string, want float64) {
	t.Helper()
	require.Eventually(t, func() bool { return closedTotal(t, reg, reason) >= want }, 5*time.Second, 5*time.Millisecond,
		"pipemesh_kafka_connections_closed_total{reason=%q} = %v, want %v", reason, closedTotal(t, reg, reason), want)
	if reason != "client_closed" {
		assert.Equal(t, want, closedTotal(t, reg, reason), "reason %q", reason)
	}
}

// requireClosedWithin reads from nc until the proxy closes it and fails if
// that takes longer than within or if the proxy sent anything.
func requireClosedWithin(t testing.TB, nc net.Conn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	require.NoError(t, nc.SetReadDeadline(start.Add(within)))
	got, err := io.ReadAll(nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the proxy did not close the connection within %s", within)
	}
	assert.Empty(t, got, "the proxy answered a bad request")
	return time.Since(start)
}

// badRoundTrip checks that a new kgo client produces n records through the
// proxy and consumes every one of them back.
func badRoundTrip(t testing.TB, addr string, n int) {
	t.Helper()
	topic := fmt.Sprintf("after-bad-input-%d", time.Now().UnixNano())
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addr),
		kgo.AllowAutoTopicCreation(),
		kgo.DefaultProduceTopic(topic),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = kgo.StringRecord(strconv.Itoa(i))
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
	seen := make(map[string]bool, n)
	for len(seen) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, fs.Err0())
		fs.EachRecord(func(r *kgo.Record) {
			require.False(t, seen[string(r.Value)], "record %s delivered twice", r.Value)
			seen[string(r.Value)] = true
		})
	}
	for i := range n {
		require.True(t, seen[strconv.Itoa(i)], "record %d lost", i)
	}
}

func dialProxy(t testing.TB, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return nc
}

func frameSize(n int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

// rawRequest is a request frame with its size prefix and a v1 header.
func rawRequest(key, version int16, corr int32, body []byte) []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 4), uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, 3)
	b = append(b, "bad"...)
	b = append(b, body...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

func TestBadInputFrames(t *testing.T) {
	logs := &logBuffer{}
	e := startEnv(t, withProxyConfig(func(c *kafkaproxy.Config) {
		c.MaxFrameBytes = 1 << 20
		c.Logger = badLogger(t, logs)
	}))
	for _, tc := range []struct {
		name string
		send []byte
		// halfClose closes the client's write side after send, as a
		// client that dies mid-frame.
		halfClose bool
		reason    string
		log       []string // in the proxy's close log
	}{
		{
			// No body follows: the proxy must refuse on the size alone,
			// not wait for 2 MiB that never come.
			name:   "size prefix above MaxFrameBytes and no body",
			send:   frameSize(2 << 20),
			reason: "client_protocol_error",
			log:    []string{"client sent a bad frame", "frame larger than the configured maximum", "2097152 bytes, maximum 1048576"},
		},
		{
			name:   "negative size prefix",
			send:   frameSize(-8),
			reason: "client_protocol_error",
			log:    []string{"negative frame size"},
		},
		{
			name:   "HTTP request",
			send:   []byte("GET / HTTP/1.1\r\nHost: kafka\r\n\r\n"),
			reason: "client_protocol_error",
			log:    []string{"an HTTP client is connected to the Kafka port"},
		},
		{
			name:   "TLS ClientHello",
			send:   []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
			reason: "client_protocol_error",
			log:    []string{"the client uses TLS but this listener is plaintext"},
		},
		{
			name:   "frame too short for a request header",
			send:   append(frameSize(6), 0, 3, 0, 1, 0, 0),
			reason: "client_protocol_error",
			log:    []string{"request of 6 bytes is shorter than the smallest request header"},
		},
		{
			name:   "client id overruns the frame",
			send:   append(frameSize(10), 0, 12, 0, 1, 0, 0, 0, 1, 0, 50),
			reason: "client_protocol_error",
			log:    []string{"client id of 50 bytes overruns"},
		},
		{
			// kgo never sends this; a client that cannot read
			// ApiVersions could. The proxy cannot rewrite the answer.
			name:   "Metadata newer than the proxy can read",
			send:   rawRequest(3, 99, 1, nil),
			reason: "client_protocol_error",
			log:    []string{"client sent Metadata v99, newer than the v13 pipemesh can read"},
		},
		{
			name:   "Produce too short to hold acks",
			send:   rawRequest(0, 7, 1, []byte{0xff}),
			reason: "client_protocol_error",
			log:    []string{"Produce v7 request too short to hold acks"},
		},
		{
			// A client that dies mid-frame is a closed client, not a
			// protocol error.
			name:      "truncated frame then close",
			send:      append(frameSize(100), make([]byte, 10)...),
			halfClose: true,
			reason:    "client_closed",
			log:       []string{"reading 100-byte frame: unexpected EOF"},
		},
		{
			name:      "truncated size then close",
			send:      []byte{0, 0},
			halfClose: true,
			reason:    "client_closed",
			log:       []string{"reading frame size: unexpected EOF"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := closedTotal(t, e.registry, tc.reason)
			nc := dialProxy(t, e.addr)
			_, err := nc.Write(tc.send)
			require.NoError(t, err)
			if tc.halfClose {
				require.NoError(t, nc.(*net.TCPConn).CloseWrite())
			}
			took := requireClosedWithin(t, nc, 2*time.Second)
			t.Logf("closed after %s", took)
			requireClosedCount(t, e.registry, tc.reason, before+1)
			for _, want := range tc.log {
				assert.Eventually(t, func() bool { return strings.Contains(logs.String(), want) }, time.Second, 5*time.Millisecond, "log lacks %q", want)
			}
			badRoundTrip(t, e.addr, 20)
		})
	}
	assert.Zero(t, closedTotal(t, e.registry, "upstream_protocol_error"))
	assert.Zero(t, closedTotal(t, e.registry, "rewrite_failed"))
}

func TestBadInputLargeSizePrefixRefusedBeforeBody(t *testing.T) {
	// A 2 MiB size prefix against a 1 MiB limit: the proxy must close at
	// once, and must not have read (or waited for) what follows.
	e := startEnv(t, withProxyConfig(func(c *kafkaproxy.Config) { c.MaxFrameBytes = 1 << 20 }))
	nc := dialProxy(t, e.addr)
	_, err := nc.Write(frameSize(2 << 20))
	require.NoError(t, err)
	took := requireClosedWithin(t, nc, 2*time.Second)
	assert.Less(t, took, time.Second)
	// Writing the body now fails: nobody is reading it.
	require.Eventually(t, func() bool {
		_, err := nc.Write(make([]byte, 64<<10))
		return err != nil
	}, 2*time.Second, 10*time.Millisecond)
	requireClosedCount(t, e.registry, "client_protocol_error", 1)
}

func TestBadInputUnknownVersionPassedThrough(t *testing.T) {
	// Heartbeat v99: no stage inspects Heartbeat, so the proxy forwards a
	// version it cannot read. kfake refuses it by closing the connection,
	// and the proxy closes the client's in turn.
	e := startEnv(t)
	nc := dialProxy(t, e.addr)
	_, err := nc.Write(rawRequest(12, 99, 5, []byte{0, 1, 'g', 0, 0, 0, 1, 0, 1, 'm'}))
	require.NoError(t, err)
	requireClosedWithin(t, nc, 5*time.Second)
	requireClosedCount(t, e.registry, "upstream_closed", 1)
	assert.Zero(t, closedTotal(t, e.registry, "client_protocol_error"))
	badRoundTrip(t, e.addr, 20)
}

// fakeBroker answers every request frame with its correlation id and the
// bytes "pong", and records the frames of unknown API key 999. It stands in
// for a broker that knows APIs kmsg does not (kfake itself crashes on an
// unknown key: it calls SetVersion on a nil kmsg.Request).
type fakeBroker struct {
	ln     net.Listener
	frames chan []byte
}

func startFakeBroker(t testing.TB) *fakeBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	fb := &fakeBroker{ln: ln, frames: make(chan []byte, 16)}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				for {
					var size [4]byte
					if _, err := io.ReadFull(nc, size[:]); err != nil {
						return
					}
					frame := make([]byte, binary.BigEndian.Uint32(size[:]))
					if _, err := io.ReadFull(nc, frame); err != nil || len(frame) < 8 {
						return
					}
					if binary.BigEndian.Uint16(frame) == 999 {
						fb.frames <- frame
					}
					resp := append(frameSize(8), frame[4:8]...)
					if _, err := nc.Write(append(resp, "pong"...)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return fb
}

// startFakeProxy runs a proxy in front of a fakeBroker. The proxy never
// becomes ready (the fake cannot answer Metadata), but its bootstrap
// listener forwards all the same.
func startFakeProxy(t testing.TB, fb *fakeBroker, reg *prometheus.Registry, configure func(*kafkaproxy.Config)) *kafkaproxy.Proxy {
	cfg := kafkaproxy.Config{
		Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: []string{fb.ln.Addr().String()},
		Registerer: reg, Logger: testLogger(t),
		MetadataRefresh: time.Hour,
	}
	if configure != nil {
		configure(&cfg)
	}
	p, err := kafkaproxy.New(cfg)
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func TestBadInputPipelinedBeyondMaxInFlight(t *testing.T) {
	// A client may pipeline more requests than MaxInFlight (librdkafka
	// allows a million per connection). The proxy then stops reading from
	// the client, but must first send the broker what it has batched, or
	// nothing ever frees a slot.
	fb := startFakeBroker(t)
	p := startFakeProxy(t, fb, prometheus.NewRegistry(), func(c *kafkaproxy.Config) { c.MaxInFlight = 4 })
	nc := dialProxy(t, p.Addr())
	const n = 1000
	var reqs []byte
	for i := range n {
		reqs = append(reqs, rawRequest(12, 4, int32(i), []byte{0})...) // Heartbeat v4, empty tags
	}
	_, err := nc.Write(reqs) // one write, so the proxy finds them all buffered
	require.NoError(t, err)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp := make([]byte, 12)
	for i := range n {
		_, err := io.ReadFull(nc, resp)
		require.NoError(t, err, "response %d of %d", i, n)
		require.Equal(t, int32(i), int32(binary.BigEndian.Uint32(resp[4:])))
	}
}

func TestBadInputUnknownAPIKeyPassedThrough(t *testing.T) {
	fb := startFakeBroker(t)
	reg := prometheus.NewRegistry()
	p := startFakeProxy(t, fb, reg, nil)

	for client := range 2 { // the proxy keeps serving after the first
		nc := dialProxy(t, p.Addr())
		for i := range 3 {
			corr := int32(100*client + i)
			req := rawRequest(999, int16(i), corr, []byte("future api"))
			_, err := nc.Write(req)
			require.NoError(t, err)
			select {
			case got := <-fb.frames:
				assert.Equal(t, req[4:], got, "forwarded byte for byte")
			case <-time.After(5 * time.Second):
				t.Fatal("the unknown API request did not reach the broker")
			}
			require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Second)))
			resp := make([]byte, 12)
			_, err = io.ReadFull(nc, resp)
			require.NoError(t, err)
			assert.Equal(t, corr, int32(binary.BigEndian.Uint32(resp[4:])))
			assert.Equal(t, "pong", string(resp[8:]))
		}
		nc.Close()
	}
	requireClosedCount(t, reg, "client_closed", 2)
	assert.Zero(t, closedTotal(t, reg, "client_protocol_error"))
}

func TestBadInputIdleClient(t *testing.T) {
	logs := &logBuffer{}
	e := startEnv(t, withProxyConfig(func(c *kafkaproxy.Config) {
		c.IdleTimeout = 300 * time.Millisecond
		c.Logger = badLogger(t, logs)
	}))
	nc := dialProxy(t, e.addr)
	took := requireClosedWithin(t, nc, 3*time.Second)
	assert.GreaterOrEqual(t, took, 250*time.Millisecond, "closed before IdleTimeout")
	requireClosedCount(t, e.registry, "idle_timeout", 1)
	assert.Contains(t, logs.String(), "no request for 300ms")
	assert.Zero(t, closedTotal(t, e.registry, "client_protocol_error"))

	// Idle closes are routine: clients reconnect and carry on.
	badRoundTrip(t, e.addr, 50)
}

func TestBadInputUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())

	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	p, err := kafkaproxy.New(kafkaproxy.Config{
		Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: []string{dead},
		Registerer: reg, Logger: badLogger(t, logs), DialTimeout: time.Second,
	})
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	nc := dialProxy(t, p.Addr())
	requireClosedWithin(t, nc, 3*time.Second)
	requireClosedCount(t, reg, "upstream_unreachable", 1)
	log := logs.String()
	assert.Contains(t, log, "reason=upstream_unreachable")
	assert.Contains(t, log, "the client will retry; check that the broker is up and reachable from the proxy")
	assert.Contains(t, log, "connection refused")
	assert.Contains(t, log, dead)

	requireKgoFails(t, p.Addr())
	assert.GreaterOrEqual(t, closedTotal(t, reg, "upstream_unreachable"), 2.0)
	assert.Eventually(t, func() bool {
		ready, why := p.Ready()
		return !ready && strings.Contains(why, dead)
	}, 5*time.Second, 10*time.Millisecond, "Ready names the unreachable upstream")
}

// requireKgoFails checks that a kgo client through the proxy gets an error,
// not a hang, when the cluster is down.
func requireKgoFails(t testing.TB, addr string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("t"), kgo.RetryTimeout(2*time.Second))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.Error(t, cl.Ping(ctx))
}

func TestBadInputUpstreamGoesDownAndComesBack(t *testing.T) {
	logs := &logBuffer{}
	e := startEnv(t, withProxyConfig(func(c *kafkaproxy.Config) {
		c.Logger = badLogger(t, logs)
		c.DialTimeout = time.Second
	}))
	addrs := e.cluster.ListenAddrs()
	badRoundTrip(t, e.addr, 20)

	// A client connected while the cluster dies is closed. An ApiVersions
	// round trip first makes sure its upstream connection is up.
	connected := dialProxy(t, e.addr)
	_, err := connected.Write(rawRequest(18, 0, 1, nil))
	require.NoError(t, err)
	var size [4]byte
	_, err = io.ReadFull(connected, size[:])
	require.NoError(t, err)
	_, err = io.ReadFull(connected, make([]byte, binary.BigEndian.Uint32(size[:])))
	require.NoError(t, err)
	e.cluster.Close()
	// The proxy reads from the broker only while a response is owed, so it
	// learns of the close when the client next sends: that request gets
	// no answer and the connection is closed.
	_, err = connected.Write(rawRequest(18, 0, 2, nil))
	require.NoError(t, err)
	requireClosedWithin(t, connected, 5*time.Second)
	assert.Eventually(t, func() bool { return closedTotal(t, e.registry, "upstream_closed") >= 1 }, 5*time.Second, 5*time.Millisecond)

	// New clients are closed at once, and told nothing wrong.
	before := closedTotal(t, e.registry, "upstream_unreachable")
	nc := dialProxy(t, e.addr)
	requireClosedWithin(t, nc, 3*time.Second)
	requireClosedCount(t, e.registry, "upstream_unreachable", before+1)
	requireKgoFails(t, e.addr)
	assert.Contains(t, logs.String(), "the client will retry")

	// The cluster comes back on the same ports: the proxy's listeners and
	// broker map still hold, and clients work again.
	ports := make([]int, len(addrs))
	for i, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		require.NoError(t, err)
		ports[i], err = strconv.Atoi(p)
		require.NoError(t, err)
	}
	c2, err := kfake.NewCluster(kfake.Ports(ports...), kfake.AllowAutoTopicCreation(), kfake.ClusterID("pipemesh-dev"))
	require.NoError(t, err)
	t.Cleanup(c2.Close)
	badRoundTrip(t, e.addr, 20)
}
