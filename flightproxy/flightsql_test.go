package flightproxy

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// sqlServer is a tiny Flight SQL service: a statement's result is one row
// holding the statement's text, so a test sees the query arrived intact.
type sqlServer struct {
	flightsql.BaseServer
	location string
}

var sqlSchema = arrow.NewSchema([]arrow.Field{{Name: "query", Type: arrow.BinaryTypes.String}}, nil)

func (s *sqlServer) GetFlightInfoStatement(_ context.Context, q flightsql.StatementQuery, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	tkt, err := flightsql.CreateStatementQueryTicket([]byte(q.GetQuery()))
	if err != nil {
		return nil, err
	}
	return &flight.FlightInfo{
		FlightDescriptor: d,
		Schema:           flight.SerializeSchema(sqlSchema, memory.DefaultAllocator),
		Endpoint:         []*flight.FlightEndpoint{{Ticket: &flight.Ticket{Ticket: tkt}, Location: []*flight.Location{{Uri: s.location}}}},
		TotalRecords:     1,
	}, nil
}

func (s *sqlServer) DoGetStatement(_ context.Context, t flightsql.StatementQueryTicket) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	b := array.NewRecordBuilder(memory.DefaultAllocator, sqlSchema)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append(string(t.GetStatementHandle()))
	ch := make(chan flight.StreamChunk, 1)
	ch <- flight.StreamChunk{Data: b.NewRecordBatch()}
	close(ch)
	return sqlSchema, ch, nil
}

// recorder is an Observer that keeps what it sees.
type recorder struct {
	mu      sync.Mutex
	streams []StreamObservation
	queries []QueryObservation
}

func (r *recorder) ObserveStream(o StreamObservation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.streams = append(r.streams, o)
}

func (r *recorder) ObserveQuery(o QueryObservation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries = append(r.queries, o)
}

// TestFlightSQLPassThrough runs a Flight SQL query through the proxy with
// arrow-go's Flight SQL client and checks the result, that the upstream's
// location did not leak, and that the SQL text reached the observer.
func TestFlightSQLPassThrough(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &sqlServer{location: "grpc://" + ln.Addr().String()}
	g := grpc.NewServer()
	flight.RegisterFlightServiceServer(g, flightsql.NewFlightServer(srv))
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	rec := &recorder{}
	p, _ := startProxy(t, Config{Upstreams: []Upstream{{Name: "sql", Target: srv.location}}, Observer: rec})

	cl, err := flightsql.NewClient(p.Addr(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cl.Close()
	const query = "SELECT region, sum(fare) FROM trips GROUP BY region"
	ctx := context.Background()
	info, err := cl.Execute(ctx, query)
	require.NoError(t, err)
	assertNoUpstreamLocation(t, info, p, ln.Addr().String())
	r, err := cl.DoGet(ctx, info.Endpoint[0].Ticket)
	require.NoError(t, err)
	require.True(t, r.Next())
	assert.Equal(t, query, r.RecordBatch().Column(0).(*array.String).Value(0))
	assert.False(t, r.Next())
	require.NoError(t, r.Err())
	r.Release()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.queries, 1)
	assert.Equal(t, query, rec.queries[0].SQL)
	assert.Equal(t, "sql:CommandStatementQuery", rec.queries[0].Command)
	assert.Equal(t, Anonymous, rec.queries[0].Principal)
	require.Len(t, rec.streams, 1)
	assert.Equal(t, "sql:CommandStatementQuery", rec.streams[0].Dataset)
	assert.Equal(t, Read, rec.streams[0].Direction)
	assert.Equal(t, int64(1), rec.streams[0].Rows)
}
