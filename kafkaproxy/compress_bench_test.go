package kafkaproxy

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/protocol"
)

// BenchmarkProduceRecompress produces uncompressed JSON-like 1 KiB records
// with kgo to a blackhole kfake cluster: directly, through a proxy without
// rules, and through a proxy that recompresses the topic to zstd level 3.
// Compare MB/s (of records as produced) between the three in one run; the
// zstd run reports the batch size ratio (before/after) it achieved.
func BenchmarkProduceRecompress(b *testing.B) {
	var reportRatio func(*testing.B)
	// 4,096 distinct values, so that a batch (about 1,000 records) holds
	// no record twice and the ratio is that of the text, not of repeats.
	values := make([][]byte, 4096)
	for i := range values {
		var v []byte
		x := uint64(i) | 1
		for j := 0; len(v) < 1024; j++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			v = fmt.Appendf(v, `{"seq":%d,"trace":"%016x","msg":"GET /api/v1/items/%d 200","ms":%d}`, j, x, x%100000, x%900)
		}
		values[i] = v[:1024]
	}
	var reg *prometheus.Registry
	zstdRule := func(c *Config) {
		c.Compression = []CompressionRule{{Topic: "bench", Codec: protocol.CodecZstd, Level: 3}}
		reg = prometheus.NewRegistry()
		c.Registerer = reg
	}
	reportRatio = func(b *testing.B) {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		var before, after, secs float64
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "pipemesh_kafka_recompression_bytes_total":
					for _, l := range m.GetLabel() {
						if l.GetName() == "stage" && l.GetValue() == "before" {
							before += m.GetCounter().GetValue()
						} else if l.GetName() == "stage" {
							after += m.GetCounter().GetValue()
						}
					}
				case "pipemesh_kafka_recompression_seconds_total":
					secs += m.GetCounter().GetValue()
				}
			}
		}
		if after > 0 && secs > 0 {
			b.ReportMetric(before/after, "ratio")
			b.ReportMetric(before/1e6/secs, "recompress-MB/s/slot")
		}
	}
	for _, bc := range []struct {
		name    string
		proxied bool
		opts    []func(*Config)
	}{
		{"direct", false, nil},
		{"proxied", true, nil},
		{"proxied-zstd", true, []func(*Config){zstdRule}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			seeds := startBenchCluster(b, bc.proxied, true, bc.opts...)
			cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic("bench"),
				kgo.ProducerBatchCompression(kgo.NoCompression()))
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			benchProduce(b, cl, 1024, func(i int) []byte { return values[i%len(values)] })
			if len(bc.opts) > 0 {
				reportRatio(b)
			}
		})
	}
}
