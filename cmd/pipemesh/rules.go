package main

import (
	"github.com/pipemesh/pipemesh/internal/config"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/protocol"
)

// applyRules copies the compression, quotas and limits sections of the
// config file (already validated) into the proxy config.
func applyRules(p *kafkaproxy.Config, f *config.File) {
	for _, r := range f.Compression {
		codec, _ := protocol.ParseCodec(r.Codec) // validated by config.Parse
		p.Compression = append(p.Compression, kafkaproxy.CompressionRule{
			Topic: r.Topic, Prefixed: r.Prefixed(), Codec: codec, Level: r.Level, MinBatchBytes: int(r.MinBatchBytes),
		})
	}
	for _, q := range f.Quotas {
		p.Quotas = append(p.Quotas, kafkaproxy.QuotaRule{
			Principal: q.Principal, Topic: q.Topic, Prefixed: q.Prefixed(),
			ProduceBytesPerSecond: int64(q.ProduceBytesPerSecond), FetchBytesPerSecond: int64(q.FetchBytesPerSecond),
			RequestsPerSecond: q.RequestsPerSecond,
		})
	}
	p.Limits = kafkaproxy.Limits{
		MemoryBytes:                   int64(f.Limits.MemoryBytes),
		MaxInflightBytesPerConnection: int64(f.Limits.MaxInflightBytesPerConnection),
	}
}
