package flightproxy

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/pipemesh/pipemesh/internal/arrowipc"
)

// grpcMsg is one gRPC message as it travels in DATA frames: the compressed
// flag and the bytes after the 5-byte prefix.
type grpcMsg struct {
	flag byte
	data []byte
}

// wire appends msgs with their gRPC prefixes: the byte stream a relay sees.
func wire(msgs []grpcMsg) []byte {
	var out []byte
	for _, m := range msgs {
		out = append(out, m.flag)
		out = binary.BigEndian.AppendUint32(out, uint32(len(m.data)))
		out = append(out, m.data...)
	}
	return out
}

// wireRecorder is a flight.DataStreamWriter that marshals each FlightData
// as gRPC would put it on the wire.
type wireRecorder struct{ msgs []grpcMsg }

func (r *wireRecorder) Send(fd *flight.FlightData) error {
	b, err := proto.Marshal(fd)
	if err != nil {
		return err
	}
	r.msgs = append(r.msgs, grpcMsg{data: b})
	return nil
}

// msgResult is what counting sees of one message.
type msgResult struct {
	N          int
	Err        string
	Descriptor string
	Header     string
	BodyLen    int
	Kind       arrowipc.Kind
	Rows       int64
	HeaderErr  bool
}

func resultOf(n int, v flightDataView, err error) msgResult {
	r := msgResult{N: n}
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Descriptor, r.Header, r.BodyLen = string(v.descriptor), string(v.header), v.bodyLen
	if len(v.header) > 0 {
		h, err := arrowipc.ParseHeader(v.header)
		r.Kind, r.Rows, r.HeaderErr = h.Kind, h.Rows, err != nil
	}
	return r
}

// reference is what the frame path reads of m: parseFlightData on the
// whole message, as gRPC hands it to edge.count.
func reference(m grpcMsg) msgResult {
	switch m.flag {
	case 0:
	case 1:
		return msgResult{N: len(m.data), Err: errCompressedMessage.Error()}
	default:
		return msgResult{N: len(m.data), Err: errBadGRPCFlag.Error()}
	}
	var scratch []byte
	v, err := parseFlightData(mem.BufferSlice{mem.SliceBuffer(m.data)}, &scratch)
	return resultOf(len(m.data), v, err)
}

// scanPieces feeds stream to a fresh scanner in the given piece sizes
// (cycled) and returns what it reported. Each piece is a copy that is
// overwritten after feed returns, so a scanner that kept a reference to
// it would report garbage.
func scanPieces(stream []byte, sizes func() int) ([]msgResult, *msgScanner) {
	var got []msgResult
	s := &msgScanner{onMessage: func(n int, v flightDataView, err error) {
		got = append(got, resultOf(n, v, err))
	}}
	buf := make([]byte, 0, 64<<10)
	for len(stream) > 0 {
		k := min(max(sizes(), 1), len(stream))
		buf = append(buf[:0], stream[:k]...)
		s.feed(buf)
		clear(buf)
		stream = stream[k:]
	}
	return got, s
}

func fixed(n int) func() int { return func() int { return n } }

// arrowStream is a DoPut as arrow-go's Flight writer sends it: the schema
// with a descriptor, record batches of int64, float64, string and timestamp
// columns (one with app_metadata, one empty), an app_metadata-only message.
func arrowStream(t testing.TB, opts ...ipc.Option) []grpcMsg {
	rec := &wireRecorder{}
	w := flight.NewRecordWriter(rec, append([]ipc.Option{ipcWithTestSchema()}, opts...)...)
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"sales", "q1"}})
	for i, n := range []int{3000, 1, 0, 2500} {
		b := testBatch(i, n)
		var err error
		if i == 1 {
			err = w.WriteWithAppMetadata(b, []byte("checkpoint-1"))
		} else {
			err = w.Write(b)
		}
		b.Release()
		require.NoError(t, err)
	}
	require.NoError(t, w.WriteMetadata([]byte("done")))
	require.NoError(t, w.Close())
	return rec.msgs
}

// unknownFields is a FlightData with a field of every wire type the
// parser skips, around a real header and body.
func unknownFields(header []byte) []byte {
	var b []byte
	b = append(b, 4<<3|0, 0x96, 0x01)             // field 4 varint 150
	b = append(b, 5<<3|1, 1, 2, 3, 4, 5, 6, 7, 8) // field 5 fixed64
	b = append(b, 6<<3|5, 1, 2, 3, 4)             // field 6 fixed32
	b = append(b, 3<<3|2, 3, 'a', 'p', 'p')       // app_metadata
	b = binary.AppendUvarint(append(b, 2<<3|2), uint64(len(header)))
	b = append(b, header...)                            // data_header
	b = append(b, 0xc2, 0x3e, 4, 9, 9, 9, 9)            // data_body, 4 bytes
	b = append(b, 0xfa, 0x3e, 2, 'x', 'y')              // field 1007, bytes
	b = append(b, 9<<3|0, 0xff, 0xff, 0xff, 0xff, 0x0f) // field 9 varint
	b = binary.AppendUvarint(append(b, 2<<3|2), uint64(len(header)))
	return append(b, header...) // data_header again: the last one wins
}

func TestMsgScannerMatchesParseFlightData(t *testing.T) {
	plain := arrowStream(t)
	require.Len(t, plain, 6, "schema, 4 batches, app_metadata-only")
	schemaHeader := plain[0]
	var fd flight.FlightData
	require.NoError(t, proto.Unmarshal(schemaHeader.data, &fd))
	hdr := fd.DataHeader

	good := grpcMsg{data: plain[3].data}
	cases := []struct {
		name string
		msgs []grpcMsg
		// wantErrs is how many messages must be reported with an error.
		wantErrs int
	}{
		{name: "arrow-go stream: schema with descriptor, batches, app_metadata", msgs: plain},
		{name: "LZ4 body compression", msgs: arrowStream(t, ipc.WithLZ4())},
		{name: "empty messages", msgs: []grpcMsg{{}, plain[1], {}, {}, plain[4]}},
		{name: "unknown fields of every wire type", msgs: []grpcMsg{{data: unknownFields(hdr)}, good}},
		{name: "gRPC-compressed message skipped by its length", wantErrs: 2, msgs: []grpcMsg{
			plain[1], {flag: 1, data: plain[1].data}, plain[2], {flag: 1}, good}},
		{name: "unknown compressed flag", wantErrs: 1, msgs: []grpcMsg{{flag: 2, data: plain[1].data}, good}},
		{name: "protobuf errors, each followed by a good message", wantErrs: 8, msgs: []grpcMsg{
			{data: []byte{2<<3 | 7, 1}}, good, // wire type 7
			{data: []byte{0x80}}, good, // tag cut by the message end
			{data: []byte{4 << 3, 0x80, 0x80}}, good, // varint value cut
			{data: []byte{2<<3 | 2}}, good, // length missing
			{data: []byte{2<<3 | 2, 5, 1, 2}}, good, // field past the message
			{data: []byte{2<<3 | 2, 0xff, 0xff, 0x03, 1}}, good, // field longer than the message
			{data: []byte{5<<3 | 1, 1, 2, 3}}, good, // fixed64 cut
			{data: append([]byte{2 << 3}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)}, good, // 11-byte varint
		}},
		{name: "error in the body of a large message", wantErrs: 1, msgs: []grpcMsg{
			{data: append(append([]byte(nil), plain[1].data...), 0x80)}, good}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream := wire(tc.msgs)
			var want []msgResult
			errs := 0
			for _, m := range tc.msgs {
				r := reference(m)
				want = append(want, r)
				if r.Err != "" {
					errs++
				}
				assert.False(t, r.HeaderErr, "the test's IPC headers parse")
			}
			require.Equal(t, tc.wantErrs, errs, "messages the reference cannot read")

			splits := map[string]func() int{}
			for _, n := range []int{1, 7, 9, 16384, len(stream)} {
				splits["pieces of "+strconv.Itoa(n)] = fixed(n)
			}
			for seed := range uint64(8) {
				r := rand.New(rand.NewPCG(seed, 7))
				splits["random "+strconv.Itoa(int(seed))] = func() int { return 1 << r.IntN(16) * 3 / 2 }
			}
			for name, sizes := range splits {
				got, s := scanPieces(stream, sizes)
				require.Equal(t, want, got, name)
				assert.False(t, s.midMessage(), name)
			}
		})
	}

	// The stream holds what the names promise.
	got, _ := scanPieces(wire(plain), fixed(9))
	assert.Equal(t, arrowipc.KindSchema, got[0].Kind)
	var d flight.FlightDescriptor
	require.NoError(t, proto.Unmarshal([]byte(got[0].Descriptor), &d))
	assert.Equal(t, []string{"sales", "q1"}, d.Path)
	var rows []int64
	for _, r := range got[1:5] {
		assert.Equal(t, arrowipc.KindRecordBatch, r.Kind)
		rows = append(rows, r.Rows)
	}
	assert.Equal(t, []int64{3000, 1, 0, 2500}, rows)
	assert.Greater(t, got[1].BodyLen, 3000*16, "int64 and float64 columns at least")
	assert.Empty(t, got[5].Header, "app_metadata only")
}

// A stream cut anywhere inside its last message reports every message
// before it and nothing for the partial one.
func TestMsgScannerTruncatedStream(t *testing.T) {
	msgs := arrowStream(t)[:3]
	whole := wire(msgs)
	before := len(wire(msgs[:2]))
	var want []msgResult
	for _, m := range msgs[:2] {
		want = append(want, reference(m))
	}
	for _, cut := range []int{before + 1, before + 4, before + 5, before + 6, before + 100, len(whole) - 1} {
		for _, n := range []int{1, 7, 16384} {
			got, s := scanPieces(whole[:cut], fixed(n))
			assert.Equal(t, want, got, "cut at %d, pieces of %d", cut, n)
			assert.True(t, s.midMessage(), "cut at %d", cut)
		}
	}
	_, s := scanPieces(whole[:before], fixed(7))
	assert.False(t, s.midMessage(), "cut at a message boundary")
}

// Descriptor and header bytes over the cap are not held: the message is
// reported malformed and the next one is read.
func TestMsgScannerCapsHeldBytes(t *testing.T) {
	msgs := arrowStream(t)
	var fd flight.FlightData
	require.NoError(t, proto.Unmarshal(msgs[1].data, &fd))
	limit := len(fd.DataHeader) + 10
	big, err := proto.Marshal(&flight.FlightData{
		FlightDescriptor: &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: make([]byte, 20)},
		DataHeader:       fd.DataHeader,
	})
	require.NoError(t, err)
	var got []msgResult
	s := &msgScanner{maxHeld: limit, onMessage: func(n int, v flightDataView, err error) {
		got = append(got, resultOf(n, v, err))
	}}
	s.feed(wire([]grpcMsg{{data: big}, msgs[1]}))
	require.Len(t, got, 2)
	assert.Contains(t, got[0].Err, "not held")
	assert.Equal(t, len(big), got[0].N)
	assert.Equal(t, reference(msgs[1]), got[1])
	assert.LessOrEqual(t, len(s.held), limit)
}

// Counting from the scanner moves the same metrics, observation and
// malformed count as counting whole frames.
func TestMsgScannerCountsLikeCount(t *testing.T) {
	msgs := append(arrowStream(t), grpcMsg{}, grpcMsg{data: []byte{2<<3 | 7}}, grpcMsg{data: []byte{2<<3 | 2, 1, 0}})
	msgs = append(msgs, arrowStream(t, ipc.WithZstd())...)
	edges := func() *edge {
		m, err := newMetrics(prometheus.NewRegistry(), DefaultMaxLabelValues, nil)
		require.NoError(t, err)
		return m.edge(&call{principal: "User:alice", job: "job", method: "DoPut"}, "sales", Write)
	}
	framed, scanned := edges(), edges()
	for _, m := range msgs {
		framed.count(&frame{data: split(m.data, 16<<10)})
	}
	s := &msgScanner{onMessage: scanned.countView}
	stream := wire(msgs)
	for len(stream) > 0 {
		k := min(16384, len(stream))
		s.feed(stream[:k])
		stream = stream[k:]
	}
	scanned.obs.Start = framed.obs.Start
	assert.Equal(t, framed.obs, scanned.obs)
	assert.Equal(t, int64(2*(3000+1+0+2500)), scanned.obs.Rows)
	assert.Equal(t, int64(8), scanned.obs.Batches)
	assert.Equal(t, int64(2), scanned.malformedHeaders, "the two bad messages")
	assert.Equal(t, framed.malformedHeaders, scanned.malformedHeaders)
	for _, c := range [][2]prometheus.Counter{{framed.bytes, scanned.bytes}, {framed.batches, scanned.batches}, {framed.rows, scanned.rows}} {
		assert.Equal(t, testutil.ToFloat64(c[0]), testutil.ToFloat64(c[1]))
	}
}

func TestMsgScannerDoesNotAllocate(t *testing.T) {
	stream := wire(arrowStream(t))
	messages := 0
	s := &msgScanner{onMessage: func(int, flightDataView, error) { messages++ }}
	feed := func() {
		for p := stream; len(p) > 0; {
			k := min(1000, len(p))
			s.feed(p[:k])
			p = p[k:]
		}
	}
	feed() // grows the held buffer once
	assert.Zero(t, testing.AllocsPerRun(20, feed))
	assert.Equal(t, 6*22, messages, "AllocsPerRun runs once more to warm up")
}

// FuzzMsgScanner checks the scanner against parseFlightData on the same
// bytes: b is a whole gRPC stream (asStream) or one FlightData message,
// sent twice; chunk is the piece size fed.
func FuzzMsgScanner(f *testing.F) {
	// Small seeds only (more under testdata/fuzz): the engine minimizes
	// every new input, which takes minutes on a 100 KiB batch.
	rec := &wireRecorder{}
	w := flight.NewRecordWriter(rec, ipcWithTestSchema())
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"a"}})
	batch := testBatch(0, 2)
	require.NoError(f, w.Write(batch))
	batch.Release()
	f.Add(rec.msgs[1].data, false, 3)
	f.Add(wire(rec.msgs), true, 7)
	f.Add(wire([]grpcMsg{{flag: 1, data: []byte{1, 2}}, {data: []byte{0x80}}, {}}), true, 1)
	f.Add([]byte{0xc2, 0x3e, 0x05, 1}, false, 2)
	f.Fuzz(func(t *testing.T, b []byte, asStream bool, chunk int) {
		stream := b
		if !asStream {
			stream = wire([]grpcMsg{{data: b}, {data: b}})
		}
		// The reference walks the gRPC framing on the whole stream.
		var want []msgResult
		rest := stream
		for len(rest) >= grpcPrefixLen {
			n := int(binary.BigEndian.Uint32(rest[1:]))
			if len(rest)-grpcPrefixLen < n {
				break
			}
			want = append(want, reference(grpcMsg{flag: rest[0], data: rest[grpcPrefixLen : grpcPrefixLen+n]}))
			rest = rest[grpcPrefixLen+n:]
		}
		for _, n := range []int{chunk, len(stream)} {
			got, s := scanPieces(stream, fixed(n))
			require.Equal(t, want, got, "pieces of %d", n)
			assert.Equal(t, len(rest) > 0, s.midMessage())
			assert.LessOrEqual(t, len(s.held), defaultMaxHeld)
		}
	})
}

// BenchmarkMsgScanner is the relay's per-stream counting: ~1 MiB record
// batches fed in 16 KiB DATA payloads. Bodies are skipped, so it should
// run at memory speed and not allocate.
func BenchmarkMsgScanner(b *testing.B) {
	rec := &wireRecorder{}
	w := flight.NewRecordWriter(rec, ipcWithTestSchema())
	batch := testBatch(0, 28<<10)
	for range 16 {
		require.NoError(b, w.Write(batch))
	}
	batch.Release()
	require.NoError(b, w.Close())
	stream := wire(rec.msgs)
	var rows int64
	s := &msgScanner{onMessage: func(_ int, v flightDataView, err error) {
		if h, herr := arrowipc.ParseHeader(v.header); err == nil && herr == nil {
			rows += h.Rows
		}
	}}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for p := stream; len(p) > 0; {
			k := min(16<<10, len(p))
			s.feed(p[:k])
			p = p[k:]
		}
	}
	require.Equal(b, int64(16*28<<10), rows/int64(b.N))
	// MB/s is nominal (bodies are never read); the cost is per DATA
	// frame and per message.
	chunks := (len(stream) + 16<<10 - 1) / (16 << 10)
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(ns/float64(chunks), "ns/frame")
	b.ReportMetric(ns/float64(len(rec.msgs)), "ns/msg")
	b.ReportMetric(float64(len(rec.msgs[1].data))/(1<<20), "MiB/batch")
}
