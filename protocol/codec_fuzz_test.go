package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

// fuzzCap is the decompression cap in the fuzz targets: small, so that a
// bomb the fuzzer finds is caught quickly.
const fuzzCap = 64 << 10

// maxRewrittenBatch bounds one rewritten batch: its header and the
// compressed form of at most fuzzCap bytes (every codec's worst-case
// expansion is far below doubling).
const maxRewrittenBatch = BatchHeaderBytes + 2*fuzzCap + 1024

// FuzzDecompress checks that decompressing any input with any codec never
// panics and never yields more than the cap.
func FuzzDecompress(f *testing.F) {
	c := newTestCodecs(f, fuzzCap)
	src := payload(3000)
	for _, codec := range allCodecs {
		f.Add(uint8(codec), kgoCompress(f, codec, src))
	}
	f.Add(uint8(CodecSnappy), xerial(src, 1000))
	f.Add(uint8(CodecZstd), kgoCompress(f, CodecZstd, make([]byte, 4*fuzzCap)))
	f.Fuzz(func(t *testing.T, codec uint8, data []byte) {
		out, err := c.Decompress(nil, Codec(codec%8), data)
		if err == nil && len(out) > fuzzCap {
			t.Fatalf("%s: %d bytes out, cap %d", Codec(codec%8), len(out), fuzzCap)
		}
		if err != nil && len(out) != 0 {
			t.Fatalf("%s: failed (%v) but appended %d bytes", Codec(codec%8), err, len(out))
		}
	})
}

// FuzzRecompressRecords checks that a rewrite of any input never panics,
// leaves input it cannot rewrite byte for byte as it was, keeps the batch
// and record counts, and grows each batch by at most the bound above.
func FuzzRecompressRecords(f *testing.F) {
	c := newTestCodecs(f, fuzzCap)
	for _, codec := range allCodecs {
		b, _ := dataBatch(f, 5, codec, 0)
		f.Add(uint8(CodecZstd), true, b)
		f.Add(uint8(CodecGzip), false, b)
	}
	ctl, _ := dataBatch(f, 1, CodecNone, ControlBit)
	plain, _ := dataBatch(f, 3, CodecNone, TransactionalBit)
	f.Add(uint8(CodecLZ4), true, append(ctl, plain...))
	f.Add(uint8(CodecZstd), true, bombBatch(f, 2*fuzzCap))
	f.Add(uint8(CodecSnappy), false, legacyMessage())
	f.Fuzz(func(t *testing.T, to uint8, fixCRC bool, records []byte) {
		r := Recompression{Codec: Codec(to % 5), Level: 1}
		if fixCRC {
			// Let mutated records reach the decoders instead of stopping
			// at the CRC check.
			records = bytes.Clone(records)
			fixCRCs(records)
		}
		in := bytes.Clone(records)
		out, _, st, changed := c.RecompressRecords(nil, records, nil, r)
		if !bytes.Equal(in, records) {
			t.Fatal("the input was modified")
		}
		if !changed {
			if !bytes.Equal(out, records) {
				t.Fatal("nothing rewritten, but the output differs from the input")
			}
			return
		}
		if n := st.Rewritten(); len(out) > len(records)+n*maxRewrittenBatch {
			t.Fatalf("%d bytes in, %d out over %d rewritten batches", len(records), len(out), n)
		}
		before, errIn := CountBatches(records)
		after, errOut := CountBatches(out)
		if errIn == nil && (errOut != nil || before.Batches != after.Batches || before.Records != after.Records) {
			t.Fatalf("counts changed: %+v (%v) -> %+v (%v)", before, errIn, after, errOut)
		}
		if errOut != nil && !errors.Is(errOut, ErrMalformed) {
			t.Fatal(errOut)
		}
	})
}

// FuzzRewriteProduceRequest checks that splicing records into any body never
// panics, and that where the walk accepts the body the result walks too,
// with the new records in place.
func FuzzRewriteProduceRequest(f *testing.F) {
	for _, v := range []int16{3, 8, 9, 13} {
		f.Add(v, produceRequestWith(v, 2, 3, v%2 == 1).AppendTo(nil))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		version = 3 + int16(uint16(version)%11)
		repl := []byte("replaced records")
		out, err := RewriteProduceRequest(nil, version, body, func(PartitionData) ([]byte, bool) { return repl, true })
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if err := WalkProduceRequest(version, out, func(pd PartitionData) {
			if pd.Records != nil && !bytes.Equal(pd.Records, repl) {
				t.Fatalf("partition %d: records %q after the rewrite", pd.Partition, pd.Records)
			}
		}); err != nil {
			t.Fatalf("the rewritten body does not walk: %v", err)
		}
	})
}

// fixCRCs sets the CRC of every whole magic v2 batch in records.
func fixCRCs(records []byte) {
	for len(records) >= BatchHeaderBytes && records[batchMagicOffset] == 2 {
		size := 12 + int(int32(binary.BigEndian.Uint32(records[batchLengthOffset:])))
		if size < BatchHeaderBytes || size > len(records) {
			return
		}
		binary.BigEndian.PutUint32(records[batchCRCOffset:], crc32.Checksum(records[batchAttributesOffset:size], castagnoli))
		records = records[size:]
	}
}

// FuzzProduceTopics checks that the head walk never panics, and that on any
// prefix of a body it sees a prefix of the topics it sees on the whole.
func FuzzProduceTopics(f *testing.F) {
	for _, v := range []int16{3, 9, 13} {
		f.Add(v, produceRequestWith(v, 3, 2, v%2 == 1).AppendTo(nil), uint16(40))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte, cut uint16) {
		version = 3 + int16(uint16(version)%11)
		var whole, head [][]byte
		allWhole := ProduceTopics(version, body, func(topic []byte, id [16]byte) { whole = append(whole, append(topic, id[:]...)) })
		n := min(int(cut), len(body))
		ProduceTopics(version, body[:n], func(topic []byte, id [16]byte) { head = append(head, append(topic, id[:]...)) })
		if len(head) > len(whole) {
			t.Fatalf("%d topics in a %d-byte head, %d in the whole body", len(head), n, len(whole))
		}
		for i := range head {
			if !bytes.Equal(head[i], whole[i]) {
				t.Fatalf("topic %d differs between head and body", i)
			}
		}
		if WalkProduceRequest(version, body, func(PartitionData) {}) == nil && !allWhole {
			t.Fatal("the walk accepts the body but not every topic was seen")
		}
	})
}
