package flightserver

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func start(t *testing.T, cfg Config) (flight.Client, string) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	srv, err := New(cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("server did not stop")
		}
	})
	c, err := flight.NewClientWithMiddleware(ln.Addr().String(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, cfg.Dir
}

var schema = arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.PrimitiveTypes.Int64}}, nil)

func batch(n int) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i := range n {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
	}
	return b.NewRecordBatch()
}

// put sends msgs (after the descriptor) raw and returns the call's status.
func put(t *testing.T, c flight.Client, desc *flight.FlightDescriptor, msgs ...*flight.FlightData) error {
	s, err := c.DoPut(context.Background())
	require.NoError(t, err)
	for i, m := range msgs {
		if i == 0 {
			m.FlightDescriptor = desc
		}
		if err := s.Send(m); err != nil {
			break
		}
	}
	_ = s.CloseSend()
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// encoded returns the FlightData messages arrow-go's writer makes for batches.
func encoded(t *testing.T, rows ...int) []*flight.FlightData {
	var out []*flight.FlightData
	w := flight.NewRecordWriter(collector{&out}, ipc.WithSchema(schema))
	for _, n := range rows {
		rec := batch(n)
		require.NoError(t, w.Write(rec))
		rec.Release()
	}
	require.NoError(t, w.Close())
	return out
}

type collector struct{ out *[]*flight.FlightData }

// Send keeps a copy: the writer reuses its message.
func (c collector) Send(fd *flight.FlightData) error {
	*c.out = append(*c.out, proto.Clone(fd).(*flight.FlightData))
	return nil
}

func TestDoPutRejectsBadStreams(t *testing.T) {
	c, dir := start(t, Config{})
	path := &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"d"}}
	good := encoded(t, 10, 20)
	badLen := encoded(t, 10)
	badLen[1].DataBody = badLen[1].DataBody[:len(badLen[1].DataBody)-8]
	for _, tc := range []struct {
		name string
		desc *flight.FlightDescriptor
		msgs []*flight.FlightData
		want string
	}{
		{"command descriptor", &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte("x")}, encoded(t, 1), "PATH descriptor"},
		{"empty path", &flight.FlightDescriptor{Type: flight.DescriptorPATH}, encoded(t, 1), "empty path"},
		{"batch before schema", path, good[1:], "must begin with a schema"},
		{"garbage header", path, []*flight.FlightData{{DataHeader: []byte{1, 2, 3, 4, 5}}}, "malformed"},
		{"body shorter than its header says", path, badLen, "announces a body of"},
		{"two schemas", path, []*flight.FlightData{good[0], encoded(t)[0]}, "second schema"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := put(t, c, tc.desc, tc.msgs...)
			require.Error(t, err)
			assert.Equal(t, codes.InvalidArgument, status.Code(err))
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing stored, no temporary directory left")
}

func TestDatasetNamesStayInsideTheDataDir(t *testing.T) {
	c, dir := start(t, Config{})
	for _, p := range [][]string{{".."}, {"..", "etc"}, {"a/../../b"}, {"."}} {
		require.NoError(t, put(t, c, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: p}, encoded(t, 3)...), "%q", p)
		fi, err := c.GetFlightInfo(context.Background(), &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: p})
		require.NoError(t, err)
		assert.Equal(t, int64(3), fi.TotalRecords)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		_, err := os.Stat(filepath.Join(dir, e.Name(), manifestFile))
		assert.NoError(t, err, "every dataset is a directory directly under the data dir: %s", e.Name())
	}
	assert.Len(t, entries, 4)
	assert.NoFileExists(t, filepath.Join(filepath.Dir(dir), "etc"))
}

func TestChunksAndListing(t *testing.T) {
	c, _ := start(t, Config{BatchesPerChunk: 2, Location: "grpc://data-node-1:8815"})
	ctx := context.Background()
	require.NoError(t, put(t, c, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"a", "x"}}, encoded(t, 1, 2, 3, 4, 5)...))
	require.NoError(t, put(t, c, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"b"}}, encoded(t)...))
	fi, err := c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"a", "x"}})
	require.NoError(t, err)
	require.Len(t, fi.Endpoint, 3, "5 batches in chunks of 2")
	assert.Equal(t, int64(15), fi.TotalRecords)
	assert.Equal(t, "grpc://data-node-1:8815", fi.Endpoint[0].Location[0].Uri)
	s, err := flight.DeserializeSchema(fi.Schema, memory.DefaultAllocator)
	require.NoError(t, err)
	assert.True(t, s.Equal(schema))
	var rows []int64
	for _, ep := range fi.Endpoint {
		st, err := c.DoGet(ctx, ep.Ticket)
		require.NoError(t, err)
		r, err := flight.NewRecordReader(st)
		require.NoError(t, err)
		for r.Next() {
			rows = append(rows, r.RecordBatch().NumRows())
		}
		require.NoError(t, r.Err())
		r.Release()
	}
	assert.Equal(t, []int64{1, 2, 3, 4, 5}, rows)

	fi, err = c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"b"}})
	require.NoError(t, err)
	assert.Len(t, fi.Endpoint, 1, "an empty dataset still has its schema chunk")

	ls, err := c.ListFlights(ctx, &flight.Criteria{Expression: []byte("a/")})
	require.NoError(t, err)
	got, err := ls.Recv()
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "x"}, got.FlightDescriptor.Path)
	_, err = ls.Recv()
	assert.ErrorIs(t, err, io.EOF)

	st, err := c.DoGet(ctx, &flight.Ticket{Ticket: []byte("nonsense")})
	require.NoError(t, err)
	_, err = st.Recv()
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
}
