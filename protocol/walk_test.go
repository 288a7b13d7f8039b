package protocol

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// responseShape says what a built Produce or Fetch response holds.
type responseShape struct {
	topics, partitions int
	records            func(topic, partition int) []byte // Fetch only; nil records when it returns nil
	brokers            int                               // KIP-951 NodeEndpoints (top-level tag 0)
	unknownTopLevelTag bool                              // a top-level tag kmsg does not know
	nestedTags         bool                              // partition-level tags (CurrentLeader, unknown ones)
}

func topicName(i int) string { return fmt.Sprintf("topic-%d", i) }
func topicID(i int) [16]byte {
	return [16]byte{0xee, byte(i), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i)}
}
func recordsOf(t, p int) []byte { return []byte(fmt.Sprintf("batches of topic %d partition %d", t, p)) }
func bigRecords(n int) func(int, int) []byte {
	return func(t, p int) []byte { return bytes.Repeat([]byte{byte(t), byte(p)}, n/2) }
}

// fetchResponse builds a Fetch response with kmsg.
func fetchResponse(version int16, s responseShape) *kmsg.FetchResponse {
	r := kmsg.NewPtrFetchResponse()
	r.SetVersion(version)
	r.ThrottleMillis = 5
	r.SessionID = 99
	for ti := range s.topics {
		t := kmsg.NewFetchResponseTopic()
		t.Topic, t.TopicID = topicName(ti), topicID(ti)
		for pi := range s.partitions {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition = int32(pi)
			p.ErrorCode = int16(pi % 3)
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = 100, 90, 1
			p.PreferredReadReplica = int32(pi % 2)
			if pi%2 == 1 {
				a := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
				a.ProducerID, a.FirstOffset = 7, 8
				p.AbortedTransactions = append(p.AbortedTransactions, a)
			}
			if s.records != nil {
				p.RecordBatches = s.records(ti, pi)
			}
			if s.nestedTags {
				p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 2, 3
				p.DivergingEpoch.Epoch, p.DivergingEpoch.EndOffset = 1, 50
				p.UnknownTags.Set(77, []byte("partition tag"))
				t.UnknownTags.Set(78, []byte("topic tag"))
			}
			t.Partitions = append(t.Partitions, p)
		}
		r.Topics = append(r.Topics, t)
	}
	for i := range s.brokers {
		b := kmsg.NewFetchResponseBroker()
		b.NodeID, b.Host, b.Port = int32(i), fmt.Sprintf("broker-%d.internal", i), 9092
		if i == 0 {
			b.Rack = strp("rack-a")
		}
		r.Brokers = append(r.Brokers, b)
	}
	if s.unknownTopLevelTag {
		r.UnknownTags.Set(9, []byte("future field"))
	}
	return r
}

// produceResponse builds a Produce response with kmsg.
func produceResponse(version int16, s responseShape) *kmsg.ProduceResponse {
	r := kmsg.NewPtrProduceResponse()
	r.SetVersion(version)
	r.ThrottleMillis = 5
	for ti := range s.topics {
		t := kmsg.NewProduceResponseTopic()
		t.Topic, t.TopicID = topicName(ti), topicID(ti)
		for pi := range s.partitions {
			p := kmsg.NewProduceResponseTopicPartition()
			p.Partition, p.BaseOffset, p.LogAppendTime, p.LogStartOffset = int32(pi), 10, 11, 12
			if pi%2 == 1 {
				p.ErrorCode = 87
				p.ErrorMessage = strp("invalid record")
				e := kmsg.NewProduceResponseTopicPartitionErrorRecord()
				e.RelativeOffset, e.ErrorMessage = 3, strp("bad record")
				p.ErrorRecords = append(p.ErrorRecords, e, kmsg.NewProduceResponseTopicPartitionErrorRecord())
			}
			if s.nestedTags {
				p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 1, 4
				p.UnknownTags.Set(40, []byte("partition tag"))
				t.UnknownTags.Set(41, nil)
			}
			t.Partitions = append(t.Partitions, p)
		}
		r.Topics = append(r.Topics, t)
	}
	for i := range s.brokers {
		b := kmsg.NewProduceResponseBroker()
		b.NodeID, b.Host, b.Port = int32(i), fmt.Sprintf("broker-%d.internal", i), 9092
		r.Brokers = append(r.Brokers, b)
	}
	if s.unknownTopLevelTag {
		r.UnknownTags.Set(9, []byte("future field"))
	}
	return r
}

var walkShapes = []struct {
	name string
	s    responseShape
	tags bool // a top-level tag is present
}{
	{"empty", responseShape{}, false},
	{"no endpoints", responseShape{topics: 2, partitions: 3, records: recordsOf}, false},
	{"no endpoints, null records", responseShape{topics: 1, partitions: 2}, false},
	{"no endpoints, nested tags", responseShape{topics: 2, partitions: 2, records: recordsOf, nestedTags: true}, false},
	{"no endpoints, large records", responseShape{topics: 1, partitions: 2, records: bigRecords(300 << 10)}, false},
	{"endpoints only", responseShape{brokers: 1}, true},
	{"endpoints and records", responseShape{topics: 2, partitions: 3, records: recordsOf, brokers: 3}, true},
	{"endpoints and nested tags", responseShape{topics: 3, partitions: 1, records: recordsOf, brokers: 2, nestedTags: true}, true},
	{"unknown top-level tag only", responseShape{topics: 1, partitions: 1, unknownTopLevelTag: true}, true},
	{"endpoints and an unknown top-level tag", responseShape{topics: 1, partitions: 1, brokers: 1, unknownTopLevelTag: true}, true},
}

func TestHasTopLevelTags(t *testing.T) {
	for _, shape := range walkShapes {
		for _, v := range []int16{10, 11, 12, 13} {
			t.Run(fmt.Sprintf("Produce v%d %s", v, shape.name), func(t *testing.T) {
				body := produceResponse(v, shape.s).AppendTo(nil)
				has, err := HasTopLevelTags(ProduceKey, v, body)
				require.NoError(t, err)
				assert.Equal(t, shape.tags, has)
				requireEveryPrefixFails(t, ProduceKey, v, body, shape.tags)
			})
		}
		for _, v := range []int16{16, 17, 18} {
			t.Run(fmt.Sprintf("Fetch v%d %s", v, shape.name), func(t *testing.T) {
				body := fetchResponse(v, shape.s).AppendTo(nil)
				has, err := HasTopLevelTags(FetchKey, v, body)
				require.NoError(t, err)
				assert.Equal(t, shape.tags, has)
				requireEveryPrefixFails(t, FetchKey, v, body, shape.tags)
			})
		}
	}
}

// requireEveryPrefixFails checks that a response cut anywhere never gets the
// verdict "no top-level tags", which would let the proxy pass it on
// unexamined. A cut before the tag count is an error; a cut inside the tag
// section may still say "has tags", because HasTopLevelTags reads only the
// count and leaves the tags themselves to kmsg, which then refuses the cut.
func requireEveryPrefixFails(t *testing.T, key, v int16, body []byte, tags bool) {
	t.Helper()
	step := 1
	if len(body) > 4096 {
		step = 997 // records are skipped in one Span; a sample of cuts will do
	}
	for n := 0; n < len(body); n += step {
		has, err := HasTopLevelTags(key, v, body[:n])
		if err == nil {
			require.True(t, has && tags, "%s v%d cut to %d of %d bytes: no error, has=%v", KeyName(key), v, n, len(body), has)
			continue
		}
		require.ErrorIs(t, err, ErrMalformed)
	}
}

func TestHasTopLevelTagsOtherVersionsAndKeys(t *testing.T) {
	for _, tc := range []struct {
		key, version int16
	}{
		{ProduceKey, 9}, {ProduceKey, 14}, {ProduceKey, 0},
		{FetchKey, 15}, {FetchKey, 12}, {FetchKey, 19}, {FetchKey, 4},
		{3, 12}, {-1, 0},
	} {
		has, err := HasTopLevelTags(tc.key, tc.version, []byte{0xff, 0x01})
		require.NoError(t, err, "%s v%d", KeyName(tc.key), tc.version)
		assert.False(t, has, "%s v%d is not walked", KeyName(tc.key), tc.version)
	}
}

func TestHasTopLevelTagsMalformed(t *testing.T) {
	for _, tc := range []struct {
		name         string
		key, version int16
		body         []byte
		err          string
	}{
		{"Produce empty", ProduceKey, 10, nil, "Produce v10 response"},
		{"Produce topic name overruns", ProduceKey, 10, []byte{2, 10, 'a'}, "Produce v10 response"},
		{"Produce missing tag count", ProduceKey, 10, []byte{1, 0, 0, 0, 0}, "Produce v10 response ends before its tagged fields"},
		{"Produce v13 topic id overruns", ProduceKey, 13, []byte{2, 1, 2, 3}, "Produce v13 response"},
		{"Fetch empty", FetchKey, 16, nil, "Fetch v16 response"},
		{"Fetch header only", FetchKey, 16, make([]byte, 10), "Fetch v16 response"},
		{"Fetch missing tag count", FetchKey, 16, append(make([]byte, 10), 1), "Fetch v16 response ends before its tagged fields"},
		{"Fetch records overrun", FetchKey, 16, fetchResponse(16, responseShape{topics: 1, partitions: 1, records: recordsOf}).AppendTo(nil)[:60], "Fetch v16 response"},
		{"Fetch unterminated tag count", FetchKey, 17, append(make([]byte, 10), 1, 0x80), "Fetch v17 response ends before its tagged fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := HasTopLevelTags(tc.key, tc.version, tc.body)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
}

func TestHasTopLevelTagsDoesNotAllocate(t *testing.T) {
	body := fetchResponse(16, responseShape{topics: 2, partitions: 5, records: recordsOf, brokers: 3, nestedTags: true}).AppendTo(nil)
	allocs := testing.AllocsPerRun(100, func() {
		if has, err := HasTopLevelTags(FetchKey, 16, body); err != nil || !has {
			t.Fatal(has, err)
		}
	})
	assert.Zero(t, allocs)
}

func TestWalkFetchResponse(t *testing.T) {
	type seen struct {
		topic     string
		id        [16]byte
		partition int32
		errorCode int16
		records   []byte
	}
	for _, v := range []int16{4, 5, 7, 11, 12, 13, 15, 16, 18} {
		for _, shape := range walkShapes {
			if v < 12 && shape.tags {
				continue // tagged fields need a flexible version
			}
			t.Run(fmt.Sprintf("v%d %s", v, shape.name), func(t *testing.T) {
				resp := fetchResponse(v, shape.s)
				body := resp.AppendTo(nil)
				var want, got []seen
				for _, tp := range resp.Topics {
					for _, p := range tp.Partitions {
						s := seen{partition: p.Partition, errorCode: p.ErrorCode, records: p.RecordBatches}
						if v >= 13 {
							s.id = tp.TopicID
						} else {
							s.topic = tp.Topic
						}
						want = append(want, s)
					}
				}
				b, err := WalkFetchResponse(v, body, func(pd PartitionData) {
					s := seen{topic: string(pd.Topic), id: pd.TopicID, partition: pd.Partition, errorCode: pd.ErrorCode, records: pd.Records}
					if len(pd.Records) > 0 {
						assert.True(t, sameMemory(body, pd.Records), "records alias the frame")
					}
					got = append(got, s)
				})
				require.NoError(t, err)
				assert.Equal(t, want, got)
				if v >= 13 {
					for _, s := range got {
						assert.Empty(t, s.topic, "v13+ names topics by id only")
					}
				}
				if v < 12 {
					assert.Empty(t, b.Src, "the walk reads the whole body")
					return
				}
				// The reader is left at the top-level tagged fields.
				tags := kmsg.ReadTags(&b)
				require.True(t, b.Ok())
				assert.Empty(t, b.Src, "nothing follows the top-level tagged fields")
				if v >= 16 {
					assert.Equal(t, shape.tags, tags.Len() > 0)
				}
			})
		}
	}
}

func TestWalkFetchResponseRecordsNullVersusEmpty(t *testing.T) {
	resp := fetchResponse(16, responseShape{topics: 1, partitions: 2, records: func(_, p int) []byte {
		if p == 0 {
			return nil
		}
		return []byte{}
	}})
	var got [][]byte
	_, err := WalkFetchResponse(16, resp.AppendTo(nil), func(pd PartitionData) { got = append(got, pd.Records) })
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Nil(t, got[0], "null records")
	assert.NotNil(t, got[1], "empty records")
	assert.Empty(t, got[1])
}

func TestWalkFetchResponseRefusesOldVersions(t *testing.T) {
	for _, v := range []int16{0, 1, 3} {
		_, err := WalkFetchResponse(v, fetchResponse(v, responseShape{topics: 1, partitions: 1}).AppendTo(nil), nil)
		require.ErrorIs(t, err, ErrMalformed)
		assert.Contains(t, err.Error(), "only v4+ can be walked")
	}
}

func TestWalkFetchResponseStopsCallingOnError(t *testing.T) {
	body := fetchResponse(16, responseShape{topics: 1, partitions: 3, records: recordsOf}).AppendTo(nil)
	calls := 0
	_, err := WalkFetchResponse(16, body[:len(body)-20], func(PartitionData) { calls++ })
	require.ErrorIs(t, err, ErrMalformed)
	assert.Equal(t, 2, calls, "partitions read whole are reported; the cut one is not")
}

// sameMemory reports whether sub lies inside whole.
func sameMemory(whole, sub []byte) bool {
	for i := range whole {
		if &whole[i] == &sub[0] {
			return i+len(sub) <= len(whole)
		}
	}
	return false
}

func BenchmarkHasTopLevelTags(b *testing.B) {
	// 10 partitions of ~100 KiB each: the walk's cost must not depend on
	// the record bytes it skips.
	for _, bc := range []struct {
		name string
		key  int16
		v    int16
		body []byte
	}{
		{"Fetch v16 10 partitions 1MiB", FetchKey, 16, fetchResponse(16, responseShape{topics: 2, partitions: 5, records: bigRecords(100 << 10)}).AppendTo(nil)},
		{"Fetch v16 10 partitions 1MiB with endpoints", FetchKey, 16, fetchResponse(16, responseShape{topics: 2, partitions: 5, records: bigRecords(100 << 10), brokers: 3}).AppendTo(nil)},
		{"Produce v11 10 partitions", ProduceKey, 11, produceResponse(11, responseShape{topics: 2, partitions: 5}).AppendTo(nil)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := HasTopLevelTags(bc.key, bc.v, bc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
