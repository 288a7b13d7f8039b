package kafkaproxy

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"

	"github.com/pipemesh/pipemesh/protocol"
)

// walkProduceErrors calls fn for every partition of a Produce response body
// (v3 to v13) that carries an error code, with its topic (by name, or by id
// from v13). The protocol package walks requests and Fetch responses; this is
// the one response the observe stage reads that it does not, and it only
// needs the error codes, so it skips the rest. It allocates nothing.
func walkProduceErrors(version int16, body []byte, fn func(topic []byte, id [16]byte, code int16)) error {
	flexible := version >= 9
	b := kbin.Reader{Src: body}
	nt := arrayLen(&b, flexible)
	for ; nt > 0 && b.Ok(); nt-- {
		var topic []byte
		var id [16]byte
		switch {
		case version >= 13:
			id = b.Uuid()
		case flexible:
			topic = b.Span(int(b.Uvarint()) - 1)
		default:
			topic = b.Span(int(b.Int16()))
		}
		for np := arrayLen(&b, flexible); np > 0 && b.Ok(); np-- {
			b.Int32() // partition
			code := b.Int16()
			b.Span(8) // base offset
			if version >= 2 {
				b.Span(8) // log append time
			}
			if version >= 5 {
				b.Span(8) // log start offset
			}
			if version >= 8 {
				for ne := arrayLen(&b, flexible); ne > 0 && b.Ok(); ne-- {
					b.Int32()
					nullableString(&b, flexible)
					if flexible {
						skipTagged(&b)
					}
				}
				nullableString(&b, flexible)
			}
			if flexible {
				skipTagged(&b)
			}
			if code != 0 && b.Ok() {
				fn(topic, id, code)
			}
		}
		if flexible {
			skipTagged(&b)
		}
	}
	if err := b.Complete(); err != nil {
		return fmt.Errorf("%w: Produce v%d response", protocol.ErrMalformed, version)
	}
	return nil
}

func arrayLen(b *kbin.Reader, flexible bool) int32 {
	if flexible {
		return b.CompactArrayLen()
	}
	return b.ArrayLen()
}

func nullableString(b *kbin.Reader, flexible bool) {
	if flexible {
		b.CompactNullableBytes()
		return
	}
	if n := b.Int16(); n > 0 {
		b.Span(int(n))
	}
}

func skipTagged(b *kbin.Reader) {
	for n := b.Uvarint(); n > 0 && b.Ok(); n-- {
		b.Uvarint()
		b.Span(int(b.Uvarint()))
	}
}
