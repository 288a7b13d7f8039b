package kafkaproxy

import (
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// describeQuorumMax caps DescribeQuorum below v2, whose responses list
// controller listener addresses the proxy cannot stand in for.
const describeQuorumMax = 1

// rewriteApiVersions caps every API the broker offers at what the proxy can
// decode, and drops APIs kmsg does not know: the proxy cannot vouch that a
// response it cannot read carries no broker address. The response header is
// always v0 (KIP-511); a broker that does not support the client's version
// answers in v0 with UNSUPPORTED_VERSION, which is decoded as v0 too.
func (c *conn) rewriteApiVersions(p pending, body []byte) ([]byte, error) {
	const off = 4 // header v0: correlation id only
	if len(body) < off+2 {
		return nil, fmt.Errorf("%w: ApiVersions response of %d bytes", protocol.ErrMalformed, len(body))
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(p.version)
	if code := int16(binary.BigEndian.Uint16(body[off:])); code == kerr.UnsupportedVersion.Code {
		resp.SetVersion(0)
	}
	if err := resp.ReadFrom(body[off:]); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	capApiVersions(resp)
	return c.encode(body[:off], resp), nil
}

// capApiVersions applies the proxy's version limits to an ApiVersions
// response in place.
func capApiVersions(resp *kmsg.ApiVersionsResponse) {
	keep := resp.ApiKeys[:0]
	for _, k := range resp.ApiKeys {
		max, ok := protocol.MaxVersion(k.ApiKey)
		if !ok {
			continue
		}
		if k.ApiKey == keyDescribeQuorum {
			max = min(max, describeQuorumMax)
		}
		k.MaxVersion = min(k.MaxVersion, max)
		if k.MinVersion > k.MaxVersion {
			continue
		}
		keep = append(keep, k)
	}
	resp.ApiKeys = keep
}

// unsupportedApiVersions is the proxy's own answer to an ApiVersions request
// newer than it can read: a v0 response with UNSUPPORTED_VERSION that lists
// the ApiVersions range it supports, which is what clients look for to retry
// (KIP-511). The frame includes its size prefix.
func unsupportedApiVersions(corr int32) []byte {
	resp := protocol.UnsupportedApiVersions(0, maxVersion(protocol.ApiVersionsKey))
	out := binary.BigEndian.AppendUint32(make([]byte, 4, 64), uint32(corr))
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out
}
