package sink

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// Special ListOffsets timestamps.
const (
	latestTimestamp        = -1 // the high watermark
	earliestTimestamp      = -2 // the log start offset
	maxTimestamp           = -3 // KIP-734
	earliestLocalTimestamp = -4 // KIP-405: the log start offset, nothing is tiered
	latestTieredTimestamp  = -5 // KIP-1005: none, nothing is tiered
	earliestPendingUpload  = -6 // KIP-1023: none, nothing is tiered
)

// handleListOffsets answers as a broker without tiered storage does.
// Lookups by timestamp work at batch granularity (see
// partition.offsetForTimestamp). v0 gets at most one offset.
func (c *conn) handleListOffsets(h protocol.RequestHeader, body []byte) (kmsg.Response, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	if err := decode(req, h, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = rt.Topic
		t := c.s.topics.byName(rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition = rp.Partition
			var p *partition
			if t != nil {
				p = t.partition(rp.Partition)
			}
			switch {
			case p == nil:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case p.leader != c.b.id && req.ReplicaID != -2:
				sp.ErrorCode = kerr.NotLeaderForPartition.Code
			default:
				sp.Offset, sp.Timestamp, sp.ErrorCode = listOffset(p, rp.Timestamp)
				if sp.ErrorCode == 0 && sp.Offset >= 0 {
					sp.LeaderEpoch = 0
				}
				if req.Version == 0 && sp.ErrorCode == 0 && sp.Offset >= 0 && rp.MaxNumOffsets > 0 {
					sp.OldStyleOffsets = []int64{sp.Offset}
				}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}

// listOffset returns the offset and timestamp that ListOffsets lists for
// ts, -1 for none.
func listOffset(p *partition, ts int64) (offset, at int64, code int16) {
	logStart, hw, deleted := p.offsets()
	if deleted {
		return -1, -1, kerr.UnknownTopicOrPartition.Code
	}
	switch ts {
	case latestTimestamp:
		return hw, -1, 0
	case earliestTimestamp, earliestLocalTimestamp:
		return logStart, -1, 0
	case latestTieredTimestamp, earliestPendingUpload:
		return -1, -1, 0
	case maxTimestamp:
		if off, at, ok := p.offsetOfMaxTimestamp(); ok {
			return off, at, 0
		}
		return -1, -1, 0
	}
	if ts < 0 {
		return -1, -1, kerr.UnsupportedVersion.Code
	}
	if off, at, ok := p.offsetForTimestamp(ts); ok {
		return off, at, 0
	}
	return -1, -1, 0
}
