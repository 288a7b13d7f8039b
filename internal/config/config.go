// Package config reads the proxy's YAML config file (serve --config). Every
// key has a flag of the same meaning; flags given on the command line win.
// Errors name the file and line and say what is wrong.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pipemesh/pipemesh/policy"
)

// File is the config file's shape. Durations are Go durations ("30s",
// "10m"); sizes are bytes or a number with a KiB/MiB/GiB suffix.
type File struct {
	Kafka  Kafka  `yaml:"kafka"`
	Flight Flight `yaml:"flight"`
	Admin  Admin  `yaml:"admin"`
	Log    Log    `yaml:"log"`
	// Policy is the policy file (serve --policy), see docs/security.md.
	Policy string `yaml:"policy"`
	Audit  Audit  `yaml:"audit"`
	// Telemetry and lineage (telemetry.go, docs/lineage.md).
	Telemetry Telemetry `yaml:"telemetry"`
	Lineage   Lineage   `yaml:"lineage"`

	// Rules for the Kafka path (rules.go). Compression and Quotas belong
	// in the policy file; the config file keeps accepting them.
	Compression []CompressionRule `yaml:"compression"`
	Quotas      []QuotaRule       `yaml:"quotas"`
	Limits      Limits            `yaml:"limits"`
}

// Audit configures the audit log of policy decisions.
type Audit struct {
	// Log is a file to append JSON lines to, or "-" for standard error.
	Log    string `yaml:"log"`
	Allows bool   `yaml:"allows"`
}

// Kafka configures the Kafka proxy.
type Kafka struct {
	Listen          string   `yaml:"listen"`
	Upstream        HostList `yaml:"upstream"`
	AdvertiseHost   string   `yaml:"advertise_host"`
	BrokerPortBase  int      `yaml:"broker_port_base"`
	MaxFrameBytes   Bytes    `yaml:"max_frame_bytes"`
	IdleTimeout     Duration `yaml:"idle_timeout"`
	DialTimeout     Duration `yaml:"dial_timeout"`
	MaxInFlight     int      `yaml:"max_in_flight"`
	MetadataRefresh Duration `yaml:"metadata_refresh"`
	// TLS for client listeners, and TLS and SASL towards the brokers
	// (docs/security.md).
	TLS          TLS          `yaml:"tls"`
	UpstreamTLS  UpstreamTLS  `yaml:"upstream_tls"`
	UpstreamSASL UpstreamSASL `yaml:"upstream_sasl"`
}

// TLS configures TLS on the client listeners.
type TLS struct {
	CertFile      string `yaml:"cert_file"`
	KeyFile       string `yaml:"key_file"`
	ClientCAFile  string `yaml:"client_ca_file"`
	ClientAuth    string `yaml:"client_auth"`
	PrincipalFrom string `yaml:"principal_from"`
}

// UpstreamTLS configures TLS from the proxy to the brokers.
type UpstreamTLS struct {
	Enabled    bool   `yaml:"enabled"`
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// UpstreamSASL is the proxy's own SASL user at the brokers. The password
// comes from an environment variable, never from the file.
type UpstreamSASL struct {
	Mechanism   string `yaml:"mechanism"`
	Username    string `yaml:"username"`
	PasswordEnv string `yaml:"password_env"`
}

// HostList is a list of host:port, written as a YAML list or as one
// comma-separated string (as bootstrap.servers is).
type HostList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (h *HostList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*h = nil
		for _, v := range strings.Split(n.Value, ",") {
			if v = strings.TrimSpace(v); v != "" {
				*h = append(*h, v)
			}
		}
		return nil
	case yaml.SequenceNode:
		*h = nil
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return &lineError{line: c.Line, msg: "upstream entries are host:port strings"}
			}
			if _, _, err := net.SplitHostPort(c.Value); err != nil {
				return &lineError{line: c.Line, msg: fmt.Sprintf("kafka.upstream entry %q is not host:port", c.Value)}
			}
			*h = append(*h, c.Value)
		}
		return nil
	}
	return &lineError{line: n.Line, msg: "kafka.upstream: want host:port, a comma-separated list of them, or a YAML list"}
}

// Admin configures the admin HTTP server.
type Admin struct {
	Listen string `yaml:"listen"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Duration is a time.Duration read from "30s"-style text.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return &lineError{line: n.Line, msg: fmt.Sprintf("%q is not a duration; write it like 30s, 10m or 1h", n.Value)}
	}
	*d = Duration(v)
	return nil
}

// Bytes is a byte count read from "1048576" or "1MiB"-style text.
type Bytes int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseBytes(n.Value)
	if err != nil {
		return &lineError{line: n.Line, msg: err.Error()}
	}
	*b = Bytes(v)
	return nil
}

// ParseBytes reads a byte count with an optional KiB, MiB or GiB suffix.
func ParseBytes(s string) (int64, error) { return policy.ParseBytes(s) }

// lineError is a problem at a line of the file.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// lineIndex remembers the line of each key, for validation errors.
type lineIndex map[string]int

// yaml.v3 reports unknown keys as "line N: field X not found in type T".
var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type`)

// Load reads and validates path. An error names path and a line.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse reads and validates data, naming it path in errors.
func Parse(path string, data []byte) (*File, error) {
	var f File
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, describe(path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // EOF: empty file
		return nil, describe(path, err)
	}
	if err := f.validate(indexLines(&root)); err != nil {
		return nil, fmt.Errorf("%s:%w", path, err)
	}
	return &f, nil
}

func describe(path string, err error) error {
	var le *lineError
	if errors.As(err, &le) {
		return fmt.Errorf("%s:%d: %s", path, le.line, le.msg)
	}
	var ve *policy.ValueError
	if errors.As(err, &ve) {
		return fmt.Errorf("%s:%d: %s", path, ve.Line, ve.Msg)
	}
	msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n"), "yaml: ")
	var out []string
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if m := unknownField.FindStringSubmatch(l); m != nil {
			out = append(out, fmt.Sprintf("%s:%s: unknown key %q; see docs/configuration.md for the keys", path, m[1], m[2]))
			continue
		}
		if rest, ok := strings.CutPrefix(l, "line "); ok {
			if n, msg, ok := strings.Cut(rest, ": "); ok {
				out = append(out, fmt.Sprintf("%s:%s: %s", path, n, msg))
				continue
			}
		}
		out = append(out, fmt.Sprintf("%s: %s", path, l))
	}
	return errors.New(strings.Join(out, "\n"))
}

// indexLines maps "section" and "section.key" to their lines, and for list
// sections "section.N" and "section.N.key".
func indexLines(root *yaml.Node) lineIndex {
	idx := lineIndex{}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return idx
	}
	top := root.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		name, sec := top.Content[i].Value, top.Content[i+1]
		idx[name] = top.Content[i].Line
		if sec.Kind == yaml.SequenceNode {
			for j, entry := range sec.Content {
				item := fmt.Sprintf("%s.%d", name, j)
				idx[item] = entry.Line
				for k := 0; k+1 < len(entry.Content); k += 2 {
					idx[item+"."+entry.Content[k].Value] = entry.Content[k].Line
				}
			}
			continue
		}
		for j := 0; j+1 < len(sec.Content); j += 2 {
			idx[name+"."+sec.Content[j].Value] = sec.Content[j].Line
		}
	}
	return idx
}

// at returns the line of key, or of the nearest enclosing entry or
// section, or 1.
func (idx lineIndex) at(key string) int {
	for {
		if l, ok := idx[key]; ok {
			return l
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			return 1
		}
		key = key[:i]
	}
}

func (f *File) validate(lines lineIndex) error {
	k := &f.Kafka
	at := func(key string) int { return lines.at("kafka." + key) }
	if k.Listen != "" {
		if _, _, err := net.SplitHostPort(k.Listen); err != nil {
			return fmt.Errorf("%d: kafka.listen %q is not host:port", at("listen"), k.Listen)
		}
	}
	for _, u := range k.Upstream {
		if _, _, err := net.SplitHostPort(u); err != nil {
			return fmt.Errorf("%d: kafka.upstream entry %q is not host:port", at("upstream"), u)
		}
	}
	if k.BrokerPortBase < -1 || k.BrokerPortBase > 65535 {
		return fmt.Errorf("%d: kafka.broker_port_base %d must be a port (or -1 for OS-assigned ports)", at("broker_port_base"), k.BrokerPortBase)
	}
	if k.MaxFrameBytes > 1<<31-1 {
		return fmt.Errorf("%d: kafka.max_frame_bytes %d is above what a Kafka frame can hold (2GiB - 1)", at("max_frame_bytes"), k.MaxFrameBytes)
	}
	if k.MaxInFlight < 0 {
		return fmt.Errorf("%d: kafka.max_in_flight must be positive (0 takes the default)", at("max_in_flight"))
	}
	if err := f.validateRules(lines); err != nil {
		return err
	}
	if f.Telemetry.MaxLabelValues < 0 {
		return fmt.Errorf("%d: telemetry.max_label_values must be at least 1 (0 takes the default)", lines.at("telemetry.max_label_values"))
	}
	switch strings.ToLower(f.Log.Level) {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("%d: log.level %q: want debug, info, warn or error", lines.at("log.level"), f.Log.Level)
	}
	switch f.Log.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("%d: log.format %q: want text or json", lines.at("log.format"), f.Log.Format)
	}
	return nil
}
