package sink

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The raw benchmarks measure what the broker itself can do: the client
// sends prebuilt record batches and counts fetched records from batch
// headers, doing no per-record work, over one connection per broker, so
// the broker rather than the client is the bottleneck (as the proxy
// would be in front of it).

// rawBatch is an uncompressed v2 record batch of n records of value,
// producer id -1 (not idempotent), CRC set.
func rawBatch(n int, value []byte) []byte {
	var recs []byte
	for i := range n {
		r := kmsg.Record{OffsetDelta: int32(i), Value: value}
		body := r.AppendTo(nil)
		r.Length = int32(len(body) - 1) // less the 1-byte varint of length 0
		recs = r.AppendTo(recs)
	}
	ms := time.Now().UnixMilli()
	rb := kmsg.RecordBatch{
		Magic: 2, LastOffsetDelta: int32(n - 1), FirstTimestamp: ms, MaxTimestamp: ms,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: int32(n), Records: recs,
	}
	b := rb.AppendTo(nil)
	rb.Length = int32(len(b) - 12)
	b = rb.AppendTo(b[:0])
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// leaderAddrs maps each broker address to the partitions of the bench
// topic it leads.
func leaderAddrs(b *testing.B, addrs []string) map[string][]int32 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(benchTopic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		b.Fatal(err)
	}
	hosts := make(map[int32]string)
	for _, br := range resp.Brokers {
		hosts[br.NodeID] = net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port)))
	}
	out := make(map[string][]int32)
	for _, p := range resp.Topics[0].Partitions {
		out[hosts[p.Leader]] = append(out[hosts[p.Leader]], p.Partition)
	}
	return out
}

// rawConnTo is a benchmark client connection with a reused read buffer.
type rawBenchConn struct {
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	buf  []byte
	corr int32
}

func dialBench(b *testing.B, addr string) *rawBenchConn {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return &rawBenchConn{nc: nc, br: bufio.NewReaderSize(nc, 1<<20), bw: bufio.NewWriterSize(nc, 1<<20)}
}

func (c *rawBenchConn) send(req kmsg.Request) error {
	c.corr++
	c.buf = formatter.AppendRequest(c.buf[:0], req, c.corr)
	_, err := c.bw.Write(c.buf)
	return err
}

// recv reads one response body (after the correlation id and, for
// flexible versions, the header tags) into the reused buffer.
func (c *rawBenchConn) recv(flexible bool) ([]byte, error) {
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	var sz [4]byte
	if _, err := io.ReadFull(c.br, sz[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(sz[:]))
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	if _, err := io.ReadFull(c.br, c.buf); err != nil {
		return nil, err
	}
	if flexible {
		return c.buf[5:], nil
	}
	return c.buf[4:], nil
}

// rawProduce sends Produce v9 requests (acks=1) with one batch per led
// partition, up to 4 in flight, until the shared budget of records is
// spent.
func rawProduce(c *rawBenchConn, parts []int32, batch []byte, perBatch int, budget *atomic.Int64) error {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, 1, 30000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = benchTopic
	for _, p := range parts {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = p, batch
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	perReq := int64(perBatch * len(parts))
	inflight := 0
	for {
		for inflight < 4 && budget.Add(-perReq) > -perReq {
			if err := c.send(req); err != nil {
				return err
			}
			inflight++
		}
		if inflight == 0 {
			return nil
		}
		body, err := c.recv(true)
		if err != nil {
			return err
		}
		resp := kmsg.NewPtrProduceResponse()
		resp.Version = 9
		if err := resp.ReadFrom(body); err != nil {
			return err
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					return fmt.Errorf("produce to partition %d: error %d", p.Partition, p.ErrorCode)
				}
			}
		}
		inflight--
	}
}

// rawFetch sends Fetch v12 requests for the led partitions one at a time,
// as a consumer does, counting records from batch headers and going back
// to offset 0 at each partition's end, until the shared budget is spent.
func rawFetch(c *rawBenchConn, parts []int32, ends map[int32]int64, budget *atomic.Int64) error {
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 12, 500, 1, 50<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = benchTopic
	for _, p := range parts {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.PartitionMaxBytes = p, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp := kmsg.NewPtrFetchResponse()
	for budget.Load() > 0 {
		if err := c.send(req); err != nil {
			return err
		}
		body, err := c.recv(true)
		if err != nil {
			return err
		}
		resp.Version = 12
		if err := resp.UnsafeReadFrom(body); err != nil {
			return err
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					return fmt.Errorf("fetch partition %d: error %d", p.Partition, p.ErrorCode)
				}
				rp := &req.Topics[0].Partitions[slicesIndex(parts, p.Partition)]
				var n int64
				for rb := p.RecordBatches; len(rb) >= batchHeaderBytes; {
					size := 12 + int(binary.BigEndian.Uint32(rb[batchLengthAt:]))
					if size > len(rb) {
						break // a partial batch at the end
					}
					base := int64(binary.BigEndian.Uint64(rb))
					n += int64(binary.BigEndian.Uint32(rb[recordCountAt:]))
					rp.FetchOffset = base + int64(binary.BigEndian.Uint32(rb[lastOffsetDeltaAt:])) + 1
					rb = rb[size:]
				}
				if rp.FetchOffset >= ends[p.Partition] {
					rp.FetchOffset = 0
				}
				budget.Add(-n)
			}
		}
	}
	return nil
}

func slicesIndex(s []int32, v int32) int {
	for i := range s {
		if s[i] == v {
			return i
		}
	}
	panic("partition not requested")
}

// perBatch is how many records of size go in one raw batch: about 256 KiB.
func perBatch(size int) int { return max(1, (256<<10)/size) }

// runRaw runs fn once per leader connection in parallel and fails b on any
// error.
func runRaw(b *testing.B, conns map[string]*rawBenchConn, leaders map[string][]int32, fn func(c *rawBenchConn, parts []int32) error) {
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for addr, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(c, leaders[addr]); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func dialLeaders(b *testing.B, leaders map[string][]int32) map[string]*rawBenchConn {
	conns := make(map[string]*rawBenchConn)
	for addr := range leaders {
		conns[addr] = dialBench(b, addr)
	}
	b.Cleanup(func() {
		for _, c := range conns {
			c.nc.Close()
		}
	})
	return conns
}

// BenchmarkRawProduce is the broker's produce throughput with a client
// that does no per-record work: prebuilt ~256 KiB batches, one per led
// partition per request, acks=1, 4 requests in flight per broker.
func BenchmarkRawProduce(b *testing.B) {
	for _, tg := range benchTargets {
		for _, sz := range benchSizes {
			b.Run(tg.name+"/"+sz.name, func(b *testing.B) {
				addrs, stop := tg.start(b)
				defer stop()
				leaders := leaderAddrs(b, addrs)
				conns := dialLeaders(b, leaders)
				value := make([]byte, sz.size)
				batch := rawBatch(perBatch(sz.size), value)
				var budget atomic.Int64
				b.SetBytes(int64(sz.size))
				b.ResetTimer()
				budget.Store(int64(b.N))
				runRaw(b, conns, leaders, func(c *rawBenchConn, parts []int32) error {
					return rawProduce(c, parts, batch, perBatch(sz.size), &budget)
				})
				b.StopTimer()
			})
		}
	}
}

// BenchmarkRawFetch is the broker's fetch throughput with a client that
// does no per-record work: 64 MiB preloaded per target and size, read over
// and over with one fetch at a time per broker (1 MiB per partition).
func BenchmarkRawFetch(b *testing.B) {
	const dataBytes = 64 << 20
	for _, tg := range benchTargets {
		for _, sz := range benchSizes {
			addrs, stop := tg.start(b)
			leaders := leaderAddrs(b, addrs)
			per := perBatch(sz.size)
			var budget atomic.Int64
			budget.Store(int64(dataBytes / sz.size))
			setup := dialLeaders(b, leaders)
			runRaw(b, setup, leaders, func(c *rawBenchConn, parts []int32) error {
				return rawProduce(c, parts, rawBatch(per, make([]byte, sz.size)), per, &budget)
			})
			ends := make(map[int32]int64)
			for _, parts := range leaders {
				for _, p := range parts {
					ends[p] = -1
				}
			}
			// Each partition got whole batches of per records; learn
			// where each ends with one fetch of the high watermarks.
			runRaw(b, setup, leaders, func(c *rawBenchConn, parts []int32) error {
				return highWatermarks(c, parts, ends)
			})
			b.Run(tg.name+"/"+sz.name, func(b *testing.B) {
				conns := dialLeaders(b, leaders)
				var budget atomic.Int64
				b.SetBytes(int64(sz.size))
				b.ResetTimer()
				budget.Store(int64(b.N))
				runRaw(b, conns, leaders, func(c *rawBenchConn, parts []int32) error {
					return rawFetch(c, parts, ends, &budget)
				})
				b.StopTimer()
			})
			stop()
		}
	}
}

var hwMu sync.Mutex

// highWatermarks records the high watermark of each led partition in ends.
func highWatermarks(c *rawBenchConn, parts []int32, ends map[int32]int64) error {
	req := kmsg.NewPtrListOffsetsRequest()
	req.Version = 6
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = benchTopic
	for _, p := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	if err := c.send(req); err != nil {
		return err
	}
	body, err := c.recv(true)
	if err != nil {
		return err
	}
	resp := kmsg.NewPtrListOffsetsResponse()
	resp.Version = 6
	if err := resp.ReadFrom(body); err != nil {
		return err
	}
	hwMu.Lock()
	defer hwMu.Unlock()
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 {
			return fmt.Errorf("list offsets of partition %d: error %d", p.Partition, p.ErrorCode)
		}
		ends[p.Partition] = p.Offset
	}
	return nil
}
