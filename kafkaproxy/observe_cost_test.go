package kafkaproxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// bulkBroker reads each request whole (discarding it) and answers with the
// fixed response body for its API key, under the request's correlation id:
// a Produce v9 response with no topics, or a prebuilt Fetch v12 response.
func bulkBroker(tb testing.TB, fetchBody []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	produceBody := []byte{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0} // corr, header tags, 0 topics, throttle, tags
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
				var hdr [12]byte
				for {
					if _, err := io.ReadFull(br, hdr[:]); err != nil {
						return
					}
					n := int64(binary.BigEndian.Uint32(hdr[:4])) - 8
					if _, err := br.Discard(int(n)); err != nil {
						return
					}
					body := produceBody
					if binary.BigEndian.Uint16(hdr[4:]) == FetchKeyForBench {
						body = fetchBody
					}
					copy(body[:4], hdr[8:12])
					var size [4]byte
					binary.BigEndian.PutUint32(size[:], uint32(len(body)))
					if _, err := nc.Write(size[:]); err != nil {
						return
					}
					if _, err := nc.Write(body); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// FetchKeyForBench is Fetch's API key, named for the fake broker above.
const FetchKeyForBench = 1

// bulkConn is one proxied connection to a bulkBroker, telemetry on or off.
func bulkConn(b *testing.B, telemetryOn bool, fetchBody []byte) net.Conn {
	return proxiedConn(b, Config{
		Upstreams: []string{bulkBroker(b, fetchBody)},
		Telemetry: TelemetryConfig{Disabled: !telemetryOn},
	})
}

// requestFrame frames a request body under a v2 (flexible) request header.
func requestFrame(key, version int16, body []byte) []byte {
	f := make([]byte, 4, 4+14+len(body))
	f = binary.BigEndian.AppendUint16(f, uint16(key))
	f = binary.BigEndian.AppendUint16(f, uint16(version))
	f = binary.BigEndian.AppendUint32(f, 0)
	f = binary.BigEndian.AppendUint16(f, 5)
	f = append(f, "bench"...)
	f = append(f, 0) // header tags
	f = append(f, body...)
	binary.BigEndian.PutUint32(f, uint32(len(f)-4))
	return f
}

func fetchResponseBody(topics, partitions int, batch []byte) []byte {
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(12)
	for t := range topics {
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic = fmt.Sprintf("topic-%d", t)
		for p := range partitions {
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition = int32(p)
			rp.RecordBatches = batch
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return append([]byte{0, 0, 0, 0, 0}, resp.AppendTo(nil)...) // corr + header tags
}

// cpuTime is this process's user+system CPU time so far. The benchmark's
// client and broker do the same work with telemetry on and off, so the
// difference in CPU per op is the observe stage's; unlike wall time, it
// does not move with other load on a shared machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkObserveCost is what telemetry costs on large frames, which
// stream through cut-through: 1 MiB Produce requests (6 partitions of
// ~170 KiB batches) and 1 MiB Fetch responses, one at a time over one
// proxied loopback connection, telemetry off and on. Compare MB/s (and
// CPU with -cpuprofile); run with -count to see the spread.
func BenchmarkObserveCost(b *testing.B) {
	batch := recordBatch(170, 1000)
	produce := requestFrame(0, 9, produceBody(9, 1, 6, batch))
	fetch := fetchResponseBody(1, 6, batch)
	fetchReq := requestFrame(1, 12, make([]byte, 64))
	for _, on := range []bool{false, true} {
		name := map[bool]string{false: "off", true: "on"}[on]
		b.Run("produce-1MiB/telemetry="+name, func(b *testing.B) {
			client := bulkConn(b, on, fetch)
			resp := make([]byte, 15)
			b.SetBytes(int64(len(produce)))
			b.ResetTimer()
			cpu := cpuTime()
			defer func() { b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op") }()
			for i := 0; i < b.N; i++ {
				binary.BigEndian.PutUint32(produce[8:], uint32(i))
				if _, err := client.Write(produce); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, resp); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("fetch-1MiB/telemetry="+name, func(b *testing.B) {
			client := bulkConn(b, on, fetch)
			resp := make([]byte, 4+len(fetch))
			b.SetBytes(int64(len(fetch)))
			b.ResetTimer()
			cpu := cpuTime()
			defer func() { b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op") }()
			for i := 0; i < b.N; i++ {
				binary.BigEndian.PutUint32(fetchReq[8:], uint32(i))
				if _, err := client.Write(fetchReq); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
