package sink

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// handleDeleteTopics deletes topics by name, or by id from v6, and frees
// their data.
func (c *conn) handleDeleteTopics(h protocol.RequestHeader, body []byte) (kmsg.Response, error) {
	req := kmsg.NewPtrDeleteTopicsRequest()
	if err := decode(req, h, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	targets := req.Topics
	if req.Version < 6 {
		targets = nil
		for _, name := range req.TopicNames {
			targets = append(targets, kmsg.DeleteTopicsRequestTopic{Topic: kmsg.StringPtr(name)})
		}
	}
	for _, rt := range targets {
		st := kmsg.NewDeleteTopicsResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		var t *topic
		if rt.Topic != nil {
			t = c.s.topics.byName(*rt.Topic)
		} else {
			t = c.s.topics.byID(rt.TopicID)
		}
		switch {
		case t == nil && rt.Topic == nil:
			st.ErrorCode = kerr.UnknownTopicID.Code
		case t == nil || !c.s.topics.delete(t):
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
		default:
			st.Topic, st.TopicID = kmsg.StringPtr(t.name), t.id
			c.s.log.Info("sink topic deleted", "topic", t.name)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
