package flightproxy

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/internal/arrowipc"
)

// wireCodecs does a raw DoGet and returns the body compression of each
// record batch as it arrives.
func wireCodecs(t *testing.T, c flight.Client, tk *flight.Ticket) []arrowipc.Codec {
	t.Helper()
	s, err := c.DoGet(context.Background(), tk)
	require.NoError(t, err)
	var out []arrowipc.Codec
	for {
		fd, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		h, err := arrowipc.ParseHeader(fd.DataHeader)
		require.NoError(t, err)
		if h.Kind == arrowipc.KindRecordBatch {
			out = append(out, h.Codec)
		}
	}
}

// TestRecompression re-encodes datasets by rule: what the upstream stores
// uncompressed reaches the client as ZSTD or LZ4, what it stores as LZ4
// reaches it as ZSTD, the rest passes as stored; every value is the same.
func TestRecompression(t *testing.T) {
	up := startUpstream(t, "self", 2)
	rules := CompressionFunc(func(dataset string) Compression {
		switch {
		case strings.HasSuffix(dataset, "/zstd"):
			return ZSTD
		case strings.HasSuffix(dataset, "/lz4"):
			return LZ4Frame
		}
		return Passthrough
	})
	p, reg := startProxy(t, Config{Upstreams: []Upstream{{Target: up.addr}}, Compression: rules})
	c := dial(t, p.Addr())
	const batches, rows = 5, 4000
	for _, tc := range []struct {
		path   []string
		stored []ipc.Option
		want   arrowipc.Codec
	}{
		{[]string{"plain", "zstd"}, nil, arrowipc.CodecZSTD},
		{[]string{"plain", "lz4"}, nil, arrowipc.CodecLZ4Frame},
		{[]string{"lz4stored", "zstd"}, []ipc.Option{ipc.WithLZ4()}, arrowipc.CodecZSTD},
		{[]string{"plain", "as-is"}, nil, arrowipc.CodecNone},
	} {
		name := strings.Join(tc.path, "/")
		t.Run(name, func(t *testing.T) {
			putDataset(t, c, tc.path, batches, rows, tc.stored...)
			fi, err := c.GetFlightInfo(context.Background(), pathDesc(tc.path...))
			require.NoError(t, err)
			counts := readAll(t, c, fi, rows)
			require.Len(t, counts, batches)
			for _, ep := range fi.Endpoint {
				for _, codec := range wireCodecs(t, c, ep.Ticket) {
					assert.Equal(t, tc.want, codec)
				}
			}
			assert.Equal(t, float64(2*batches*rows), counter(t, reg, "pipemesh_flight_rows_total", name, "read"), "two reads of every row")
		})
	}
}

// BenchmarkRecompress measures the re-encoding path alone on one
// goroutine: read uncompressed batches, write them LZ4 or ZSTD. Bytes are
// the uncompressed IPC bytes, so MB/s is what one core re-encodes.
func BenchmarkRecompress(b *testing.B) {
	var msgs []*flight.FlightData
	w := flight.NewRecordWriter(collect{&msgs}, ipc.WithSchema(testSchema))
	for i := range 8 {
		rec := testBatch(i, 64<<10)
		require.NoError(b, w.Write(rec))
		rec.Release()
	}
	require.NoError(b, w.Close())
	var size int64
	for _, m := range msgs {
		size += int64(len(m.DataHeader) + len(m.DataBody))
	}
	for _, tc := range []struct {
		name string
		opt  ipc.Option
	}{{"lz4", ipc.WithLZ4()}, {"zstd", ipc.WithZstd()}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(size)
			var out int64
			for b.Loop() {
				r, err := flight.NewRecordReader(&replay{msgs: msgs})
				require.NoError(b, err)
				cw := &countWriter{}
				w := flight.NewRecordWriter(cw, ipc.WithSchema(r.Schema()), tc.opt)
				for r.Next() {
					require.NoError(b, w.Write(r.RecordBatch()))
				}
				require.NoError(b, w.Close())
				r.Release()
				out = cw.n
			}
			b.ReportMetric(float64(out)/float64(size), "out/in")
		})
	}
}

type collect struct{ out *[]*flight.FlightData }

func (c collect) Send(fd *flight.FlightData) error {
	*c.out = append(*c.out, &flight.FlightData{DataHeader: append([]byte(nil), fd.DataHeader...), DataBody: append([]byte(nil), fd.DataBody...)})
	return nil
}

type replay struct {
	msgs []*flight.FlightData
	i    int
}

func (r *replay) Recv() (*flight.FlightData, error) {
	if r.i >= len(r.msgs) {
		return nil, io.EOF
	}
	r.i++
	return r.msgs[r.i-1], nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Send(fd *flight.FlightData) error {
	c.n += int64(len(fd.DataHeader) + len(fd.DataBody))
	return nil
}
