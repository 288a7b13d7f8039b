package sink

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// handleMetadata names every broker and the requested topics, or all
// topics. A requested topic that does not exist is created with the
// default partition count, whatever AllowAutoTopicCreation says: kgo asks
// with it false, and a benchmark should be able to produce to any topic.
// Partition p is led by broker p % Brokers, its only replica, at leader
// epoch 0. Topics requested by id (v10+) are looked up, not created.
func (c *conn) handleMetadata(h protocol.RequestHeader, body []byte) (kmsg.Response, error) {
	req := kmsg.NewPtrMetadataRequest()
	if err := decode(req, h, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	resp.Brokers = c.s.metaBrokers
	resp.ClusterID = kmsg.StringPtr(clusterID)
	resp.ControllerID = 0
	if req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0) {
		for _, t := range c.s.topics.sorted() {
			resp.Topics = append(resp.Topics, topicMetadata(t))
		}
		return resp, nil
	}
	for _, rt := range req.Topics {
		if rt.Topic == nil {
			t := c.s.topics.byID(rt.TopicID)
			if t == nil {
				mt := kmsg.NewMetadataResponseTopic()
				mt.TopicID, mt.ErrorCode = rt.TopicID, kerr.UnknownTopicID.Code
				resp.Topics = append(resp.Topics, mt)
				continue
			}
			resp.Topics = append(resp.Topics, topicMetadata(t))
			continue
		}
		name := *rt.Topic
		if err := validTopicName(name); err != nil {
			mt := kmsg.NewMetadataResponseTopic()
			mt.Topic, mt.ErrorCode = kmsg.StringPtr(name), kerr.InvalidTopicException.Code
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		t, _ := c.s.topics.create(c.s, name, int32(c.s.cfg.Partitions))
		resp.Topics = append(resp.Topics, topicMetadata(t))
	}
	return resp, nil
}

func topicMetadata(t *topic) kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	mt.Topic, mt.TopicID, mt.Partitions = kmsg.StringPtr(t.name), t.id, t.meta
	return mt
}
