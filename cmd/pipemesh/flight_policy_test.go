package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipemesh/pipemesh/flightproxy"
	"github.com/pipemesh/pipemesh/flightserver"
	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// mixedPolicy is one file for Kafka topics and Flight datasets.
const mixedPolicy = `principals:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
acls:
  - {principal: "User:alice", operation: WRITE, resource: topic, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: READ, resource: topic, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: WRITE, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:bob", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: deny}
`

func TestPolicyExplainFlightDataset(t *testing.T) {
	path := writePolicy(t, mixedPolicy)
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--principal", "User:alice", "--operation", "READ", "--flight-dataset", "sales.orders"},
			[]string{`ALLOW: User:alice READ flight_dataset "sales.orders"`, `by acls[2] at line 7: allow User:alice READ on flight_dataset prefixed:"sales."`}},
		{[]string{"--principal", "User:alice", "--operation", "DESCRIBE", "--flight-dataset", "sales.orders"},
			[]string{`ALLOW: User:alice DESCRIBE flight_dataset "sales.orders"`, "by acls[2] at line 7"}},
		{[]string{"--principal", "User:bob", "--operation", "READ", "--flight-dataset", "sales.orders"},
			[]string{`DENY: User:bob READ flight_dataset "sales.orders"`, `by acls[4] at line 9: deny User:bob READ on flight_dataset prefixed:"sales."`}},
		{[]string{"--principal", "User:alice", "--operation", "READ", "--flight-dataset", "hr.people"},
			[]string{`DENY: User:alice READ flight_dataset "hr.people"`, "no allow rule matches"}},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		args := append([]string{"policy", "explain", path}, tt.args...)
		require.Equal(t, 0, run(context.Background(), args, &out, &errOut), errOut.String())
		for _, w := range tt.want {
			assert.Contains(t, out.String(), w)
		}
	}
	var out, errOut bytes.Buffer
	assert.Equal(t, 1, run(context.Background(), []string{"policy", "explain", path, "--principal", "User:bob",
		"--operation", "READ", "--flight-dataset", "d", "--topic", "t"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "--flight-dataset")
}

// TestPolicyFlightActionCLI: policy check rejects a flight_action rule
// with an operation other than WRITE or ALL at its line and column, and
// accepts a good one; explain decides action types.
func TestPolicyFlightActionCLI(t *testing.T) {
	bad := writePolicy(t, `acls:
  - {principal: "User:alice", operation: WRITE, resource: flight_action, name: BeginTransaction, permission: allow}
  - {principal: "User:alice", operation: READ, resource: flight_action, name: "admin.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: WRITE, resource: flight_actions, name: x, permission: allow}
`)
	var out, errOut bytes.Buffer
	require.Equal(t, 1, run(context.Background(), []string{"policy", "check", bad}, &out, &errOut))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2, out.String())
	assert.Contains(t, lines[0], bad+`:3:5: operation READ does not apply to resource type flight_action (pipemesh allows WRITE, ALL;`)
	assert.Contains(t, lines[1], bad+`:4:59: unknown resource type "flight_actions"`)

	good := writePolicy(t, `acls:
  - {principal: "User:alice", operation: WRITE, resource: flight_action, name: BeginTransaction, permission: allow}
  - {principal: "User:alice", operation: ALL, resource: flight_action, name: "admin.", pattern: prefixed, permission: allow}
`)
	out.Reset()
	errOut.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"policy", "check", good}, &out, &errOut), errOut.String()+out.String())
	for _, tt := range []struct{ action, want string }{
		{"admin.compact", `ALLOW: User:alice WRITE flight_action "admin.compact"`},
		{"EndTransaction", `DENY: User:alice WRITE flight_action "EndTransaction"`},
	} {
		out.Reset()
		require.Equal(t, 0, run(context.Background(), []string{"policy", "explain", good, "--principal", "User:alice",
			"--operation", "WRITE", "--flight-action", tt.action}, &out, &errOut), errOut.String())
		assert.Contains(t, out.String(), tt.want)
	}
}

// startFlightServer runs the built-in Flight dataset service in process.
func startFlightServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err := flightserver.New(flightserver.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "grpc://" + ln.Addr().String()
}

// servePolicy runs serve with args and returns the Kafka bootstrap address
// ("" when the Kafka proxy is off) and the Flight proxy's address.
func servePolicy(t *testing.T, args ...string) (kafka, flightAddr string) {
	t.Helper()
	fs := newFlagSet("serve", "", "", &bytes.Buffer{})
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse(append([]string{"--admin-listen", "127.0.0.1:0", "--flight-listen", "127.0.0.1:0"}, args...)))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	flights := make(chan string, 1)
	s.onFlight = func(p *flightproxy.Proxy) { flights <- p.Addr() }
	kafkas := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, s, slog.New(slog.DiscardHandler), func(p *kafkaproxy.Proxy, _ *admin.Server) {
			if p != nil {
				kafkas <- p.Addr()
			} else {
				kafkas <- ""
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case err := <-done:
		t.Fatalf("serve ended: %v", err)
	case flightAddr = <-flights:
	}
	return <-kafkas, flightAddr
}

var salesSchema = arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)

// putIDs writes batches of ids [b*100, b*100+100) to dataset name.
func putIDs(ctx context.Context, c flight.Client, name string, batches int) error {
	s, err := c.DoPut(ctx)
	if err != nil {
		return err
	}
	w := flight.NewRecordWriter(s, ipc.WithSchema(salesSchema))
	w.SetFlightDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{name}})
	for b := range batches {
		bld := array.NewInt64Builder(memory.DefaultAllocator)
		for i := range 100 {
			bld.Append(int64(b*100 + i))
		}
		col := bld.NewArray()
		rec := array.NewRecordBatch(salesSchema, []arrow.Array{col}, 100)
		err := w.Write(rec)
		rec.Release()
		col.Release()
		bld.Release()
		if err != nil {
			break
		}
	}
	_ = w.Close()
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

// readIDs reads every endpoint of dataset name and returns the ids in order.
func readIDs(ctx context.Context, c flight.Client, name string) ([]int64, error) {
	fi, err := c.GetFlightInfo(ctx, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{name}})
	if err != nil {
		return nil, err
	}
	var ids []int64
	for _, ep := range fi.Endpoint {
		s, err := c.DoGet(ctx, ep.Ticket)
		if err != nil {
			return nil, err
		}
		r, err := flight.NewRecordReader(s)
		if err != nil {
			return nil, err
		}
		for r.Next() {
			ids = append(ids, r.RecordBatch().Column(0).(*array.Int64).Int64Values()...)
		}
		err = r.Err()
		r.Release()
		if err != nil {
			return nil, err
		}
	}
	return ids, nil
}

func wantIDs(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

// TestServeOnePolicyKafkaAndFlight runs serve with a Kafka and a Flight
// upstream and one --policy file: alice, over SASL/PLAIN with kgo, produces
// and consumes sales.orders, and with the arrow-go Flight client, by basic
// auth with the same password, writes and reads the sales.orders dataset;
// bob is refused on both sides; both proxies write to the one audit log.
func TestServeOnePolicyKafkaAndFlight(t *testing.T) {
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 1, Topics: []devbroker.Topic{{Name: "sales.orders", Partitions: 1}}})
	require.NoError(t, err)
	defer cluster.Close()
	path := writePolicy(t, mixedPolicy)
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	kafkaAddr, flightAddr := servePolicy(t, "--kafka-listen", "127.0.0.1:0", "--broker-port-base", "-1",
		"--kafka-upstream", cluster.ListenAddrs()[0], "--flight-upstream", startFlightServer(t), "--policy", path, "--audit-log", audit)
	require.NotEmpty(t, kafkaAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Kafka: alice produces and reads back every record once.
	alice, err := kgo.NewClient(kgo.SeedBrokers(kafkaAddr), kgo.SASL(plain.Auth{User: "alice", Pass: "alice-secret"}.AsMechanism()),
		kgo.ConsumeTopics("sales.orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer alice.Close()
	for i := range 5 {
		require.NoError(t, alice.ProduceSync(ctx, &kgo.Record{Topic: "sales.orders", Value: []byte{byte('a' + i)}}).FirstErr())
	}
	var got []string
	for len(got) < 5 {
		fetches := alice.PollFetches(ctx)
		require.NoError(t, fetches.Err())
		fetches.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	assert.Equal(t, []string{"a", "b", "c", "d", "e"}, got)
	bob, err := kgo.NewClient(kgo.SeedBrokers(kafkaAddr), kgo.SASL(plain.Auth{User: "bob", Pass: "bob-secret"}.AsMechanism()))
	require.NoError(t, err)
	defer bob.Close()
	require.ErrorIs(t, bob.ProduceSync(ctx, &kgo.Record{Topic: "sales.orders", Value: []byte("x")}).FirstErr(), kerr.TopicAuthorizationFailed)

	// Flight: the same principals, the same file.
	c, err := dialFlight(flightAddr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.AuthenticateBasicToken(ctx, "alice", "not-her-password")
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	aliceF, err := c.AuthenticateBasicToken(ctx, "alice", "alice-secret")
	require.NoError(t, err)
	require.NoError(t, putIDs(aliceF, c, "sales.orders", 3))
	ids, err := readIDs(aliceF, c, "sales.orders")
	require.NoError(t, err)
	assert.Equal(t, wantIDs(300), ids)
	bobF, err := c.AuthenticateBasicToken(ctx, "bob", "bob-secret")
	require.NoError(t, err)
	_, err = readIDs(bobF, c, "sales.orders")
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Contains(t, err.Error(), `acls[4] at line 9: deny User:bob READ on flight_dataset prefixed:"sales."`)

	data, err := os.ReadFile(audit)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"resource_type":"topic","resource_name":"sales.orders"`)
	assert.Contains(t, string(data), `"api":"GetFlightInfo","operation":"READ","resource_type":"flight_dataset","resource_name":"sales.orders"`)
}

// TestServeFlightOnlyWithPolicy: serve with only a Flight upstream and
// --policy enforces the file on Flight calls.
func TestServeFlightOnlyWithPolicy(t *testing.T) {
	path := writePolicy(t, mixedPolicy)
	kafkaAddr, flightAddr := servePolicy(t, "--flight-upstream", startFlightServer(t), "--policy", path)
	assert.Empty(t, kafkaAddr, "no Kafka upstream: the Kafka proxy is off")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dialFlight(flightAddr)
	require.NoError(t, err)
	defer c.Close()
	_, err = readIDs(ctx, c, "sales.orders")
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "no anonymous access: the policy has principals")
	alice, err := c.AuthenticateBasicToken(ctx, "alice", "alice-secret")
	require.NoError(t, err)
	require.NoError(t, putIDs(alice, c, "sales.q1", 2))
	ids, err := readIDs(alice, c, "sales.q1")
	require.NoError(t, err)
	assert.Equal(t, wantIDs(200), ids)
	err = putIDs(alice, c, "hr.people", 1)
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Contains(t, err.Error(), "no allow rule matches")
}
