package kafkaproxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// sizedResponseFrame is responseFrame with its size prefix, as the
// response side sends it.
func sizedResponseFrame(resp kmsg.Response, corr int32) []byte {
	return protocol.AppendFrame(nil, responseFrame(corr, resp))
}

// TestAnnounceThrottle writes a throttle into Produce, Fetch and Metadata
// responses of every version that has throttle_time_ms, and keeps a
// broker's longer throttle.
func TestAnnounceThrottle(t *testing.T) {
	m, err := newShapeMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	c := &conn{p: &Proxy{sh: &shaping{m: m}}}
	for _, tc := range []struct {
		key      int16
		min, max int16
		build    func(v int16, broker int32) kmsg.Response
	}{
		{protocol.ProduceKey, 1, 11, func(v int16, broker int32) kmsg.Response {
			r := kmsg.NewPtrProduceResponse()
			r.Version, r.ThrottleMillis = v, broker
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = "t"
			rt.Partitions = append(rt.Partitions, kmsg.NewProduceResponseTopicPartition())
			r.Topics = append(r.Topics, rt)
			return r
		}},
		{protocol.FetchKey, 1, 16, func(v int16, broker int32) kmsg.Response {
			r := kmsg.NewPtrFetchResponse()
			r.Version, r.ThrottleMillis = v, broker
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic = "t"
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.RecordBatches = []byte("records")
			rt.Partitions = append(rt.Partitions, rp)
			r.Topics = append(r.Topics, rt)
			return r
		}},
		{keyMetadata, 3, 12, func(v int16, broker int32) kmsg.Response {
			r := kmsg.NewPtrMetadataResponse()
			r.Version, r.ThrottleMillis = v, broker
			return r
		}},
	} {
		for v := tc.min; v <= tc.max; v++ {
			for _, broker := range []int32{0, 5000} {
				t.Run(fmt.Sprintf("%s v%d broker %dms", protocol.KeyName(tc.key), v, broker), func(t *testing.T) {
					frame := sizedResponseFrame(tc.build(v, broker), 7)
					p := &pending{key: tc.key, version: v, corr: 7}
					out := c.announceThrottle(p, bytes.Clone(frame), true, 250*time.Millisecond)
					resp := tc.build(v, 0)
					off, err := protocol.ResponseBodyOffset(out[4:], protocol.FlexibleResponseHeader(tc.key, v))
					require.NoError(t, err)
					require.Equal(t, int32(7), protocol.ResponseCorrelationID(out[4:]))
					require.Equal(t, len(out)-4, int(binary.BigEndian.Uint32(out)))
					require.NoError(t, resp.ReadFrom(out[4+off:]))
					got, _ := resp.(kmsg.ThrottleResponse).Throttle()
					want := int32(251)
					if broker > want {
						want = broker
					}
					assert.Equal(t, want, got)
					// Only the throttle changed.
					resp.(kmsg.SetThrottleResponse).SetThrottle(broker)
					assert.Equal(t, frame, sizedResponseFrame(resp, 7))
				})
			}
		}
	}
}
