package sink

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// The API keys the sink serves.
const (
	produceKey        = 0
	fetchKey          = 1
	listOffsetsKey    = 2
	metadataKey       = 3
	createTopicsKey   = 19
	deleteTopicsKey   = 20
	initProducerIDKey = 22
)

// versionRange is the versions of one key the sink serves.
type versionRange struct{ min, max int16 }

// servedVersions lists every API the sink implements and the versions it
// advertises. The maximum is kmsg's unless noted; requests outside these
// ranges close the connection, as they do on a Kafka broker.
var servedVersions = map[int16]versionRange{
	// v0-v2 carry message sets v0 and v1, which the sink does not store;
	// v3 is the first with v2 record batches.
	produceKey: {3, maxVersion(produceKey)},
	// v0-v3 return message sets v0 and v1; v4 is the first that returns
	// v2 batches as stored (and has LastStableOffset).
	fetchKey:                {4, maxVersion(fetchKey)},
	listOffsetsKey:          {0, maxVersion(listOffsetsKey)},
	metadataKey:             {0, maxVersion(metadataKey)},
	protocol.ApiVersionsKey: {0, maxVersion(protocol.ApiVersionsKey)},
	createTopicsKey:         {0, maxVersion(createTopicsKey)},
	deleteTopicsKey:         {0, maxVersion(deleteTopicsKey)},
	initProducerIDKey:       {0, maxVersion(initProducerIDKey)},
}

func maxVersion(key int16) int16 {
	v, ok := protocol.MaxVersion(key)
	if !ok {
		panic(fmt.Sprintf("sink: kmsg does not know API key %d", key))
	}
	return v
}

// served reports whether the sink answers version v of key.
func served(key, v int16) bool {
	r, ok := servedVersions[key]
	return ok && v >= r.min && v <= r.max
}

// servedKeys names the served APIs and versions, for errors.
func servedKeys() string {
	var b strings.Builder
	for i, k := range apiKeys() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s v%d-%d", protocol.KeyName(k.ApiKey), k.MinVersion, k.MaxVersion)
	}
	return b.String()
}

// apiKeys is the ApiVersions answer: the served keys in key order.
func apiKeys() []kmsg.ApiVersionsResponseApiKey {
	var out []kmsg.ApiVersionsResponseApiKey
	for _, k := range slices.Sorted(maps.Keys(servedVersions)) {
		r := servedVersions[k]
		out = append(out, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: r.min, MaxVersion: r.max})
	}
	return out
}

func (c *conn) handleApiVersions(h protocol.RequestHeader, body []byte) (kmsg.Response, error) {
	req := kmsg.NewPtrApiVersionsRequest()
	if err := decode(req, h, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	resp.ApiKeys = c.s.apiKeys
	return resp, nil
}

// unsupportedApiVersions is the answer to an ApiVersions request newer than
// the sink knows: v0, UNSUPPORTED_VERSION, and the ApiVersions versions
// served, as Kafka answers (KIP-511).
func unsupportedApiVersions() kmsg.Response {
	r := servedVersions[protocol.ApiVersionsKey]
	return protocol.UnsupportedApiVersions(r.min, r.max)
}
