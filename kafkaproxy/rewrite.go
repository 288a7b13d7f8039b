package kafkaproxy

import (
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// API keys whose responses name brokers.
const (
	keyMetadata         = 3
	keyFindCoordinator  = 10
	keyDescribeQuorum   = 55
	keyDescribeCluster  = 60
	keyShareFetch       = 78
	keyShareAcknowledge = 79
)

// needsRewrite reports whether responses to key may carry something the
// proxy must change, so the proxy must be able to decode that version.
func needsRewrite(key int16) bool {
	switch key {
	case protocol.ProduceKey, protocol.FetchKey, keyMetadata, keyFindCoordinator,
		protocol.ApiVersionsKey, keyDescribeCluster, keyShareFetch, keyShareAcknowledge:
		return true
	}
	return false
}

func maxVersion(key int16) int16 {
	v, _ := protocol.MaxVersion(key)
	return v
}

// rewrite returns the response frame to send instead of the broker's, or nil
// when the broker's frame goes out unchanged. body is the frame after its
// size prefix.
func (c *conn) rewrite(p pending, body []byte) ([]byte, error) {
	switch p.key {
	case protocol.ProduceKey, protocol.FetchKey:
		off, err := protocol.ResponseBodyOffset(body, protocol.FlexibleResponseHeader(p.key, p.version))
		if err != nil {
			return nil, err
		}
		// The common case carries no leader endpoints: pass it on as is.
		has, err := protocol.HasTopLevelTags(p.key, p.version, body[off:])
		if err != nil || !has {
			return nil, err
		}
	case protocol.ApiVersionsKey:
		return c.rewriteApiVersions(p, body)
	case keyMetadata, keyFindCoordinator, keyDescribeCluster, keyShareFetch, keyShareAcknowledge:
	default:
		return nil, nil
	}
	off, err := protocol.ResponseBodyOffset(body, protocol.FlexibleResponseHeader(p.key, p.version))
	if err != nil {
		return nil, err
	}
	resp := kmsg.ResponseForKey(p.key)
	resp.SetVersion(p.version)
	if err := resp.ReadFrom(body[off:]); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if err := c.rewriteAddrs(resp); err != nil {
		return nil, err
	}
	return c.encode(body[:off], resp), nil
}

// encode builds a response frame from the broker's header bytes (correlation
// id and any header tags, kept verbatim) and a re-encoded body.
func (c *conn) encode(header []byte, resp kmsg.Response) []byte {
	out := append(c.scratch[:0], 0, 0, 0, 0)
	out = append(out, header...)
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	if cap(out) <= 1<<20 {
		c.scratch = out
	}
	return out
}

// rewriteAddrs replaces every broker host and port in resp with the proxy
// listener for that node, binding listeners for nodes seen for the first
// time. Unknown tagged fields are kept by kmsg as they came.
func (c *conn) rewriteAddrs(resp kmsg.Response) error {
	var err error
	// at rewrites one address in place; after the first error it does
	// nothing, and the error is returned once at the end.
	at := func(node int32, host *string, port *int32) {
		if err == nil {
			*host, *port, err = c.p.brokers.advertise(node, *host, *port)
		}
	}
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			at(r.Brokers[i].NodeID, &r.Brokers[i].Host, &r.Brokers[i].Port)
		}
		for _, t := range r.Topics {
			if t.Topic != nil {
				c.p.topics.put(t.TopicID, *t.Topic)
			}
		}
	case *kmsg.FindCoordinatorResponse:
		// Error answers carry no usable address (node -1, empty host).
		if r.Version <= 3 && r.ErrorCode == 0 && r.NodeID >= 0 && r.Host != "" {
			at(r.NodeID, &r.Host, &r.Port)
		}
		for i := range r.Coordinators {
			if co := &r.Coordinators[i]; co.ErrorCode == 0 && co.NodeID >= 0 && co.Host != "" {
				at(co.NodeID, &co.Host, &co.Port)
			}
		}
	case *kmsg.DescribeClusterResponse:
		for i := range r.Brokers {
			at(r.Brokers[i].NodeID, &r.Brokers[i].Host, &r.Brokers[i].Port)
		}
	case *kmsg.ProduceResponse:
		for i := range r.Brokers {
			at(r.Brokers[i].NodeID, &r.Brokers[i].Host, &r.Brokers[i].Port)
		}
	case *kmsg.FetchResponse:
		for i := range r.Brokers {
			at(r.Brokers[i].NodeID, &r.Brokers[i].Host, &r.Brokers[i].Port)
		}
	case *kmsg.ShareFetchResponse:
		for i := range r.NodeEndpoints {
			at(r.NodeEndpoints[i].NodeID, &r.NodeEndpoints[i].Host, &r.NodeEndpoints[i].Port)
		}
	case *kmsg.ShareAcknowledgeResponse:
		for i := range r.NodeEndpoints {
			at(r.NodeEndpoints[i].NodeID, &r.NodeEndpoints[i].Host, &r.NodeEndpoints[i].Port)
		}
	default:
		return fmt.Errorf("no address rewrite for %T", resp)
	}
	return err
}
