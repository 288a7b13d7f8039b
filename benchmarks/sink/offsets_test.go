package sink

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// listOffsets asks partition 0 of topic for the offset at ts, at the
// given request version, and returns the offset and error code.
func listOffsets(t *testing.T, s *Sink, topic string, version int16, ts int64) (int64, int16) {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	req.Version = version
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp = 0, ts
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := dialRaw(t, s.Addrs()[0]).request(req).(*kmsg.ListOffsetsResponse)
	sp := resp.Topics[0].Partitions[0]
	if version == 0 {
		if len(sp.OldStyleOffsets) == 0 {
			return -1, sp.ErrorCode
		}
		return sp.OldStyleOffsets[0], sp.ErrorCode
	}
	return sp.Offset, sp.ErrorCode
}

// fetchAt fetches partition 0 of topic from offset on broker 0 and returns
// the partition's answer.
func fetchAt(t *testing.T, s *Sink, topic string, offset int64) kmsg.FetchResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.Version = 12 // by name
	req.MaxBytes, req.MaxWaitMillis = 1<<20, 0
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = 0, offset, 1<<20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	fr := dialRaw(t, s.Addrs()[0]).request(req).(*kmsg.FetchResponse)
	assert.Zero(t, fr.SessionID, "the sink keeps no fetch sessions")
	return fr.Topics[0].Partitions[0]
}

// TestListOffsets checks earliest (-2), latest (-1), max timestamp (-3),
// local log start (-4) and lookups by timestamp, at v0 and the newest
// version.
func TestListOffsets(t *testing.T) {
	s := startSink(t, Config{})
	const topic = "offsets"
	require.NoError(t, s.CreateTopic(topic, 1))
	cl := newClient(t, s.Addrs(), kgo.DefaultProduceTopic(topic))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	newest := maxVersion(listOffsetsKey)
	off, code := listOffsets(t, s, topic, newest, -1)
	require.Zero(t, code)
	assert.Equal(t, int64(0), off, "latest of an empty partition")

	base := time.UnixMilli(1_700_000_000_000)
	for i := range 10 { // ten batches of ten records, timestamps 1s apart per batch
		var rs []*kgo.Record
		for j := range 10 {
			r := testRecord(topic, i*10+j)
			r.Timestamp = base.Add(time.Duration(i) * time.Second)
			rs = append(rs, r)
		}
		require.NoError(t, cl.ProduceSync(ctx, rs...).FirstErr())
	}
	for _, tc := range []struct {
		name    string
		version int16
		ts      int64
		want    int64
	}{
		{"latest", newest, -1, 100},
		{"earliest", newest, -2, 0},
		{"max timestamp", newest, -3, 99},
		{"local log start", newest, -4, 0},
		{"latest tiered", newest, -5, -1},
		{"by timestamp", newest, base.Add(3 * time.Second).UnixMilli(), 30},
		{"by timestamp between batches", newest, base.Add(3500 * time.Millisecond).UnixMilli(), 40},
		{"after the last timestamp", newest, base.Add(time.Hour).UnixMilli(), -1},
		{"v0 latest", 0, -1, 100},
		{"v0 earliest", 0, -2, 0},
		{"v1 latest", 1, -1, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			off, code := listOffsets(t, s, topic, tc.version, tc.ts)
			require.Zero(t, code, kerr.ErrorForCode(code))
			assert.Equal(t, tc.want, off)
		})
	}
	_, code = listOffsets(t, s, "no-such-topic", newest, -1)
	assert.Equal(t, kerr.UnknownTopicOrPartition.Code, code)
}

// TestRetention fills a sink with a 64 KiB cap: the oldest batches go, the
// log start offset advances, memory stays near the cap, a fetch below the
// log start gets OFFSET_OUT_OF_RANGE and one above the high watermark too,
// and a consumer from the start reads exactly what is left.
func TestRetention(t *testing.T) {
	const limit = 64 << 10
	s := startSink(t, Config{RetentionBytes: limit})
	const topic, n = "retained", 300
	require.NoError(t, s.CreateTopic(topic, 1))
	cl := newClient(t, s.Addrs(), kgo.DefaultProduceTopic(topic))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	value := make([]byte, 1000)
	_, _ = rand.Read(value) // incompressible, so each batch is ~1 KiB
	// One ~1 KiB batch each.
	for i := range n {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(), "record %d", i)
	}
	assert.LessOrEqual(t, s.ret.total.Load(), int64(limit), "stored segments must stay within the cap")

	start, code := listOffsets(t, s, topic, maxVersion(listOffsetsKey), -2)
	require.Zero(t, code)
	end, code := listOffsets(t, s, topic, maxVersion(listOffsetsKey), -1)
	require.Zero(t, code)
	assert.Equal(t, int64(n), end)
	assert.Positive(t, start, "the oldest batches must have been dropped")
	assert.Greater(t, end-start, int64(limit/2/1100), "about the cap's worth must be kept")

	below := fetchAt(t, s, topic, start-1)
	assert.Equal(t, kerr.OffsetOutOfRange.Code, below.ErrorCode)
	above := fetchAt(t, s, topic, end+1)
	assert.Equal(t, kerr.OffsetOutOfRange.Code, above.ErrorCode)
	at := fetchAt(t, s, topic, start)
	require.Zero(t, at.ErrorCode)
	assert.Equal(t, start, at.LogStartOffset)
	assert.Equal(t, end, at.HighWatermark)
	assert.NotEmpty(t, at.RecordBatches)
	atEnd := fetchAt(t, s, topic, end)
	require.Zero(t, atEnd.ErrorCode)
	assert.Empty(t, atEnd.RecordBatches)

	got := consumeAll(t, s.Addrs(), topic, 1, int(end-start))
	require.Len(t, got[0], int(end-start))
	for i, r := range got[0] {
		require.Equal(t, start+int64(i), r.Offset)
		require.Equal(t, value, r.Value)
	}
}
