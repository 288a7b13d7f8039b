package main

import (
	"github.com/pipemesh/pipemesh/internal/config"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// applyRules copies the compression, quotas and limits sections of the
// config file (already validated) into the proxy config. Compression and
// quota rules belong in the policy file; those of the config file still
// work, and the policy file may then not set any (rulesIn names the file).
func applyRules(s *settings, f *config.File, path string) {
	// config.Parse ran policy.CheckRules, so FileRules cannot fail here.
	s.proxy.Compression, s.proxy.Quotas, _ = kafkaproxy.FileRules(f.Compression, f.Quotas)
	if f.HasRules() {
		s.rulesIn = path
	}
	s.proxy.Limits = kafkaproxy.Limits{
		MemoryBytes:                   int64(f.Limits.MemoryBytes),
		MaxInflightBytesPerConnection: int64(f.Limits.MaxInflightBytesPerConnection),
	}
}
