package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Flight configures the Arrow Flight proxy (serve --flight-*).
type Flight struct {
	Listen          string           `yaml:"listen"`
	Advertise       string           `yaml:"advertise"`
	Upstreams       []FlightUpstream `yaml:"upstreams"`
	MaxMessageBytes Bytes            `yaml:"max_message_bytes"`
	TLSCert         string           `yaml:"tls_cert"`
	TLSKey          string           `yaml:"tls_key"`
	TLSClientCA     string           `yaml:"tls_client_ca"`
	TicketKeyFile   string           `yaml:"ticket_key_file"`
	// Splice (default true) moves authorized DoGet and DoPut data as the
	// HTTP/2 frames arrive; false uses gRPC's message path.
	Splice *bool `yaml:"splice"`
	// Per-principal caps on data streams (DoGet, DoPut, DoExchange).
	MaxStreams int   `yaml:"max_streams_per_principal"`
	ByteRate   Bytes `yaml:"byte_rate_per_principal"` // bytes per second
	// Compress maps a dataset name prefix ("*" for all) to the IPC body
	// compression of DoGet streams toward clients: none, lz4 or zstd.
	Compress map[string]string `yaml:"compress"`
}

// FlightUpstream is one Flight service behind the proxy. The one without a
// path_prefix is the default route.
type FlightUpstream struct {
	Name       string `yaml:"name"`
	URL        string `yaml:"url"`
	PathPrefix string `yaml:"path_prefix"`
}

// UnmarshalYAML implements yaml.Unmarshaler, checking the URL's scheme.
func (u *FlightUpstream) UnmarshalYAML(n *yaml.Node) error {
	type plain FlightUpstream
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	if p.URL == "" {
		return &lineError{line: n.Line, msg: "flight.upstreams entry has no url; write it like url: grpc://127.0.0.1:8815"}
	}
	scheme, _, ok := strings.Cut(p.URL, "://")
	switch {
	case !ok:
	case scheme == "grpc", scheme == "grpc+tcp", scheme == "grpc+tls", scheme == "grpc+unix":
	default:
		return &lineError{line: n.Line, msg: fmt.Sprintf("flight.upstreams url %q: want grpc://, grpc+tcp://, grpc+tls:// or grpc+unix://", p.URL)}
	}
	*u = FlightUpstream(p)
	return nil
}
