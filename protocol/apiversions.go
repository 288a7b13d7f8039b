package protocol

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// UnsupportedApiVersions is the answer to an ApiVersions request newer than
// the server reads (KIP-511): a v0 response with UNSUPPORTED_VERSION listing
// only the ApiVersions range it does support, which clients read to retry.
func UnsupportedApiVersions(minVersion, maxVersion int16) *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(0)
	resp.ErrorCode = kerr.UnsupportedVersion.Code
	resp.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: ApiVersionsKey, MinVersion: minVersion, MaxVersion: maxVersion}}
	return resp
}
