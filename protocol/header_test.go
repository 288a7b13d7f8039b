package protocol

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// tag is one tagged field of a header or body (KIP-482).
type tag struct {
	key uint32
	val []byte
}

// appendTags appends a tagged-field section.
func appendTags(dst []byte, tags ...tag) []byte {
	dst = kbin.AppendUvarint(dst, uint32(len(tags)))
	for _, t := range tags {
		dst = kbin.AppendUvarint(dst, t.key)
		dst = kbin.AppendUvarint(dst, uint32(len(t.val)))
		dst = append(dst, t.val...)
	}
	return dst
}

// requestFrame builds a request frame (without its size prefix) the way a
// client does: header v1, or v2 with tags when the request is flexible, then
// the body kmsg encodes. A nil clientID is sent as a null string.
func requestFrame(req kmsg.Request, corr int32, clientID *string, headerTags ...tag) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = kbin.AppendNullableString(b, clientID)
	if req.IsFlexible() {
		b = appendTags(b, headerTags...)
	}
	return req.AppendTo(b)
}

func strp(s string) *string { return &s }

func TestParseRequestHeader(t *testing.T) {
	meta := kmsg.NewPtrMetadataRequest()
	meta.SetVersion(1)
	flexMeta := kmsg.NewPtrMetadataRequest()
	flexMeta.SetVersion(12)
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.SetVersion(4)
	hb.Group, hb.MemberID = "g", "m"

	// unknown builds a frame for a key or version kmsg does not know.
	unknown := func(key, version int16, rest ...byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(key))
		b = binary.BigEndian.AppendUint16(b, uint16(version))
		b = binary.BigEndian.AppendUint32(b, 77)
		b = kbin.AppendNullableString(b, strp("cli"))
		return append(b, rest...)
	}

	for _, tc := range []struct {
		name     string
		frame    []byte
		want     RequestHeader
		bodyFrom []byte // frame[BodyOffset:] must equal this when set
		err      string
	}{
		{
			name:     "v1 header",
			frame:    requestFrame(meta, 42, strp("my-client")),
			want:     RequestHeader{Key: 3, Version: 1, CorrelationID: 42, ClientID: []byte("my-client"), BodyOffset: 10 + 9},
			bodyFrom: meta.AppendTo(nil),
		},
		{
			name:     "v1 header with an empty client id",
			frame:    requestFrame(meta, 1, strp("")),
			want:     RequestHeader{Key: 3, Version: 1, CorrelationID: 1, ClientID: []byte{}, BodyOffset: 10},
			bodyFrom: meta.AppendTo(nil),
		},
		{
			name:     "v1 header with a null client id",
			frame:    requestFrame(meta, -5, nil),
			want:     RequestHeader{Key: 3, Version: 1, CorrelationID: -5, BodyOffset: 10},
			bodyFrom: meta.AppendTo(nil),
		},
		{
			name:     "flexible v2 header without tags",
			frame:    requestFrame(flexMeta, 7, strp("c")),
			want:     RequestHeader{Key: 3, Version: 12, CorrelationID: 7, ClientID: []byte("c"), BodyOffset: 10 + 1 + 1},
			bodyFrom: flexMeta.AppendTo(nil),
		},
		{
			name:     "flexible v2 header with tags",
			frame:    requestFrame(hb, 8, strp("c"), tag{0, []byte("abc")}, tag{5, nil}),
			want:     RequestHeader{Key: 12, Version: 4, CorrelationID: 8, ClientID: []byte("c"), BodyOffset: 10 + 1 + (1 + 1 + 1 + 3 + 1 + 1)},
			bodyFrom: hb.AppendTo(nil),
		},
		{
			name:     "flexible v2 header with a null client id",
			frame:    requestFrame(hb, 9, nil, tag{1, []byte{1, 2}}),
			want:     RequestHeader{Key: 12, Version: 4, CorrelationID: 9, BodyOffset: 10 + (1 + 1 + 1 + 2)},
			bodyFrom: hb.AppendTo(nil),
		},
		{
			name:  "unknown key: the body offset is unknowable",
			frame: unknown(999, 0, 1, 2, 3),
			want:  RequestHeader{Key: 999, Version: 0, CorrelationID: 77, ClientID: []byte("cli"), BodyOffset: -1},
		},
		{
			name:  "negative key",
			frame: unknown(-1, 0),
			want:  RequestHeader{Key: -1, Version: 0, CorrelationID: 77, ClientID: []byte("cli"), BodyOffset: -1},
		},
		{
			name:  "version newer than kmsg knows",
			frame: unknown(3, 99, 0xff),
			want:  RequestHeader{Key: 3, Version: 99, CorrelationID: 77, ClientID: []byte("cli"), BodyOffset: -1},
		},
		{
			name:  "negative version",
			frame: unknown(3, -1),
			want:  RequestHeader{Key: 3, Version: -1, CorrelationID: 77, ClientID: []byte("cli"), BodyOffset: -1},
		},
		{
			name:  "flexible header whose body is empty",
			frame: unknown(12, 4, 0),
			want:  RequestHeader{Key: 12, Version: 4, CorrelationID: 77, ClientID: []byte("cli"), BodyOffset: 10 + 3 + 1},
		},
		{name: "empty frame", frame: nil, err: "request of 0 bytes is shorter than the smallest request header"},
		{name: "nine bytes", frame: make([]byte, 9), err: "request of 9 bytes"},
		{name: "client id overruns the frame", frame: requestFrame(meta, 1, strp("client"))[:13], err: "client id of 6 bytes overruns a 13-byte request"},
		{name: "client id length below -1", frame: append(requestFrame(meta, 1, nil)[:8], 0xff, 0xfe), err: "client id length -2"},
		{name: "flexible header without its tag section", frame: requestFrame(hb, 1, strp("c"))[:11], err: "request header tagged fields of Heartbeat v4"},
		{name: "flexible header with a truncated tag", frame: append(requestFrame(hb, 1, nil)[:10], 1, 0, 5, 'a'), err: "request header tagged fields of Heartbeat v4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequestHeader(tc.frame)
			if tc.err != "" {
				require.ErrorIs(t, err, ErrMalformed)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			if tc.want.ClientID == nil {
				assert.Nil(t, got.ClientID, "a null client id is nil, not empty")
			}
			if tc.bodyFrom != nil {
				assert.Equal(t, tc.bodyFrom, tc.frame[got.BodyOffset:])
			}
			if len(got.ClientID) > 0 {
				assert.Equal(t, len(got.ClientID), cap(got.ClientID), "ClientID is capped so an append cannot overwrite the frame")
			}
		})
	}
}

func TestParseRequestHeaderEveryKnownKey(t *testing.T) {
	// Every request kmsg can encode, at every version, parses to the body
	// kmsg encoded.
	for key := range int16(maxKnownKey) {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		for v := int16(0); v <= req.MaxVersion(); v++ {
			req := kmsg.RequestForKey(key)
			req.SetVersion(v)
			frame := requestFrame(req, int32(v), strp("id"), tag{3, []byte("x")})
			h, err := ParseRequestHeader(frame)
			require.NoError(t, err, "%s v%d", KeyName(key), v)
			require.Equal(t, key, h.Key)
			require.Equal(t, v, h.Version)
			require.Equal(t, int32(v), h.CorrelationID)
			require.Equal(t, req.AppendTo([]byte{}), frame[h.BodyOffset:], "%s v%d", KeyName(key), v)
		}
	}
}

func TestParseRequestHeaderDoesNotAllocate(t *testing.T) {
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.SetVersion(4)
	frame := requestFrame(hb, 1, strp("client"), tag{0, []byte("x")})
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseRequestHeader(frame); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
}

func TestResponseBodyOffset(t *testing.T) {
	for _, tc := range []struct {
		name     string
		frame    []byte
		flexible bool
		want     int
		err      string
	}{
		{name: "v0 header", frame: []byte{0, 0, 0, 1, 9, 9}, want: 4},
		{name: "v0 header, empty body", frame: []byte{0, 0, 0, 1}, want: 4},
		{name: "v1 header without tags", frame: []byte{0, 0, 0, 1, 0, 9}, flexible: true, want: 5},
		{name: "v1 header with tags", frame: appendTags([]byte{0, 0, 0, 1}, tag{0, []byte("ab")}, tag{300, nil}), flexible: true, want: 4 + 1 + (1 + 1 + 2) + (2 + 1)},
		{name: "no correlation id", frame: []byte{0, 0, 1}, err: "response of 3 bytes has no correlation id"},
		{name: "no correlation id, flexible", frame: nil, flexible: true, err: "response of 0 bytes"},
		{name: "v1 header missing its tag section", frame: []byte{0, 0, 0, 1}, flexible: true, err: "response header tagged fields"},
		{name: "v1 header with a truncated tag", frame: []byte{0, 0, 0, 1, 1, 0, 3, 'a'}, flexible: true, err: "response header tagged fields"},
		{name: "v1 header with an unterminated varint", frame: []byte{0, 0, 0, 1, 0x80}, flexible: true, err: "response header tagged fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResponseBodyOffset(tc.frame, tc.flexible)
			if tc.err != "" {
				require.ErrorIs(t, err, ErrMalformed)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestResponseCorrelationID(t *testing.T) {
	assert.Equal(t, int32(-2), ResponseCorrelationID([]byte{0xff, 0xff, 0xff, 0xfe, 1}))
	assert.Equal(t, int32(258), ResponseCorrelationID([]byte{0, 0, 1, 2}))
}

func TestKeyName(t *testing.T) {
	assert.Equal(t, "Produce", KeyName(0))
	assert.Equal(t, "ApiVersions", KeyName(18))
	assert.Equal(t, "Unknown(999)", KeyName(999))
	assert.Equal(t, "Unknown(-1)", KeyName(-1))
	for key := range int16(maxKnownKey) {
		if kmsg.RequestForKey(key) != nil {
			assert.Equal(t, kmsg.NameForKey(key), KeyName(key))
		} else {
			assert.Regexp(t, `^Unknown\(\d+\)$`, KeyName(key))
		}
	}
	assert.Zero(t, testing.AllocsPerRun(10, func() { _ = KeyName(1) }), "known names are precomputed")
}

func BenchmarkParseRequestHeader(b *testing.B) {
	v1 := kmsg.NewPtrProduceRequest()
	v1.SetVersion(7)
	flex := kmsg.NewPtrFetchRequest()
	flex.SetVersion(16)
	for _, bc := range []struct {
		name  string
		frame []byte
	}{
		{"v1", requestFrame(v1, 1, strp("producer-1"))},
		{"flexible", requestFrame(flex, 1, strp("consumer-1"), tag{0, []byte("x")})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := ParseRequestHeader(bc.frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
