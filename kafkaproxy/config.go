package kafkaproxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/pipemesh/pipemesh/internal/tlsfiles"
	"github.com/pipemesh/pipemesh/policy"
	"github.com/pipemesh/pipemesh/protocol"
)

// Config is what a Proxy needs. Zero values take the defaults documented on
// each field.
type Config struct {
	// Listen is the bootstrap address clients are given, host:port.
	Listen string
	// Upstreams are the bootstrap addresses of the Kafka cluster. Each
	// bootstrap connection starts at the next one in turn and falls
	// through the list until one answers.
	Upstreams []string
	// AdvertiseHost is the host put in every broker address clients see.
	// Default: the host of Listen. It must be set when Listen binds every
	// interface (0.0.0.0 or ::), since no one host is right then.
	AdvertiseHost string
	// BrokerPortBase is added to a broker's node id to give the port of its
	// listener, so every replica given the same config advertises the same
	// addresses. Default: the port of Listen plus one. A negative value asks
	// the OS for a free port per broker, which is right only for a single
	// embedded proxy (demo, tests, benchmarks).
	BrokerPortBase int
	// MaxFrameBytes bounds a request or response frame; larger frames close
	// the connection before anything is allocated. Default 100 MiB.
	MaxFrameBytes int32
	// IdleTimeout closes a client connection that has sent nothing and has
	// nothing in flight for this long. Default 10 minutes, as a broker's
	// connections.max.idle.ms.
	IdleTimeout time.Duration
	// DialTimeout bounds each upstream connection attempt. Default 10s.
	DialTimeout time.Duration
	// MaxInFlight bounds the requests one connection may have outstanding;
	// past it the proxy stops reading from the client. Default 256.
	MaxInFlight int
	// MetadataRefresh is how often the proxy asks the cluster for its
	// brokers and topics on its own, so new brokers get listeners before a
	// client asks. Default 30s.
	MetadataRefresh time.Duration
	// Logger receives connection and error logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the proxy's metrics. Default: a private registry.
	Registerer prometheus.Registerer
	// Policy, when set, turns on identity and authorization: SASL is
	// terminated at the proxy when the policy defines principals, and every
	// request is checked against the policy in force (see docs/security.md).
	// Nil keeps the zero-allocation pass-through path.
	Policy *policy.Store
	// AuditLog, when set, receives one JSON line per denied decision (and
	// per allowed one with AuditAllows). Nil logs denials at warn level.
	AuditLog    io.Writer
	AuditAllows bool
	// ClientTLS, when set, makes every client listener speak TLS. With
	// client certificates verified (mTLS), the certificate names the
	// principal, by PrincipalFrom (default: SPIFFE ID, else common name).
	ClientTLS     *tls.Config
	PrincipalFrom tlsfiles.PrincipalFrom
	// UpstreamTLS and UpstreamSASL, when set, secure and authenticate every
	// connection the proxy opens to a broker with the proxy's own
	// credentials.
	UpstreamTLS  *tls.Config
	UpstreamSASL sasl.Mechanism
	// Telemetry configures the observe stage: throughput metrics per
	// topic and client, request durations, and lineage.
	Telemetry TelemetryConfig
	// Compression rules recompress Produce batches per topic
	// (docs/compression.md). Fixed for the life of the proxy; leave
	// Compression and Quotas empty to take them from Policy instead, where
	// they follow reloads. Rules in both are an error.
	Compression []CompressionRule
	// Quotas are per-principal and per-(principal, topic) rate limits
	// (docs/quotas.md); fixed, like Compression.
	Quotas []QuotaRule
	// Limits bound memory; zero fields take their defaults.
	Limits Limits
	// RecompressWorkers bounds how many batches are recompressed at once,
	// over all connections. Default GOMAXPROCS.
	RecompressWorkers int
	// WrapClientConn, when set, wraps every accepted client connection
	// (tests use it to capture what clients receive).
	WrapClientConn func(net.Conn) net.Conn
}

// Defaults for Config fields left zero.
const (
	DefaultIdleTimeout     = 10 * time.Minute
	DefaultDialTimeout     = 10 * time.Second
	DefaultMaxInFlight     = 256
	DefaultMetadataRefresh = 30 * time.Second
)

func (c *Config) setDefaults() error {
	if c.Listen == "" {
		return errors.New("kafkaproxy: no listen address; set --kafka-listen (for example 127.0.0.1:19092)")
	}
	if len(c.Upstreams) == 0 {
		return errors.New("kafkaproxy: no upstream brokers; set --kafka-upstream (for example 127.0.0.1:9092)")
	}
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("kafkaproxy: listen address %q is not host:port: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("kafkaproxy: listen port %q is not a number", portStr)
	}
	for _, u := range c.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			return fmt.Errorf("kafkaproxy: upstream %q is not host:port: %w", u, err)
		}
	}
	if c.AdvertiseHost == "" {
		c.AdvertiseHost = host
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return fmt.Errorf("kafkaproxy: listen address %q binds every interface, so the host to tell clients is unknown; set --advertise-host", c.Listen)
		}
	}
	if c.BrokerPortBase < -1 || c.BrokerPortBase > 65535 {
		return fmt.Errorf("kafkaproxy: broker port base %d is not a port; use 1-65535, or -1 for OS-assigned ports", c.BrokerPortBase)
	}
	if c.IdleTimeout < 0 || c.DialTimeout < 0 || c.MetadataRefresh < 0 || c.MaxInFlight < 0 {
		return errors.New("kafkaproxy: idle timeout, dial timeout, metadata refresh and max in-flight must not be negative (0 takes the default)")
	}
	if c.BrokerPortBase == 0 {
		if port == 0 {
			return errors.New("kafkaproxy: listen port 0 leaves the broker ports undefined; set --broker-port-base")
		}
		c.BrokerPortBase = port + 1
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = protocol.DefaultMaxFrameBytes
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MetadataRefresh <= 0 {
		c.MetadataRefresh = DefaultMetadataRefresh
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	return nil
}
