package flightproxy

import (
	"github.com/pipemesh/pipemesh/internal/h2relay"

	"strings"

	"google.golang.org/grpc/metadata"
)

// forwardable copies md without the keys that belong to one hop: HTTP/2
// pseudo-headers, the transport's own headers and gRPC's reserved grpc-*
// keys (deadlines travel as the context's deadline instead). drop names
// further keys a stage consumed (the proxy's own credentials).
func forwardable(md metadata.MD, drop ...string) metadata.MD {
	out := make(metadata.MD, len(md))
next:
	for k, v := range md {
		switch {
		case strings.HasPrefix(k, ":"), strings.HasPrefix(k, "grpc-"),
			k == "content-type", k == "user-agent", k == "te", k == "host", k == "connection", k == h2relay.TokenHeader:
			continue
		}
		for _, d := range drop {
			if k == d {
				continue next
			}
		}
		out[k] = v
	}
	return out
}
