package protocol

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"
)

// FetchKey is the API key of Fetch.
const FetchKey = 1

// PartitionData is what a walk over a Produce request or Fetch response
// sees of one partition: its topic (by name, or by id from Produce v13 and
// Fetch v13 on) and its record batches, which alias the frame.
type PartitionData struct {
	Topic     []byte
	TopicID   [16]byte
	Partition int32
	ErrorCode int16
	Records   []byte
	// RecordsAt is the offset in the body of the records' length prefix,
	// so that a rewrite can splice new records in (RewriteProduceRequest).
	RecordsAt int
}

// HasTopLevelTags reports whether a Produce (v10+) or Fetch (v16+) response
// body carries any top-level tagged field. Those versions put the leader
// endpoints of KIP-951 (NodeEndpoints, tag 0) there, which hold broker host
// and port and must be rewritten; the common response has none and can pass
// through untouched. The walk skips record bytes and allocates nothing.
// Other keys and versions report false.
func HasTopLevelTags(key, version int16, body []byte) (bool, error) {
	var b kbin.Reader
	var err error
	switch {
	case key == ProduceKey && version >= 10 && version <= 13:
		b, err = skipProduceResponse(version, body)
	case key == FetchKey && version >= 16 && version <= 18:
		b, err = WalkFetchResponse(version, body, nil)
	default:
		return false, nil
	}
	if err != nil {
		return false, err
	}
	n := b.Uvarint()
	if err := b.Complete(); err != nil {
		return false, fmt.Errorf("%w: %s v%d response ends before its tagged fields", ErrMalformed, KeyName(key), version)
	}
	return n > 0, nil
}

// skipProduceResponse walks a flexible Produce response body (v9+) up to its
// top-level tagged fields and returns the reader positioned there.
func skipProduceResponse(version int16, body []byte) (kbin.Reader, error) {
	b := kbin.Reader{Src: body}
	for nt := b.CompactArrayLen(); nt > 0 && b.Ok(); nt-- {
		if version >= 13 {
			b.Span(16)
		} else {
			b.Span(int(b.Uvarint()) - 1)
		}
		for np := b.CompactArrayLen(); np > 0 && b.Ok(); np-- {
			b.Span(4 + 2 + 8 + 8 + 8) // partition, error, base offset, append time, log start
			for ne := b.CompactArrayLen(); ne > 0 && b.Ok(); ne-- {
				b.Int32()
				b.CompactNullableBytes()
				skipTags(&b)
			}
			b.CompactNullableBytes() // error message
			skipTags(&b)
		}
		skipTags(&b)
	}
	b.Int32() // throttle
	if err := b.Complete(); err != nil {
		return b, fmt.Errorf("%w: Produce v%d response", ErrMalformed, version)
	}
	return b, nil
}

// WalkFetchResponse walks a Fetch response body (v4+, the versions with
// record batches of magic v2), calls fn (if not nil) for every partition, and
// returns the reader positioned at the end of the body: at the top-level
// tagged fields in flexible versions (v12+). Record bytes are handed to fn
// as they lie in the frame; nothing is copied or decompressed. PartitionData
// is passed by value so that walking allocates nothing.
func WalkFetchResponse(version int16, body []byte, fn func(PartitionData)) (kbin.Reader, error) {
	if version < 4 {
		return kbin.Reader{}, fmt.Errorf("%w: Fetch v%d predates record batch v2; only v4+ can be walked", ErrMalformed, version)
	}
	flexible := version >= 12
	b := kbin.Reader{Src: body}
	b.Span(4) // throttle
	if version >= 7 {
		b.Span(2 + 4) // error, session id
	}
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
			pd.ErrorCode = b.Int16()
			b.Span(8 + 8) // high watermark, last stable
			if version >= 5 {
				b.Span(8) // log start
			}
			for na := arrayLen(&b, flexible); na > 0 && b.Ok(); na-- {
				b.Span(8 + 8)
				if flexible {
					skipTags(&b)
				}
			}
			if version >= 11 {
				b.Int32() // preferred read replica
			}
			readRecords(&b, flexible, body, &pd)
			if fn != nil && b.Ok() {
				fn(pd)
			}
		}
		if flexible {
			skipTags(&b)
		}
	}
	if err := b.Complete(); err != nil {
		return b, fmt.Errorf("%w: Fetch v%d response", ErrMalformed, version)
	}
	return b, nil
}
