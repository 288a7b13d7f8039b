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
