package config

import (
	"fmt"

	"github.com/pipemesh/pipemesh/policy"
)

// The compression: and quotas: sections belong in the policy file
// (serve --policy), which is reloaded while the proxy runs; the config file
// still accepts them, in the same shape and checked by the same code
// (policy.CheckRules), for files written before the policy file held them.
// limits: is process sizing, not policy, and lives only here.

// CompressionRule recompresses Produce batches for matching topics; the
// shape is the policy file's.
type CompressionRule = policy.CompressionRule

// QuotaRule limits a principal, or a principal's traffic to some topics;
// the shape is the policy file's.
type QuotaRule = policy.QuotaRule

// Limits bound the proxy's memory.
type Limits struct {
	MemoryBytes                   Bytes `yaml:"memory_bytes"`
	MaxInflightBytesPerConnection Bytes `yaml:"max_inflight_bytes_per_connection"`
}

// HasRules reports whether the file sets compression or quota rules.
func (f *File) HasRules() bool { return len(f.Compression) > 0 || len(f.Quotas) > 0 }

func (f *File) validateRules(lines lineIndex) error {
	if issues := policy.CheckRules(f.Compression, f.Quotas); len(issues) > 0 {
		is := issues[0]
		return fmt.Errorf("%d: %s", lines.at(fmt.Sprintf("%s.%d.%s", is.Section, is.Index, is.Key)), is.Msg)
	}
	if m := f.Limits.MemoryBytes; m != 0 && m < 1<<20 {
		return fmt.Errorf("%d: limits.memory_bytes %d is below 1MiB; leave it out for the default (a quarter of the machine's memory)", lines.at("limits.memory_bytes"), m)
	}
	return nil
}
