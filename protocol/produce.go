package protocol

import (
	"encoding/binary"
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
	_, _, err := walkProduce(version, body, nil, fn)
	return err
}

// ProduceTopics calls fn with each topic a Produce request body (v3+)
// names, by name or (v13) by id, as far as body goes: for the head of a
// frame streamed through, which may end inside a partition's records. It
// reports whether every topic the request names was seen, so a stage can
// tell from the head alone that no topic of a single-topic request concerns
// it. Allocation-free; nothing past the names is looked at.
func ProduceTopics(version int16, body []byte, fn func(topic []byte, id [16]byte)) (all bool) {
	named, seen, err := walkProduce(version, body, fn, nil)
	return err == nil || (named > 0 && seen == named)
}

// walkProduce is the one Produce request walk: onTopic (if not nil) sees
// each topic as its name is read, fn (if not nil) each whole partition. It
// returns how many topics the request names and how many were read.
func walkProduce(version int16, body []byte, onTopic func([]byte, [16]byte), fn func(PartitionData)) (named, seen int, err error) {
	if version < 3 {
		return 0, 0, fmt.Errorf("%w: Produce v%d predates transactional ids; only v3+ can be walked", ErrMalformed, version)
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
	nt := arrayLen(&b, flexible)
	if b.Ok() {
		named = int(nt)
	}
	for ; nt > 0 && b.Ok(); nt-- {
		switch {
		case version >= 13:
			pd.Topic = nil
			pd.TopicID = b.Uuid()
		case flexible:
			pd.Topic = b.Span(int(b.Uvarint()) - 1)
		default:
			pd.Topic = b.Span(int(b.Int16()))
		}
		if !b.Ok() {
			break
		}
		seen++
		if onTopic != nil {
			onTopic(pd.Topic, pd.TopicID)
		}
		for np := arrayLen(&b, flexible); np > 0 && b.Ok(); np-- {
			pd.Partition = b.Int32()
			readRecords(&b, flexible, body, &pd)
			if fn != nil && b.Ok() {
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
		return named, seen, fmt.Errorf("%w: Produce v%d request", ErrMalformed, version)
	}
	return named, seen, nil
}

// readRecords reads a partition's records field (and, in flexible
// versions, the partition's tagged fields after it) into pd, with the
// records' offset in body.
func readRecords(b *kbin.Reader, flexible bool, body []byte, pd *PartitionData) {
	pd.RecordsAt = len(body) - len(b.Src)
	if flexible {
		pd.Records = b.CompactNullableBytes()
		skipTags(b)
	} else {
		pd.Records = b.NullableBytes()
	}
}

// arrayLen reads an array length: compact (length+1, as a uvarint) in
// flexible versions, an int32 before. Null arrays read as 0.
func arrayLen(b *kbin.Reader, flexible bool) int32 {
	if flexible {
		return b.CompactArrayLen()
	}
	return b.ArrayLen()
}

// RewriteProduceRequest appends to dst the Produce request body (v3+) with
// the records of some partitions replaced: fn sees each partition as
// WalkProduceRequest does and returns the new records and true, or false to
// keep them. The records fn returns are copied before fn is called again, so
// fn may reuse one buffer. Everything else (transactional id, acks, names,
// ids, tagged fields) is copied verbatim; only the records' length prefixes
// change. An error leaves dst as it was.
func RewriteProduceRequest(dst []byte, version int16, body []byte, fn func(PartitionData) ([]byte, bool)) ([]byte, error) {
	start := len(dst)
	flexible := version >= 9
	done := 0 // body bytes copied so far
	var ferr error
	err := WalkProduceRequest(version, body, func(pd PartitionData) {
		if ferr != nil || pd.Records == nil {
			return
		}
		recs, ok := fn(pd)
		if !ok {
			return
		}
		// The records end where their prefix ends plus their length; the
		// prefix is whatever lies between RecordsAt and there.
		end := pd.RecordsAt + prefixLen(body[pd.RecordsAt:], flexible) + len(pd.Records)
		if end > len(body) || pd.RecordsAt < done {
			ferr = fmt.Errorf("%w: Produce v%d records of partition %d out of place", ErrMalformed, version, pd.Partition)
			return
		}
		dst = append(dst, body[done:pd.RecordsAt]...)
		if flexible {
			dst = binary.AppendUvarint(dst, uint64(len(recs))+1)
		} else {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(recs)))
		}
		dst = append(dst, recs...)
		done = end
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		return dst[:start], err
	}
	return append(dst, body[done:]...), nil
}

// prefixLen is the size of the length prefix at the start of b: an int32, or
// a uvarint in flexible versions (which a peer may encode non-minimally).
func prefixLen(b []byte, flexible bool) int {
	if !flexible {
		return 4
	}
	_, n := binary.Uvarint(b)
	if n <= 0 {
		return len(b) + 1 // caught by the caller's bounds check
	}
	return n
}
