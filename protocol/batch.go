package protocol

import (
	"encoding/binary"
	"fmt"
)

// Record batch (magic v2) layout: the byte offsets of the header fields and
// the header's length. See the Kafka protocol guide, "Record Batch".
const (
	batchLengthOffset     = 8
	batchMagicOffset      = 16
	batchCRCOffset        = 17
	batchAttributesOffset = 21
	batchLastDeltaOffset  = 23
	batchFirstTSOffset    = 27
	batchMaxTSOffset      = 35
	batchProducerIDOffset = 43
	batchEpochOffset      = 51
	batchBaseSeqOffset    = 53
	batchCountOffset      = 57
	// BatchHeaderBytes is the size of a magic v2 record batch header; the
	// records follow it.
	BatchHeaderBytes = 61
	// legacyHeaderBytes is the offset, length, CRC and magic of a magic v0/v1
	// message: enough to read its size and magic.
	legacyHeaderBytes = 17
)

// Attribute bits of a record batch.
const (
	CodecMask          = 0x07
	TimestampTypeBit   = 0x08
	TransactionalBit   = 0x10
	ControlBit         = 0x20
	DeleteHorizonBit   = 0x40
	batchAttributesLen = 2
)

// Codec is a record batch compression codec, the low three attribute bits.
type Codec int8

// The codecs Kafka defines.
const (
	CodecNone   Codec = 0
	CodecGzip   Codec = 1
	CodecSnappy Codec = 2
	CodecLZ4    Codec = 3
	CodecZstd   Codec = 4
)

// String names the codec as Kafka's compression.type does.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecGzip:
		return "gzip"
	case CodecSnappy:
		return "snappy"
	case CodecLZ4:
		return "lz4"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", int8(c))
}

// BatchHeader is the header of one record batch, read without touching (or
// decompressing) its records. For magic v0/v1 message sets only BaseOffset,
// Length, Magic, Codec and Records (always 1: a legacy compressed wrapper
// counts as one) are set.
type BatchHeader struct {
	BaseOffset      int64
	Length          int32 // bytes after the length field
	Magic           int8
	CRC             uint32
	Attributes      int16
	LastOffsetDelta int32
	FirstTimestamp  int64
	MaxTimestamp    int64
	ProducerID      int64
	ProducerEpoch   int16
	BaseSequence    int32
	Records         int32
}

// Codec is the batch's compression codec.
func (h *BatchHeader) Codec() Codec { return Codec(h.Attributes & CodecMask) }

// Transactional reports whether the batch belongs to a transaction.
func (h *BatchHeader) Transactional() bool { return h.Attributes&TransactionalBit != 0 }

// Control reports whether the batch holds a transaction marker, not data.
func (h *BatchHeader) Control() bool { return h.Attributes&ControlBit != 0 }

// Size is the batch's full size in bytes, header included.
func (h *BatchHeader) Size() int { return 12 + int(h.Length) }

// ParseBatchHeader reads the header of the record batch at the start of b.
// It returns ErrMalformed when b is too short for a header, or when the
// length field is out of range. The batch itself may extend past b (a Fetch
// response may end with a partial batch; a streamed frame may not be all
// here yet); Size says how long it is.
func ParseBatchHeader(b []byte) (BatchHeader, error) {
	var h BatchHeader
	if len(b) < legacyHeaderBytes {
		return h, fmt.Errorf("%w: record batch header needs %d bytes, have %d", ErrMalformed, legacyHeaderBytes, len(b))
	}
	h.BaseOffset = int64(binary.BigEndian.Uint64(b))
	h.Length = int32(binary.BigEndian.Uint32(b[batchLengthOffset:]))
	h.Magic = int8(b[batchMagicOffset])
	switch h.Magic {
	case 0, 1:
		// offset, size, crc(4), magic, attributes(1): one message.
		if h.Length < 6 || len(b) < legacyHeaderBytes+1 {
			return h, fmt.Errorf("%w: magic v%d message of %d bytes", ErrMalformed, h.Magic, h.Length)
		}
		h.Attributes = int16(b[legacyHeaderBytes])
		h.Records = 1
		return h, nil
	case 2:
	default:
		return h, fmt.Errorf("%w: record batch magic %d, want 0, 1 or 2", ErrMalformed, h.Magic)
	}
	if len(b) < BatchHeaderBytes {
		return h, fmt.Errorf("%w: record batch header needs %d bytes, have %d", ErrMalformed, BatchHeaderBytes, len(b))
	}
	if h.Length < BatchHeaderBytes-12 {
		return h, fmt.Errorf("%w: record batch length %d is shorter than its header", ErrMalformed, h.Length)
	}
	h.CRC = binary.BigEndian.Uint32(b[batchCRCOffset:])
	h.Attributes = int16(binary.BigEndian.Uint16(b[batchAttributesOffset:]))
	h.LastOffsetDelta = int32(binary.BigEndian.Uint32(b[batchLastDeltaOffset:]))
	h.FirstTimestamp = int64(binary.BigEndian.Uint64(b[batchFirstTSOffset:]))
	h.MaxTimestamp = int64(binary.BigEndian.Uint64(b[batchMaxTSOffset:]))
	h.ProducerID = int64(binary.BigEndian.Uint64(b[batchProducerIDOffset:]))
	h.ProducerEpoch = int16(binary.BigEndian.Uint16(b[batchEpochOffset:]))
	h.BaseSequence = int32(binary.BigEndian.Uint32(b[batchBaseSeqOffset:]))
	h.Records = int32(binary.BigEndian.Uint32(b[batchCountOffset:]))
	return h, nil
}

// BatchStats is what counting the batches of one partition's records gives.
type BatchStats struct {
	Batches int
	Records int64
	Bytes   int64 // whole batches, headers included
	// Control counts transaction marker batches; their records are not in
	// Records, since they carry no data.
	Control int
	// Partial is the size of a batch cut off at the end (Fetch responses
	// may end with one when a batch is larger than the fetch size left).
	Partial int
}

// CountBatches counts the whole batches in records by reading headers only.
// A trailing partial batch is reported in Partial and not counted; a header
// that does not parse ends the count with an error (what was counted stands).
func CountBatches(records []byte) (BatchStats, error) {
	var s BatchStats
	for len(records) > 0 {
		if len(records) < legacyHeaderBytes+1 ||
			12+int64(int32(binary.BigEndian.Uint32(records[batchLengthOffset:]))) > int64(len(records)) {
			s.Partial = len(records)
			return s, nil
		}
		h, err := ParseBatchHeader(records)
		if err != nil {
			return s, err
		}
		size := h.Size()
		s.Batches++
		s.Bytes += int64(size)
		if h.Magic == 2 && h.Control() {
			s.Control++
		} else {
			s.Records += int64(h.Records)
		}
		records = records[size:]
	}
	return s, nil
}
