package kafkaproxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/internal/devbroker"
)

// BenchmarkRewriteMetadata is the cost of rewriting the broker addresses of
// a Metadata response (v1, and flexible v12) naming 3 brokers and 50 topics
// of 3 partitions: a kmsg decode, the rewrite, and a kmsg encode.
func BenchmarkRewriteMetadata(b *testing.B) {
	c, _ := newRewriteConn(b)
	for _, v := range []int16{1, 12} {
		frame := responseFrame(1, metadataResponse(v, 3, 50))
		b.Run(fmt.Sprintf("v%d", v), func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				out, err := c.rewrite(pending{key: keyMetadata, version: v, corr: 1}, frame)
				if err != nil || out == nil {
					b.Fatal(out, err)
				}
			}
		})
	}
}

// heartbeatRequest is a Heartbeat v4 request frame (size prefix included):
// an API no stage inspects and whose response nothing rewrites.
func heartbeatRequest() []byte {
	b := make([]byte, 4, 64)
	b = binary.BigEndian.AppendUint16(b, 12) // key
	b = binary.BigEndian.AppendUint16(b, 4)  // version
	b = binary.BigEndian.AppendUint32(b, 0)  // correlation id, set per request
	b = binary.BigEndian.AppendUint16(b, 5)
	b = append(b, "bench"...)
	b = append(b, 0)            // header tags
	b = append(b, 2, 'g')       // group
	b = append(b, 0, 0, 0, 1)   // generation
	b = append(b, 2, 'm', 0, 0) // member id, null instance id, tags
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// echoBroker answers every request with a fixed 8-byte Heartbeat v4
// response body under the request's correlation id, batching its writes
// as a broker does. It allocates nothing per request.
func echoBroker(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
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
				br := bufio.NewReaderSize(nc, 64<<10)
				bw := bufio.NewWriterSize(nc, 64<<10)
				req := make([]byte, 1<<16)
				resp := []byte{0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
				for {
					if _, err := io.ReadFull(br, req[:4]); err != nil {
						return
					}
					n := binary.BigEndian.Uint32(req)
					if _, err := io.ReadFull(br, req[:n]); err != nil {
						return
					}
					copy(resp[4:8], req[4:8])
					if _, err := bw.Write(resp); err != nil {
						return
					}
					if br.Buffered() == 0 {
						if err := bw.Flush(); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// proxiedConn runs one proxied connection, as the bootstrap listener would,
// between a loopback client socket and cfg's upstream, and returns the
// client end. Listen, logger and registry are filled in.
func proxiedConn(b *testing.B, cfg Config) net.Conn {
	cfg.Listen, cfg.BrokerPortBase = "127.0.0.1:0", -1
	cfg.Logger, cfg.Registerer = slog.New(slog.DiscardHandler), prometheus.NewRegistry()
	p, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); p.handle(server, bootstrapNode) }()
	b.Cleanup(func() { client.Close(); p.cancel(); <-done })
	return client
}

// benchConn runs one proxied connection, as the bootstrap listener would,
// between a loopback client socket and an echoBroker, and returns the
// client end.
func benchConn(b *testing.B) net.Conn {
	client := proxiedConn(b, Config{Upstreams: []string{echoBroker(b)}})
	// One round trip, so that the connection's buffers are allocated
	// before the benchmark counts.
	req, resp := heartbeatRequest(), make([]byte, 16)
	if _, err := client.Write(req); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(client, resp); err != nil {
		b.Fatal(err)
	}
	return client
}

// BenchmarkPassthrough is the proxy's per-request cost for a request no
// stage inspects (Heartbeat v4), end to end through the request and
// response loops of one connection over loopback TCP. The client and the
// fake broker allocate nothing, so allocs/op is the proxy's.
func BenchmarkPassthrough(b *testing.B) {
	b.Run("sync", func(b *testing.B) { benchSync(b, benchConn(b)) })
	b.Run("sync-direct", func(b *testing.B) {
		// The same loop straight to the fake broker: the baseline the
		// proxy's cost adds to.
		client, err := net.Dial("tcp", echoBroker(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { client.Close() })
		benchSync(b, client)
	})
	b.Run("pipelined", func(b *testing.B) {
		// Up to 64 requests in flight, as a client with a busy
		// connection: the proxy batches reads and writes.
		client := benchConn(b)
		const window = 64
		req := heartbeatRequest()
		b.SetBytes(int64(len(req) + 16))
		b.ReportAllocs()
		b.ResetTimer()
		slots := make(chan struct{}, window)
		errc := make(chan error, 1)
		go func() {
			bw := bufio.NewWriterSize(client, 64<<10)
			for i := 0; i < b.N; i++ {
				select {
				case slots <- struct{}{}:
				default:
					if err := bw.Flush(); err != nil {
						errc <- err
						return
					}
					slots <- struct{}{}
				}
				binary.BigEndian.PutUint32(req[8:], uint32(i))
				if _, err := bw.Write(req); err != nil {
					errc <- err
					return
				}
			}
			errc <- bw.Flush()
		}()
		br := bufio.NewReaderSize(client, 64<<10)
		resp := make([]byte, 16)
		for i := 0; i < b.N; i++ {
			if _, err := io.ReadFull(br, resp); err != nil {
				b.Fatal(err)
			}
			if got := binary.BigEndian.Uint32(resp[4:]); got != uint32(i) {
				b.Fatalf("correlation id %d, want %d", got, i)
			}
			<-slots
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	})
}

// benchSync sends one Heartbeat at a time and waits for its response.
func benchSync(b *testing.B, client net.Conn) {
	req := heartbeatRequest()
	resp := make([]byte, 16)
	if _, err := client.Write(req); err != nil { // warm up
		b.Fatal(err)
	}
	if _, err := io.ReadFull(client, resp); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(req) + len(resp)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint32(req[8:], uint32(i))
		if _, err := client.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(client, resp); err != nil {
			b.Fatal(err)
		}
		if got := binary.BigEndian.Uint32(resp[4:]); got != uint32(i) {
			b.Fatalf("correlation id %d, want %d", got, i)
		}
	}
}

// BenchmarkProduceThroughput produces uncompressed 1 KiB records with kgo
// (default batching and linger) to a 6-partition topic on a 3-broker kfake
// cluster, directly and through the proxy. Compare the MB/s. Every run gets
// a fresh cluster, so that neither side pays for the other's stored data.
func BenchmarkProduceThroughput(b *testing.B) {
	value := make([]byte, 1024)
	for i := range value {
		value[i] = byte(i * 7919 >> 3)
	}
	for _, bc := range []struct {
		name      string
		proxied   bool
		blackhole bool
	}{
		{"stored/direct", false, false},
		{"stored/proxied", true, false},
		// kfake.BlackholeProduce acks without storing: the broker's
		// storage (and its heap growth) leaves the measurement.
		{"blackhole/direct", false, true},
		{"blackhole/proxied", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			seeds := startBenchCluster(b, bc.proxied, bc.blackhole)
			// Uncompressed, so that every record byte crosses the proxy:
			// identical records would otherwise compress to nothing.
			cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic("bench"),
				kgo.ProducerBatchCompression(kgo.NoCompression()))
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			benchProduce(b, cl, len(value), func(int) []byte { return value })
		})
	}
}

// startBenchCluster starts a 3-broker kfake cluster with topic "bench" and,
// when proxied, a proxy in front of it; it returns the seed addresses.
// A blackhole cluster acknowledges produced records without keeping them.
// opts change the proxy's config.
func startBenchCluster(b *testing.B, proxied, blackhole bool, opts ...func(*Config)) []string {
	cfg := devbroker.Config{Brokers: 3, Topics: []devbroker.Topic{{Name: "bench", Partitions: 6}}}
	if blackhole {
		cfg.Options = append(cfg.Options, kfake.BlackholeProduce())
	}
	cluster, err := devbroker.Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cluster.Close)
	if !proxied {
		return cluster.ListenAddrs()
	}
	pcfg := Config{
		Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: cluster.ListenAddrs(),
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
	}
	for _, o := range opts {
		o(&pcfg)
	}
	p, err := New(pcfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = p.Serve(ctx) }()
	b.Cleanup(func() { cancel(); <-served })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ok, _ := p.Ready(); ok {
			return []string{p.Addr()}
		}
		if time.Now().After(deadline) {
			b.Fatal("proxy not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchProduce produces b.N records (value(i) each) asynchronously with cl
// after a warm-up record (metadata, producer id, a connection per broker),
// waits for every acknowledgement, and fails on the first error.
func benchProduce(b *testing.B, cl *kgo.Client, size int, value func(i int) []byte) {
	ctx := context.Background()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: value(0)}).FirstErr(); err != nil {
		b.Fatal(err)
	}
	var (
		mu       sync.Mutex
		firstErr error
	)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cl.Produce(ctx, &kgo.Record{Value: value(i)}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}
