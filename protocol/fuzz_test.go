package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The seed corpora under testdata/fuzz hold kmsg-encoded messages; they are
// written by TestWriteFuzzSeeds (seeds_test.go). The f.Add seeds below are
// the small hand-made edge cases.

// fuzzMaxFrame is the frame limit FuzzReader runs with, small so that the
// fuzzer reaches it.
const fuzzMaxFrame = 64

// FuzzReader reads frames from arbitrary streams and checks every outcome
// against a plain model of Kafka framing: frames as the size prefixes say,
// refusals of negative and oversized prefixes, io.EOF only between frames
// and io.ErrUnexpectedEOF inside one.
func FuzzReader(f *testing.F) {
	f.Add([]byte{}, uint8(0), false)
	f.Add(AppendFrame(AppendFrame(nil, []byte("abc")), nil), uint8(0), true)
	f.Add(concat(sizePrefix(fuzzMaxFrame), make([]byte, fuzzMaxFrame)), uint8(60), false)
	f.Add(sizePrefix(fuzzMaxFrame+1), uint8(3), false)
	f.Add(sizePrefix(-1), uint8(0), false)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(0), false)
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0xa5}, uint8(0), true)
	f.Add(concat(sizePrefix(5), []byte("ab")), uint8(1), false)
	f.Fuzz(func(t *testing.T, stream []byte, bufSize uint8, oneByte bool) {
		var src io.Reader = bytes.NewReader(stream)
		if oneByte {
			src = iotest.OneByteReader(src)
		}
		r := NewReader(src, fuzzMaxFrame, 16+int(bufSize%64))
		rest := stream
		for frames := 0; ; frames++ {
			if frames > len(stream)/4+1 {
				t.Fatalf("more frames than the stream can hold")
			}
			has := r.HasFrame()
			body, err := r.Next()
			want, wantErr := modelNext(&rest)
			if wantErr != nil {
				if !errors.Is(err, wantErr) {
					t.Fatalf("frame %d: got %v, want an error wrapping %v", frames, err, wantErr)
				}
				if wantErr == io.EOF && err != io.EOF {
					t.Fatalf("frame %d: a clean end must be io.EOF unwrapped, got %q", frames, err)
				}
				if body != nil {
					t.Fatalf("frame %d: a body came with the error", frames)
				}
				if has && (wantErr == io.EOF || wantErr == io.ErrUnexpectedEOF) {
					t.Fatalf("frame %d: HasFrame said a whole frame was buffered, then the stream ended", frames)
				}
				return
			}
			if err != nil {
				t.Fatalf("frame %d: unexpected error %v", frames, err)
			}
			if !bytes.Equal(body, want) {
				t.Fatalf("frame %d: got %x, want %x", frames, body, want)
			}
			if !bytes.Equal(r.Frame(), AppendFrame(nil, want)) {
				t.Fatalf("frame %d: Frame %x is not the body with its size", frames, r.Frame())
			}
		}
	})
}

// modelNext is the reference: it takes one frame off *rest.
func modelNext(rest *[]byte) ([]byte, error) {
	s := *rest
	switch {
	case len(s) == 0:
		return nil, io.EOF
	case len(s) < 4:
		return nil, io.ErrUnexpectedEOF
	}
	n := int32(binary.BigEndian.Uint32(s))
	http := map[string]bool{"GET ": true, "POST": true, "PUT ": true, "HEAD": true, "PRI ": true, "DELE": true, "OPTI": true, "PATC": true, "CONN": true}
	switch {
	case s[0] == 0x16 && s[1] == 0x03 && s[2] <= 4, http[string(s[:4])]:
		return nil, ErrNotKafka
	case n < 0:
		return nil, ErrNegativeFrameSize
	case n > fuzzMaxFrame:
		return nil, ErrFrameTooLarge
	case int(n) > len(s)-4:
		return nil, io.ErrUnexpectedEOF
	}
	*rest = s[4+n:]
	return s[4 : 4+n], nil
}

// FuzzParseRequestHeader parses arbitrary request frames. It must never
// panic, and what it returns must agree with a reading of the same bytes by
// kbin and kmsg: the fixed fields, the client id, and the body offset (-1
// exactly when kmsg does not know the key and version).
func FuzzParseRequestHeader(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 10))
	f.Add([]byte{0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0})
	f.Add([]byte{0, 3, 0, 12, 0, 0, 0, 1, 0, 1, 'c', 1, 0, 2, 'a'})
	f.Add([]byte{0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{0, 12, 0, 4, 0, 0, 0, 1, 0xff, 0xfe})
	f.Fuzz(func(t *testing.T, frame []byte) {
		h, err := ParseRequestHeader(frame)
		ref, refErr := referenceRequestHeader(frame)
		if refErr == errMayStall {
			return
		}
		if (err == nil) != (refErr == nil) {
			t.Fatalf("ParseRequestHeader error %v, reference error %v", err, refErr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if h.Key != ref.Key || h.Version != ref.Version || h.CorrelationID != ref.CorrelationID || h.BodyOffset != ref.BodyOffset {
			t.Fatalf("got %+v, reference %+v", h, ref)
		}
		if (h.ClientID == nil) != (ref.ClientID == nil) || !bytes.Equal(h.ClientID, ref.ClientID) {
			t.Fatalf("client id %q, reference %q", h.ClientID, ref.ClientID)
		}
		if h.BodyOffset > len(frame) {
			t.Fatalf("body offset %d beyond a %d-byte frame", h.BodyOffset, len(frame))
		}
	})
}

// referenceRequestHeader reads a request header with kbin and kmsg.
func referenceRequestHeader(frame []byte) (RequestHeader, error) {
	var h RequestHeader
	b := kbin.Reader{Src: frame}
	h.Key, h.Version, h.CorrelationID = b.Int16(), b.Int16(), b.Int32()
	if n := int16(b.Int16()); n >= 0 {
		h.ClientID = b.Span(int(n))
	} else if n < -1 {
		return h, errors.New("bad client id length")
	}
	if err := b.Complete(); err != nil {
		return h, err
	}
	h.BodyOffset = -1
	req := kmsg.RequestForKey(h.Key)
	if req == nil || h.Version < 0 || h.Version > req.MaxVersion() {
		return h, nil
	}
	req.SetVersion(h.Version)
	if req.IsFlexible() {
		if len(b.Src) >= 3 && b.Src[0]&b.Src[1]&b.Src[2]&0x80 != 0 {
			return h, errMayStall // a tag count of 2^21 or more; see mayStallKmsg
		}
		kmsg.SkipTags(&b)
		if err := b.Complete(); err != nil {
			return h, err
		}
	}
	h.BodyOffset = len(frame) - len(b.Src)
	return h, nil
}

// FuzzProduceAcks reads acks from arbitrary Produce request bodies. It must
// never panic, and whenever kmsg decodes the body, it must find kmsg's acks.
func FuzzProduceAcks(f *testing.F) {
	f.Add(int16(0), []byte{0, 1, 0, 0, 0x75, 0x30})
	f.Add(int16(3), []byte{0xff, 0xff, 0, 0, 0, 0, 0x75, 0x30, 0, 0, 0, 0})
	f.Add(int16(3), []byte{0, 1, 'x', 0xff, 0xff, 0, 0, 0x75, 0x30, 0, 0, 0, 0})
	f.Add(int16(9), []byte{0, 0, 1, 0, 0, 0x75, 0x30, 1, 0})
	f.Add(int16(13), []byte{2, 'x', 0xff, 0xff, 0, 0, 0x75, 0x30, 1, 0})
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		acks, err := ProduceAcks(version, body)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		max, _ := MaxVersion(ProduceKey)
		if version < 0 || version > max || mayStallKmsg(body) {
			return
		}
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(version)
		if req.ReadFrom(body) != nil {
			return
		}
		if err != nil {
			t.Fatalf("kmsg decodes this Produce v%d request (acks %d) but ProduceAcks fails: %v", version, req.Acks, err)
		}
		if acks != req.Acks {
			t.Fatalf("Produce v%d: acks %d, kmsg says %d", version, acks, req.Acks)
		}
	})
}

// FuzzHasTopLevelTags walks arbitrary Produce v10+ and Fetch v16+ response
// bodies. It must never panic; whenever kmsg decodes the body, the walk must
// not fail, and must say "has tags" whenever kmsg found leader endpoints or
// an unknown top-level tag (the proxy passes a "no tags" response on without
// rewriting, so a false "no" would leak broker addresses). The converse holds
// except for tag-0 sections kmsg decodes to no brokers (an empty list); a
// "yes" there only costs a needless rewrite.
func FuzzHasTopLevelTags(f *testing.F) {
	f.Add(false, int16(10), []byte{1, 0, 0, 0, 0, 0})
	f.Add(false, int16(13), []byte{1, 0, 0, 0, 0, 1, 0, 1, 1})
	f.Add(true, int16(16), append(make([]byte, 10), 1, 0))
	f.Add(true, int16(18), append(make([]byte, 10), 1, 1, 0, 1, 1))
	f.Add(true, int16(17), append(make([]byte, 10), 1, 1, 9, 2, 'h', 'i'))
	f.Fuzz(func(t *testing.T, fetch bool, version int16, body []byte) {
		key, lo, hi := int16(ProduceKey), int16(10), int16(13)
		if fetch {
			key, lo, hi = FetchKey, 16, 18
		}
		if version < lo || version > hi {
			version = lo + int16(uint16(version)%uint16(hi-lo+1))
		}
		has, err := HasTopLevelTags(key, version, body)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		if mayStallKmsg(body) {
			return
		}
		var brokers int
		var unknown kmsg.Tags
		if fetch {
			r := kmsg.NewPtrFetchResponse()
			r.SetVersion(version)
			if r.ReadFrom(body) != nil {
				return
			}
			brokers, unknown = len(r.Brokers), r.UnknownTags
		} else {
			r := kmsg.NewPtrProduceResponse()
			r.SetVersion(version)
			if r.ReadFrom(body) != nil {
				return
			}
			brokers, unknown = len(r.Brokers), r.UnknownTags
		}
		if err != nil {
			t.Fatalf("%s v%d: kmsg decodes the body (%d brokers) but the walk fails: %v", KeyName(key), version, brokers, err)
		}
		kmsgHas := brokers > 0 || unknown.Len() > 0
		if kmsgHas && !has {
			t.Fatalf("%s v%d: kmsg finds %d brokers and %d unknown tags, the walk finds no top-level tags", KeyName(key), version, brokers, unknown.Len())
		}
		if has && !kmsgHas && !onlyTagZero(key, version, body) {
			t.Fatalf("%s v%d: the walk finds top-level tags kmsg does not", KeyName(key), version)
		}
	})
}

// onlyTagZero reports whether every top-level tag of a body HasTopLevelTags
// accepted is tag 0, the one kmsg decodes into Brokers (where an empty or
// null list, or a later tag 0 replacing an earlier one, leaves no brokers).
// Any other tag would be in kmsg's UnknownTags.
func onlyTagZero(key, version int16, body []byte) bool {
	var b kbin.Reader
	var err error
	if key == FetchKey {
		b, err = WalkFetchResponse(version, body, nil)
	} else {
		b, err = skipProduceResponse(version, body)
	}
	if err != nil {
		return false
	}
	for n := b.Uvarint(); n > 0 && b.Ok(); n-- {
		if b.Uvarint() != 0 {
			return false
		}
		b.Span(int(b.Uvarint()))
	}
	return b.Ok()
}

// errMayStall marks an input the fuzz targets do not hand to kmsg; see
// mayStallKmsg.
var errMayStall = errors.New("input may stall kmsg")

// mayStallKmsg reports whether b holds an unsigned varint of four or more
// bytes (a value of 2^21 or more) anywhere. kmsg's tagged-field loops
// (kmsg.SkipTags, kmsg.ReadTags and the generated readers) do not stop when
// the reader runs dry, so a tag count near 2^32 keeps kmsg spinning for about
// a minute: twmb/franz-go kmsg v1.15.0, api.go internalReadTags. The fuzz
// targets keep such inputs away from kmsg, not from the code under test.
func mayStallKmsg(b []byte) bool {
	for i := 0; i+2 < len(b); i++ {
		if b[i]&b[i+1]&b[i+2]&0x80 != 0 {
			return true
		}
	}
	return false
}

// FuzzWalkProduceRequest checks that the walk never panics, that it fails
// only with ErrMalformed, and that where kmsg decodes a body the walk sees
// the same partitions and records.
func FuzzWalkProduceRequest(f *testing.F) {
	for _, v := range []int16{3, 7, 9, 13} {
		f.Add(v, produceRequestWith(v, 2, 2, v%2 == 1).AppendTo(nil))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		version = 3 + int16(uint16(version)%11)
		var got [][]byte
		err := WalkProduceRequest(version, body, func(pd PartitionData) { got = append(got, pd.Records) })
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		if mayStallKmsg(body) {
			return
		}
		r := kmsg.NewPtrProduceRequest()
		r.SetVersion(version)
		if r.ReadFrom(body) != nil {
			return
		}
		if err != nil {
			t.Fatalf("Produce v%d: kmsg decodes the body but the walk fails: %v", version, err)
		}
		var want [][]byte
		for _, tp := range r.Topics {
			for _, p := range tp.Partitions {
				want = append(want, p.Records)
			}
		}
		if len(want) != len(got) {
			t.Fatalf("Produce v%d: kmsg sees %d partitions, the walk %d", version, len(want), len(got))
		}
		for i := range want {
			if !bytes.Equal(want[i], got[i]) {
				t.Fatalf("Produce v%d partition %d: records differ", version, i)
			}
		}
	})
}

// FuzzCountBatches checks that counting never panics or overruns and that
// the whole batches it counts fit in the input.
func FuzzCountBatches(f *testing.F) {
	f.Add(recordBatch(3, 0, 0))
	f.Add(append(recordBatch(2, int16(CodecZstd), 0), recordBatch(1, ControlBit, 2)...))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, records []byte) {
		s, err := CountBatches(records)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		if s.Bytes+int64(s.Partial) > int64(len(records)) {
			t.Fatalf("counted %d bytes and %d partial of %d", s.Bytes, s.Partial, len(records))
		}
	})
}
