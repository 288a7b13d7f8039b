package kafkaproxy

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/lineage"
)

// benchObs is an observe stage on a connection that is never used for I/O.
func benchObs(tb testing.TB) *connObs {
	tel, err := newTelemetry(TelemetryConfig{}, prometheus.NewRegistry(), newTopicIDs(), nil)
	require.NoError(tb, err)
	a, b := net.Pipe()
	tb.Cleanup(func() { a.Close(); b.Close() })
	return tel.newConn(&conn{client: a})
}

// recordBatch returns a magic v2 batch of n records of size bytes, as kgo
// would send it (uncompressed).
func recordBatch(n, size int) []byte {
	rb := kmsg.RecordBatch{Magic: 2, NumRecords: int32(n), LastOffsetDelta: int32(n - 1)}
	for i := range n {
		r := kmsg.Record{OffsetDelta: int32(i), Value: make([]byte, size)}
		rb.Records = r.AppendTo(rb.Records)
	}
	raw := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12)) // the length kmsg leaves to the caller
	return raw
}

func produceBody(version int16, topics, partitions int, batch []byte) []byte {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(version)
	req.Acks = -1
	for t := range topics {
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = fmt.Sprintf("topic-%d", t)
		for p := range partitions {
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition = int32(p)
			rp.Records = batch
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	return req.AppendTo(nil)
}

// BenchmarkObserveProduce is the observe stage's cost per Produce request
// in steady state (edges cached): it must not allocate.
func BenchmarkObserveProduce(b *testing.B) {
	o := benchObs(b)
	body := produceBody(9, 2, 3, recordBatch(100, 1000))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		o.walkProduce(9, body)
	}
}

// BenchmarkObserveFetch is the same for a Fetch response.
func BenchmarkObserveFetch(b *testing.B) {
	o := benchObs(b)
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(12)
	batch := recordBatch(100, 1000)
	for t := range 2 {
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic = fmt.Sprintf("topic-%d", t)
		for p := range 3 {
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition = int32(p)
			rp.RecordBatches = batch
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	body := resp.AppendTo(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		o.walkFetch(12, body)
	}
}

// TestObserveSteadyStateAllocs: once a connection's edges are cached,
// observing a Produce request or Fetch response allocates nothing.
func TestObserveSteadyStateAllocs(t *testing.T) {
	o := benchObs(t)
	body := produceBody(9, 2, 3, recordBatch(10, 100))
	o.walkProduce(9, body)
	allocs := testing.AllocsPerRun(100, func() { o.walkProduce(9, body) })
	require.Zero(t, allocs)
	e := o.t.edges[edgeKey{principal: anonymous, topic: "topic-0"}]
	require.NotNil(t, e)
	require.EqualValues(t, 102*3*10, e.records.Load()) // AllocsPerRun runs once more to warm up
}

type obsSink struct{ records map[string]int64 }

func (s *obsSink) Observe(obs []lineage.Observation) {
	for _, o := range obs {
		s.records[o.From.ID()+">"+o.To.ID()] += o.Records
	}
}

// TestEdgesForgottenAfterClose: an edge stays in memory while a connection
// holds it, and is dropped once the connection is gone and its counts are
// flushed, with nothing lost.
func TestEdgesForgottenAfterClose(t *testing.T) {
	sink := &obsSink{records: map[string]int64{}}
	tel, err := newTelemetry(TelemetryConfig{Lineage: sink}, prometheus.NewRegistry(), newTopicIDs(), nil)
	require.NoError(t, err)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	o := tel.newConn(&conn{client: a})
	body := produceBody(9, 1, 2, recordBatch(5, 10))
	o.walkProduce(9, body)
	tel.forget()
	require.Len(t, tel.list, 1, "held by a live connection")
	o.walkProduce(9, body)
	o.close()
	tel.forget()
	require.Len(t, tel.list, 1, "counts not yet flushed")
	tel.flush(time.Now())
	tel.forget()
	require.Empty(t, tel.list)
	require.Empty(t, tel.edges)
	require.EqualValues(t, 2*2*5, sink.records["application:(no client id)>topic:topic-0"])
}
