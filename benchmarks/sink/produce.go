package sink

import (
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// errAcks0Failed closes a connection whose acks=0 produce failed: with no
// response to carry the error, Kafka closes the connection so that the
// client notices and refreshes its metadata.
var errAcks0Failed = errors.New("an acks=0 produce failed; closing the connection as Kafka does so the client notices")

// handleProduce stores each partition's batches (see partition.append) and
// answers with their base offsets; with acks=0 it answers nothing. A
// partition led by another broker gets NOT_LEADER_OR_FOLLOWER, with the
// leader's endpoint from v10 (KIP-951). Produce v13 names topics by id.
func (c *conn) handleProduce(h protocol.RequestHeader, body []byte) (kmsg.Response, error) {
	req := &c.produceReq
	req.Version = h.Version
	// Topic names alias the frame, which outlives this request's
	// response.
	if err := req.UnsafeReadFrom(body); err != nil {
		return nil, fmt.Errorf("%w: %w", protocol.ErrMalformed, err)
	}
	resp := &c.produceResp
	resp.Version, resp.ThrottleMillis = h.Version, 0
	resp.Brokers = resp.Brokers[:0]
	resp.Topics = grow(resp.Topics, len(req.Topics))
	var failed error
	for i := range req.Topics {
		rt := &req.Topics[i]
		st := &resp.Topics[i]
		parts := st.Partitions[:0]
		*st = kmsg.ProduceResponseTopic{Topic: rt.Topic, TopicID: rt.TopicID}
		t, missing := c.s.topics.byName(rt.Topic), kerr.UnknownTopicOrPartition.Code
		if h.Version >= 13 {
			t, missing = c.s.topics.byID(rt.TopicID), kerr.UnknownTopicID.Code
		}
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			parts = append(parts, kmsg.ProduceResponseTopicPartition{})
			sp := &parts[len(parts)-1]
			sp.Default()
			sp.Partition = rp.Partition
			p, code := lookup(t, rp.Partition, c.b.id, missing)
			switch {
			case code == kerr.NotLeaderForPartition.Code:
				sp.ErrorCode = code
				if h.Version >= 10 {
					sp.CurrentLeader.LeaderID, sp.CurrentLeader.LeaderEpoch = p.leader, 0
					resp.Brokers = c.addProduceBroker(resp.Brokers, p.leader)
				}
			case code != 0:
				sp.ErrorCode = code
			default:
				sp.BaseOffset, sp.LogStartOffset, sp.ErrorCode = p.append(rp.Records)
			}
			if req.Acks == 0 && sp.ErrorCode != 0 && failed == nil {
				failed = fmt.Errorf("%w: %s partition %d: %s", errAcks0Failed, topicLabel(rt.Topic, rt.TopicID, h.Version >= 13), rp.Partition, kerr.ErrorForCode(sp.ErrorCode))
			}
		}
		st.Partitions = parts
	}
	if req.Acks == 0 {
		return nil, failed
	}
	return resp, nil
}

// addProduceBroker adds broker id to the KIP-951 endpoint list once.
func (c *conn) addProduceBroker(list []kmsg.ProduceResponseBroker, id int32) []kmsg.ProduceResponseBroker {
	if slices.ContainsFunc(list, func(b kmsg.ProduceResponseBroker) bool { return b.NodeID == id }) {
		return list
	}
	b := c.s.brokers[id]
	return append(list, kmsg.ProduceResponseBroker{NodeID: b.id, Host: b.host, Port: b.port})
}

// topicLabel names a topic for errors: by name, or by id when the request
// version names topics by id.
func topicLabel(name string, id [16]byte, byID bool) string {
	if byID {
		return fmt.Sprintf("topic id %x", id)
	}
	return fmt.Sprintf("topic %q", name)
}

// grow returns s with length n, reusing its elements (and so their nested
// slices' capacity) where it can.
func grow[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return append(s[:cap(s)], make([]T, n-cap(s))...)
}
