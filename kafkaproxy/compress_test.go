package kafkaproxy

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// testConn is a conn whose client side reads frames from a buffer, with the
// compression stage set up for rules.
func testConn(t *testing.T, stream []byte, rules ...CompressionRule) *conn {
	t.Helper()
	m, err := newShapeMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	z, err := newCompressor(rules, 1<<20, 1, m)
	require.NoError(t, err)
	p := &Proxy{sh: &shaping{budget: newBudget(64<<20, m), m: m}, topics: newTopicIDs()}
	p.sh.rules.Store(&ruleSet{compress: z})
	c := &conn{p: p, done: make(chan struct{})}
	c.sh.init()
	c.cr = protocol.NewReader(bytes.NewReader(stream), 0, 4096)
	return c
}

// bigProduce is a Produce v9 request frame with one batch of about n bytes
// per topic.
func bigProduce(t *testing.T, n int, topics ...string) []byte {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 1000
	for _, name := range topics {
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = name
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = appendSmallBatchOf(t, n)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
	}
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID("t")).AppendRequest(nil, req, 1)
}

// appendSmallBatchOf builds an uncompressed batch of about n bytes.
func appendSmallBatchOf(t *testing.T, n int) []byte {
	var recs []byte
	i := 0
	for len(recs) < n {
		r := kmsg.Record{OffsetDelta: int32(i), Value: bytes.Repeat([]byte{byte('a' + i%26)}, 1000)}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		recs = r.AppendTo(recs)
		i++
	}
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(i - 1), NumRecords: int32(i), ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, Records: recs}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// TestCompressProduceStreamsWhatNoRuleCovers: with compression rules set, a
// large single-topic Produce to a topic without a rule keeps streaming (only
// its head is read); one naming a topic with a rule, or whose head ends
// before all its topics are named, is read whole.
func TestCompressProduceStreamsWhatNoRuleCovers(t *testing.T) {
	rule := CompressionRule{Topic: "logs.", Prefixed: true, Codec: protocol.CodecZstd}
	for _, tt := range []struct {
		name   string
		topics []string
		whole  bool
	}{
		{"one topic, no rule", []string{"metrics"}, false},
		{"one topic with a rule", []string{"logs.app"}, true},
		{"later topics unknown from the head", []string{"metrics", "other"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			frame := bigProduce(t, 200<<10, tt.topics...)
			c := testConn(t, frame, rule)
			head, err := c.cr.NextHead(streamHeadBytes)
			require.NoError(t, err)
			require.Positive(t, c.cr.Rest())
			hdr, err := protocol.ParseRequestHeader(head)
			require.NoError(t, err)
			out, held, ok, err := c.compressProduce(c.p.sh.rules.Load().compress, &hdr, c.cr.Frame(), head)
			require.NoError(t, err)
			require.True(t, ok)
			if !tt.whole {
				assert.Zero(t, held, "no memory taken")
				assert.Len(t, out, streamHeadBytes+4, "the head goes out, the rest streams")
				assert.Equal(t, len(frame)-len(out), c.cr.Rest())
				return
			}
			assert.Zero(t, c.cr.Rest(), "read whole")
			assert.Positive(t, held)
			c.p.sh.budget.requests.release(held)
			if tt.topics[0] == "logs.app" {
				var rb kmsg.RecordBatch
				req := kmsg.NewPtrProduceRequest()
				req.Version = 9
				require.NoError(t, req.ReadFrom(out[4+hdr.BodyOffset:]))
				require.NoError(t, rb.ReadFrom(req.Topics[0].Partitions[0].Records))
				assert.Equal(t, int16(protocol.CodecZstd), rb.Attributes&protocol.CodecMask, "recompressed")
			} else {
				assert.Equal(t, frame, out, "read whole, forwarded as sent")
			}
		})
	}
}
