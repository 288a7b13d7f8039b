package flightproxy

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// split cuts b into a BufferSlice of pieces of n bytes, as gRPC hands over a
// message that arrived in several HTTP/2 frames.
func split(b []byte, n int) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return out
}

func TestParseFlightDataAcrossBuffers(t *testing.T) {
	fd := &flight.FlightData{
		FlightDescriptor: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"a", "b"}},
		DataHeader:       []byte("header-bytes"),
		AppMetadata:      []byte("meta"),
		DataBody:         make([]byte, 1000),
	}
	b, err := proto.Marshal(fd)
	require.NoError(t, err)
	for _, n := range []int{1, 3, 7, 64, len(b)} {
		var scratch []byte
		v, err := parseFlightData(split(b, n), &scratch)
		require.NoError(t, err, "pieces of %d", n)
		assert.Equal(t, "header-bytes", string(v.header))
		assert.Equal(t, 1000, v.bodyLen)
		var d flight.FlightDescriptor
		require.NoError(t, proto.Unmarshal(v.descriptor, &d))
		assert.Equal(t, []string{"a", "b"}, d.Path)
	}
}

func FuzzParseFlightData(f *testing.F) {
	b, _ := proto.Marshal(&flight.FlightData{DataHeader: []byte{1, 2, 3}, DataBody: []byte{4, 5}})
	f.Add(b, 3)
	f.Add([]byte{0x0a, 0x80}, 1)
	f.Add([]byte{0xc2, 0x3e, 0x05, 1}, 2)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n <= 0 {
			n = 1
		}
		var scratch []byte
		v, err := parseFlightData(split(b, n), &scratch)
		if err != nil {
			return
		}
		// What parses whole must parse the same in pieces.
		v2, err := parseFlightData(mem.BufferSlice{mem.SliceBuffer(b)}, &scratch)
		require.NoError(t, err)
		assert.Equal(t, v.bodyLen, v2.bodyLen)
		assert.LessOrEqual(t, len(v.header)+len(v.descriptor)+v.bodyLen, len(b))
	})
}

func FuzzUnwrapTicket(f *testing.F) {
	s, err := newTicketSealer([]byte("k"))
	require.NoError(f, err)
	f.Add(s.wrap(routedTicket{route: "r", dataset: "d", location: "grpc://x:1", inner: []byte("t")}))
	f.Add([]byte("PMT1"))
	f.Add([]byte("plain ticket"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rt, err := s.unwrap(b)
		if err == nil {
			// Only a sealed ticket opens; it opens to what was sealed.
			assert.Equal(t, rt.inner, s.mustRoundTrip(t, rt).inner)
		}
	})
}

func (s *ticketSealer) mustRoundTrip(t *testing.T, rt routedTicket) routedTicket {
	out, err := s.unwrap(s.wrap(rt))
	require.NoError(t, err)
	return out
}

func TestTicketSealing(t *testing.T) {
	s, err := newTicketSealer([]byte("key one"))
	require.NoError(t, err)
	other, err := newTicketSealer([]byte("key two"))
	require.NoError(t, err)
	in := routedTicket{route: "sales", dataset: "sales/q1", location: "grpc://10.1.2.3:8815", inner: []byte{0, 1, 2}}
	w := s.wrap(in)
	assert.NotContains(t, string(w), "10.1.2.3", "the location is sealed, not readable")
	out, err := s.unwrap(w)
	require.NoError(t, err)
	assert.Equal(t, in, out)
	_, err = other.unwrap(w)
	assert.Error(t, err)
	assert.NotErrorIs(t, err, errNotOurs)
	_, err = s.unwrap([]byte("an upstream's own ticket"))
	assert.ErrorIs(t, err, errNotOurs)
}

func TestBufferPoolTiers(t *testing.T) {
	p := newBufferPool()
	for _, n := range []int{0, 1, 256, 257, 16 << 10, 1<<22 - 1, 1 << 22, 1<<22 + 1} {
		b := p.Get(n)
		assert.Len(t, *b, n)
		p.Put(b)
		b2 := p.Get(n)
		assert.Len(t, *b2, n, "a reused buffer has the asked length")
	}
	odd := make([]byte, 300)
	p.Put(&odd) // not a pool size: dropped, no panic
}

func TestParseCommand(t *testing.T) {
	q, err := anypbNew(&pbCommandStatementQuery{Query: "SELECT 1"})
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		cmd  []byte
		want command
	}{
		{"flight sql query", q, command{kind: "sql:CommandStatementQuery", sql: "SELECT 1"}},
		{"plain sql text (Dremio, Spark sources)", []byte("select * from trips"), command{kind: "cmd:text", sql: "select * from trips"}},
		{"binary", []byte{0xff, 0x00, 0x01}, command{kind: "cmd"}},
		{"empty", nil, command{kind: "cmd"}},
	} {
		t.Run(tc.name, func(t *testing.T) { assert.Equal(t, tc.want, parseCommand(tc.cmd)) })
	}
}

func FuzzParseCommand(f *testing.F) {
	q, _ := anypbNew(&pbCommandStatementQuery{Query: "SELECT 1"})
	f.Add(q)
	f.Add([]byte("select 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := parseCommand(b)
		assert.NotEmpty(t, c.kind)
		assert.LessOrEqual(t, len(c.sql), len(b))
	})
}
