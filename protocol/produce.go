package protocol

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"
)

// ProduceKey is the API key of Produce.
const ProduceKey = 0

// ProduceAcks returns the acks field of a Produce request body of the given
// version. acks=0 means the broker sends no response at all, so a proxy must
// not wait for one. From v3 the transactional id comes first (a compact
// nullable string from v9, when Produce became flexible).
func ProduceAcks(version int16, body []byte) (int16, error) {
	b := kbin.Reader{Src: body}
	switch {
	case version >= 9:
		b.CompactNullableBytes()
	case version >= 3:
		// A nullable string: an int16 length, -1 for null.
		if n := b.Int16(); n > 0 {
			b.Span(int(n))
		}
	}
	acks := b.Int16()
	if err := b.Complete(); err != nil {
		return 0, fmt.Errorf("%w: Produce v%d request too short to hold acks", ErrMalformed, version)
	}
	return acks, nil
}

// WalkProduceRequest walks a Produce request body (v3+, the versions with
// record batches of magic v2 that current clients send) and calls fn for
// every partition, with its records as they lie in the frame. It reads
// nothing but lengths and names; nothing is copied or decompressed.
// PartitionData is passed by value so that walking allocates nothing.
func WalkProduceRequest(version int16, body []byte, fn func(PartitionData)) error {
	if version < 3 {
		return fmt.Errorf("%w: Produce v%d predates transactional ids; only v3+ can be walked", ErrMalformed, version)
	}
	flexible := version >= 9
	b := kbin.Reader{Src: body}
	if flexible {
		b.CompactNullableBytes()
	} else if n := b.Int16(); n > 0 {
		b.Span(int(n))
	}
	b.Span(2 + 4) // acks, timeout
	var pd PartitionData
	for nt := arrayLen(&b, flexible); nt > 0 && b.Ok(); nt-- {
		switch {
		case version >= 13:
			pd.Topic = nil
			pd.TopicID = b.Uuid()
		case flexible:
			pd.Topic = b.Span(int(b.Uvarint()) - 1)
		default:
			pd.Topic = b.Span(int(b.Int16()))
		}
		for np := arrayLen(&b, flexible); np > 0 && b.Ok(); np-- {
			pd.Partition = b.Int32()
			if flexible {
				pd.Records = b.CompactNullableBytes()
				skipTags(&b)
			} else {
				pd.Records = b.NullableBytes()
			}
			if b.Ok() {
				fn(pd)
			}
		}
		if flexible {
			skipTags(&b)
		}
	}
	if flexible {
		skipTags(&b)
	}
	if err := b.Complete(); err != nil {
		return fmt.Errorf("%w: Produce v%d request", ErrMalformed, version)
	}
	return nil
}

// arrayLen reads an array length: compact (length+1, as a uvarint) in
// flexible versions, an int32 before. Null arrays read as 0.
func arrayLen(b *kbin.Reader, flexible bool) int32 {
	if flexible {
		return b.CompactArrayLen()
	}
	return b.ArrayLen()
}
