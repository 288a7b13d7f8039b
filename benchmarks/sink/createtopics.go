package sink

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// handleCreateTopics creates topics so that admin clients (kadm) work.
// NumPartitions -1 means the default; an explicit replica assignment gives
// the partition count, though leaders are always placed as Metadata says.
// The replication factor and configs are accepted and ignored: every
// partition has one replica.
func (c *conn) handleCreateTopics(h protocol.RequestHeader, body []byte) (kmsg.Response, error) {
	req := kmsg.NewPtrCreateTopicsRequest()
	if err := decode(req, h, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic = rt.Topic
		n := rt.NumPartitions
		if len(rt.ReplicaAssignment) > 0 {
			n = int32(len(rt.ReplicaAssignment))
		} else if n == -1 {
			n = int32(c.s.cfg.Partitions)
		}
		fail := func(code int16, msg string) {
			st.ErrorCode, st.ErrorMessage = code, kmsg.StringPtr(msg)
		}
		switch err := validTopicName(rt.Topic); {
		case err != nil:
			fail(kerr.InvalidTopicException.Code, err.Error())
		case n < 1 || n > maxPartitions:
			fail(kerr.InvalidPartitions.Code, "partitions must be from 1 to 10000, or -1 for the default")
		case req.ValidateOnly:
			if t := c.s.topics.byName(rt.Topic); t != nil {
				fail(kerr.TopicAlreadyExists.Code, "topic "+rt.Topic+" already exists")
			}
		default:
			t, created := c.s.topics.create(c.s, rt.Topic, n)
			if !created {
				fail(kerr.TopicAlreadyExists.Code, "topic "+rt.Topic+" already exists")
			}
			st.TopicID = t.id
			n = int32(len(t.parts))
		}
		if st.ErrorCode == 0 {
			st.NumPartitions, st.ReplicationFactor = n, 1
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
