package protocol

import (
	"fmt"
	"testing"
)

// BenchmarkRecompressRecords rewrites one 1 MiB-of-records batch from each
// codec to zstd level 3; MB/s is of records as the client sent them.
func BenchmarkRecompressRecords(b *testing.B) {
	c := newTestCodecs(b, 64<<20)
	for _, from := range []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLZ4} {
		batch, recs := dataBatch(b, 3000, from, 0)
		b.Run(fmt.Sprintf("%s->zstd", from), func(b *testing.B) {
			var dst, scratch []byte
			b.SetBytes(int64(len(recs)))
			b.ReportAllocs()
			for b.Loop() {
				var changed bool
				dst, scratch, _, changed = c.RecompressRecords(dst[:0], batch, scratch, Recompression{Codec: CodecZstd, Level: 3})
				if !changed {
					b.Fatal("not rewritten")
				}
			}
			b.ReportMetric(float64(len(batch))/float64(len(dst)), "ratio")
		})
	}
}

// BenchmarkRewriteProduceRequest splices new records into a 12-partition
// Produce request.
func BenchmarkRewriteProduceRequest(b *testing.B) {
	body := produceRequestWith(9, 3, 4, true).AppendTo(nil)
	repl := make([]byte, 200)
	var dst []byte
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst, err = RewriteProduceRequest(dst[:0], 9, body, func(PartitionData) ([]byte, bool) { return repl, true })
		if err != nil {
			b.Fatal(err)
		}
	}
}
