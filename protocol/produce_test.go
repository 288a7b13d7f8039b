package protocol

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceRequest encodes a Produce request body at version with kmsg.
func produceRequest(version int16, txnID *string, acks int16) []byte {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(version)
	req.TransactionID = txnID
	req.Acks = acks
	req.TimeoutMillis = 30000
	topic := kmsg.NewProduceRequestTopic()
	topic.Topic = "orders"
	topic.TopicID = [16]byte{1, 2, 3}
	part := kmsg.NewProduceRequestTopicPartition()
	part.Partition = 2
	part.Records = []byte("record batch bytes")
	topic.Partitions = append(topic.Partitions, part)
	req.Topics = append(req.Topics, topic)
	return req.AppendTo(nil)
}

func TestProduceAcks(t *testing.T) {
	long := string(make([]byte, 300)) // a length that needs two varint bytes when compact
	for _, version := range []int16{0, 3, 9} {
		for _, txn := range []struct {
			name string
			id   *string
		}{
			{"null transactional id", nil},
			{"empty transactional id", strp("")},
			{"transactional id", strp("txn-1")},
			{"long transactional id", &long},
		} {
			for _, acks := range []int16{0, 1, -1} {
				body := produceRequest(version, txn.id, acks)
				got, err := ProduceAcks(version, body)
				require.NoError(t, err, "v%d, %s, acks=%d", version, txn.name, acks)
				assert.Equal(t, acks, got, "v%d, %s", version, txn.name)
			}
		}
	}
}

func TestProduceAcksEveryVersion(t *testing.T) {
	max, ok := MaxVersion(ProduceKey)
	require.True(t, ok)
	for v := int16(0); v <= max; v++ {
		for _, acks := range []int16{0, 1, -1} {
			got, err := ProduceAcks(v, produceRequest(v, strp("t"), acks))
			require.NoError(t, err, "v%d", v)
			assert.Equal(t, acks, got, "v%d", v)

			// kmsg agrees on what it encoded.
			req := kmsg.NewPtrProduceRequest()
			req.SetVersion(v)
			require.NoError(t, req.ReadFrom(produceRequest(v, strp("t"), acks)))
			assert.Equal(t, req.Acks, got)
		}
	}
}

func TestProduceAcksMalformed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int16
		body    []byte
	}{
		{"v0 empty", 0, nil},
		{"v0 one byte", 0, []byte{0}},
		{"v3 empty", 3, nil},
		{"v3 transactional id overruns", 3, []byte{0, 5, 'a', 'b'}},
		{"v3 null transactional id without acks", 3, []byte{0xff, 0xff}},
		{"v3 acks cut short", 3, []byte{0xff, 0xff, 0}},
		{"v9 empty", 9, nil},
		{"v9 compact transactional id overruns", 9, []byte{6, 'a'}},
		{"v9 unterminated varint", 9, []byte{0x80, 0x80}},
		{"v9 null transactional id without acks", 9, []byte{0}},
		{"v13 acks cut short", 13, []byte{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ProduceAcks(tc.version, tc.body)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), "too short to hold acks")
		})
	}
}

func TestProduceAcksHandWritten(t *testing.T) {
	// The acks field's position, spelled out byte by byte.
	acks, err := ProduceAcks(0, []byte{0, 1, 0, 0, 0x75, 0x30})
	require.NoError(t, err)
	assert.Equal(t, int16(1), acks)
	acks, err = ProduceAcks(3, []byte{0xff, 0xff, 0xff, 0xff})
	require.NoError(t, err)
	assert.Equal(t, int16(-1), acks, "v3: null (int16 -1) transactional id, then acks")
	acks, err = ProduceAcks(3, []byte{0, 1, 'x', 0, 0})
	require.NoError(t, err)
	assert.Equal(t, int16(0), acks)
	acks, err = ProduceAcks(9, []byte{0, 0, 1})
	require.NoError(t, err)
	assert.Equal(t, int16(1), acks, "v9: compact null (0) transactional id, then acks")
	acks, err = ProduceAcks(9, []byte{2, 'x', 0xff, 0xff})
	require.NoError(t, err)
	assert.Equal(t, int16(-1), acks)
}

func BenchmarkProduceAcks(b *testing.B) {
	for _, bc := range []struct {
		name    string
		version int16
	}{{"v7", 7}, {"v11", 11}} {
		body := produceRequest(bc.version, strp("transactional-producer-1"), -1)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if acks, err := ProduceAcks(bc.version, body); err != nil || acks != -1 {
					b.Fatal(acks, err)
				}
			}
		})
	}
}
