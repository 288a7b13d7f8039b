package protocol

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceRequest builds a Produce request body with kmsg.
func produceRequestWith(version int16, topics, partitions int, txn bool) *kmsg.ProduceRequest {
	r := kmsg.NewPtrProduceRequest()
	r.SetVersion(version)
	r.Acks, r.TimeoutMillis = -1, 30000
	if txn {
		r.TransactionID = strp("txn-1")
	}
	for ti := range topics {
		t := kmsg.NewProduceRequestTopic()
		t.Topic, t.TopicID = topicName(ti), topicID(ti)
		for pi := range partitions {
			p := kmsg.NewProduceRequestTopicPartition()
			p.Partition = int32(pi)
			if pi%3 != 2 {
				p.Records = recordBatch(pi+1, 0, 0)
			}
			t.Partitions = append(t.Partitions, p)
		}
		r.Topics = append(r.Topics, t)
	}
	return r
}

func TestWalkProduceRequest(t *testing.T) {
	type seen struct {
		topic     string
		id        [16]byte
		partition int32
		records   []byte
	}
	for _, v := range []int16{3, 7, 8, 9, 10, 11, 12, 13} {
		for _, txn := range []bool{false, true} {
			t.Run(fmt.Sprintf("v%d txn=%v", v, txn), func(t *testing.T) {
				req := produceRequestWith(v, 3, 4, txn)
				body := req.AppendTo(nil)
				var want, got []seen
				for _, tp := range req.Topics {
					for _, p := range tp.Partitions {
						s := seen{partition: p.Partition, records: p.Records}
						if v >= 13 {
							s.id = tp.TopicID
						} else {
							s.topic = tp.Topic
						}
						want = append(want, s)
					}
				}
				err := WalkProduceRequest(v, body, func(pd PartitionData) {
					if len(pd.Records) > 0 {
						assert.True(t, sameMemory(body, pd.Records), "records alias the frame")
					}
					got = append(got, seen{string(pd.Topic), pd.TopicID, pd.Partition, pd.Records})
				})
				require.NoError(t, err)
				assert.Equal(t, want, got)
				for i := range body {
					require.Error(t, WalkProduceRequest(v, body[:i], func(PartitionData) {}), "a body cut at %d of %d", i, len(body))
				}
			})
		}
	}
}

func TestWalkProduceRequestOldVersion(t *testing.T) {
	err := WalkProduceRequest(2, produceRequestWith(2, 1, 1, false).AppendTo(nil), func(PartitionData) {})
	require.ErrorIs(t, err, ErrMalformed)
}

func TestWalkProduceRequestDoesNotAllocate(t *testing.T) {
	body := produceRequestWith(9, 3, 4, true).AppendTo(nil)
	var records int64
	fn := func(pd PartitionData) {
		s, _ := CountBatches(pd.Records)
		records += s.Records
	}
	allocs := testing.AllocsPerRun(100, func() { _ = WalkProduceRequest(9, body, fn) })
	assert.Zero(t, allocs)
}

func BenchmarkWalkProduceRequest(b *testing.B) {
	body := produceRequestWith(9, 4, 12, false).AppendTo(nil)
	var records int64
	fn := func(pd PartitionData) {
		s, _ := CountBatches(pd.Records)
		records += s.Records
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := WalkProduceRequest(9, body, fn); err != nil {
			b.Fatal(err)
		}
	}
}

func TestProduceTopicsInHead(t *testing.T) {
	for _, v := range []int16{3, 8, 9, 12, 13} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			for _, topics := range []int{1, 3} {
				req := produceRequestWith(v, topics, 2, v%2 == 1)
				body := req.AppendTo(nil)
				// Where each topic's name ends in the body: the walk sees the
				// topic once its name is read.
				var ends []int
				for cut := 1; cut <= len(body); cut++ {
					var n int
					ProduceTopics(v, body[:cut], func([]byte, [16]byte) { n++ })
					if n > len(ends) {
						ends = append(ends, cut)
					}
				}
				require.Len(t, ends, topics, "every topic seen in the whole body")
				for cut := 0; cut <= len(body); cut++ {
					var seen []string
					all := ProduceTopics(v, body[:cut], func(name []byte, id [16]byte) {
						if v >= 13 {
							seen = append(seen, fmt.Sprint(id))
						} else {
							seen = append(seen, string(name))
						}
					})
					want := 0
					for _, e := range ends {
						if cut >= e {
							want++
						}
					}
					assert.Len(t, seen, want, "cut at %d", cut)
					for i, s := range seen {
						if v >= 13 {
							assert.Equal(t, fmt.Sprint(req.Topics[i].TopicID), s)
						} else {
							assert.Equal(t, req.Topics[i].Topic, s)
						}
					}
					assert.Equal(t, want == topics, all, "cut at %d of %d: all topics seen", cut, len(body))
				}
			}
		})
	}
}
