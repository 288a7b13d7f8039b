package protocol

import (
	"encoding/binary"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Recompression is what one batch rewrite is asked to do: the target codec
// and level, and the smallest batch (whole, header included) worth
// rewriting.
type Recompression struct {
	Codec         Codec
	Level         int
	MinBatchBytes int
}

// CodecBytes is what a rewrite saw of one source codec: whole batches, header
// included, as they came and as they left.
type CodecBytes struct {
	Batches int
	In, Out int64
}

// RecompressStats counts a rewrite of one partition's records.
type RecompressStats struct {
	// ByCodec is indexed by the source codec of the rewritten batches.
	ByCodec [CodecZstd + 1]CodecBytes
	// Skipped counts batches left as they were because they could not be
	// rewritten safely: a wrong CRC, a decompression error, a batch past
	// the decompression cap. The broker judges them as sent.
	Skipped int
	// Failure is the first reason a batch was skipped, for the log.
	Failure error
}

// Rewritten is how many batches changed.
func (s *RecompressStats) Rewritten() int {
	n := 0
	for _, c := range s.ByCodec {
		n += c.Batches
	}
	return n
}

// RecompressRecords appends to dst the record batches of records with every
// magic v2 data batch whose codec differs from r.Codec recompressed to it.
// A rewritten batch keeps its base offset, last offset delta, timestamps,
// producer id and epoch, base sequence, record count and every attribute
// bit but the codec; its length and CRC-32C are computed anew. Batches of
// magic v0/v1, control batches (transaction markers), batches already in the
// target codec, batches smaller than r.MinBatchBytes, and batches that fail
// their CRC or do not decompress are copied unchanged, so the broker answers
// for them as if the proxy were not there. scratch holds the decompressed
// records between calls (it is grown and returned). changed reports whether
// any batch was rewritten; when false, dst holds records unchanged.
func (c *Codecs) RecompressRecords(dst, records, scratch []byte, r Recompression) (out, scratchOut []byte, st RecompressStats, changed bool) {
	for len(records) > 0 {
		size := 0
		if len(records) >= legacyHeaderBytes {
			size = 12 + int(int32(binary.BigEndian.Uint32(records[batchLengthOffset:])))
		}
		if size < BatchHeaderBytes || size > len(records) || records[batchMagicOffset] != 2 {
			// A legacy message set, or something the broker will reject:
			// the rest goes as it came.
			return append(dst, records...), scratch, st, changed
		}
		batch := records[:size]
		records = records[size:]
		attrs := int16(binary.BigEndian.Uint16(batch[batchAttributesOffset:]))
		from := Codec(attrs & CodecMask)
		if attrs&ControlBit != 0 || from == r.Codec || size < r.MinBatchBytes || from > CodecZstd {
			dst = append(dst, batch...)
			continue
		}
		if crc32.Checksum(batch[batchAttributesOffset:], castagnoli) != binary.BigEndian.Uint32(batch[batchCRCOffset:]) {
			st.skip(errCRC)
			dst = append(dst, batch...)
			continue
		}
		var err error
		scratch, err = c.Decompress(scratch[:0], from, batch[BatchHeaderBytes:])
		if err != nil {
			st.skip(err)
			dst = append(dst, batch...)
			continue
		}
		start := len(dst)
		dst = append(dst, batch[:BatchHeaderBytes]...)
		dst, err = c.Compress(dst, r.Codec, r.Level, scratch)
		if err != nil {
			st.skip(err)
			dst = append(dst[:start], batch...)
			continue
		}
		nb := dst[start:]
		binary.BigEndian.PutUint32(nb[batchLengthOffset:], uint32(len(nb)-12))
		binary.BigEndian.PutUint16(nb[batchAttributesOffset:], uint16(attrs&^CodecMask|int16(r.Codec)))
		binary.BigEndian.PutUint32(nb[batchCRCOffset:], crc32.Checksum(nb[batchAttributesOffset:], castagnoli))
		cb := &st.ByCodec[from]
		cb.Batches++
		cb.In += int64(size)
		cb.Out += int64(len(nb))
		changed = true
	}
	return dst, scratch, st, changed
}

type crcError struct{}

func (crcError) Error() string { return "record batch CRC-32C does not match its contents" }

var errCRC error = crcError{}

func (s *RecompressStats) skip(err error) {
	s.Skipped++
	if s.Failure == nil {
		s.Failure = err
	}
}
