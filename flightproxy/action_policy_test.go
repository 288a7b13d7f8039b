package flightproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/pipemesh/pipemesh/policy"
)

// actionTestPolicy: alice may call BeginTransaction and the "admin."
// actions but admin.purge; bob may call every action; carol none.
const actionTestPolicy = `mode: %MODE%
principals:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
  - {name: carol, password: carol-secret}
acls:
  - {principal: "User:alice", operation: WRITE, resource: flight_action, name: BeginTransaction, permission: allow}
  - {principal: "User:alice", operation: ALL, resource: flight_action, name: "admin.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: WRITE, resource: flight_action, name: admin.purge, permission: deny}
  - {principal: "User:bob", operation: WRITE, resource: flight_action, name: "*", permission: allow}
  - {principal: "User:carol", operation: ALL, resource: flight_dataset, name: "*", permission: allow}
`

// doAction calls DoAction and returns the result bodies.
func doAction(ctx context.Context, c flight.Client, typ string) ([]string, error) {
	s, err := c.DoAction(ctx, &flight.Action{Type: typ, Body: []byte("body")})
	if err != nil {
		return nil, err
	}
	var out []string
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(r.Body))
	}
}

func listActionTypes(t *testing.T, ctx context.Context, c flight.Client) []string {
	t.Helper()
	s, err := c.ListActions(ctx, &flight.Empty{})
	require.NoError(t, err)
	var out []string
	for {
		a, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, a.Type)
	}
}

// TestPolicyFlightActions: under an enforced policy an action type that no
// flight_action rule allows is denied with PermissionDenied naming the rule
// (or the missing allow) and never reaches the upstream; an allowed one
// does; ListActions lists only what the caller may call.
func TestPolicyFlightActions(t *testing.T) {
	pp := startPolicyProxy(t, strings.Replace(actionTestPolicy, "%MODE%", "enforce", 1),
		Config{Upstreams: []Upstream{{Target: startTicketServer(t, "up")}}})
	c := pp.client
	alice, bob, carol := pp.login(t, "alice", "alice-secret"), pp.login(t, "bob", "bob-secret"), pp.login(t, "carol", "carol-secret")

	for _, typ := range []string{"BeginTransaction", "admin.compact"} {
		got, err := doAction(alice, c, typ)
		require.NoError(t, err, typ)
		assert.Equal(t, []string{"up did " + typ}, got, "reached the upstream")
	}
	deniedBefore := pp.decisions(t, "deny")
	tests := []struct {
		ctx  context.Context
		who  string
		typ  string
		rule string
	}{
		{alice, "User:alice", "EndTransaction", "no allow rule matches (no matching allow means deny); allow it with a flight_action rule"},
		{alice, "User:alice", "admin.purge", `acls[2] at line 9: deny User:alice WRITE on flight_action literal:"admin.purge"`},
		{carol, "User:carol", "BeginTransaction", "no allow rule matches"},
	}
	for _, tt := range tests {
		got, err := doAction(tt.ctx, c, tt.typ)
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%s %s", tt.who, tt.typ)
		assert.Empty(t, got)
		assert.Contains(t, err.Error(), tt.who+` may not call flight_action "`+tt.typ+`": `+tt.rule)
	}
	assert.Equal(t, deniedBefore+3, pp.decisions(t, "deny"))
	var denied []string
	for _, e := range pp.audit.entries(t) {
		if e.Resource == ActionResourceType {
			assert.Equal(t, "deny", e.Result)
			assert.Equal(t, "DoAction", e.API)
			assert.Equal(t, "WRITE", e.Operation)
			denied = append(denied, e.Principal+" "+e.Name)
		}
	}
	assert.Equal(t, []string{"User:alice EndTransaction", "User:alice admin.purge", "User:carol BeginTransaction"}, denied)

	got, err := doAction(bob, c, "EndTransaction")
	require.NoError(t, err)
	assert.Equal(t, []string{"up did EndTransaction"}, got)

	// CancelFlightInfo is decided on its tickets' datasets, so it is always listed.
	assert.Equal(t, []string{"BeginTransaction", "admin.compact", flight.CancelFlightInfoActionType}, listActionTypes(t, alice, c))
	assert.Equal(t, ticketActions, listActionTypes(t, bob, c))
	assert.Equal(t, []string{flight.CancelFlightInfoActionType}, listActionTypes(t, carol, c))
}

// TestPolicyFlightActionsBuiltinServer: in front of the built-in Flight
// service, a custom action no rule allows stops at the proxy with
// PermissionDenied; one allowed reaches the service (which does not know
// it); delete is still decided on its dataset.
func TestPolicyFlightActionsBuiltinServer(t *testing.T) {
	pp := startPolicyProxy(t, strings.Replace(actionTestPolicy, "%MODE%", "enforce", 1), Config{})
	c := pp.client
	alice, bob, carol := pp.login(t, "alice", "alice-secret"), pp.login(t, "bob", "bob-secret"), pp.login(t, "carol", "carol-secret")

	_, err := doAction(alice, c, "vacuum")
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = doAction(bob, c, "vacuum")
	assert.Equal(t, codes.Unimplemented, status.Code(err), "bob's action reached the service: %v", err)
	assert.Contains(t, err.Error(), `flightserver: unknown action "vacuum"`)

	require.NoError(t, putDatasetCtx(carol, c, []string{"hr.people"}, 1, 10))
	_, err = doAction(bob, c, "delete") // body "body": bob may not WRITE it
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Contains(t, err.Error(), `may not WRITE flight_dataset "body"`)
	// The built-in service lists only delete: listed to everyone.
	assert.Equal(t, []string{"delete"}, listActionTypes(t, alice, c))
}

// TestPolicyFlightActionsAudit: in audit mode the action no rule allows
// reaches the upstream, and is counted and logged as would_deny.
func TestPolicyFlightActionsAudit(t *testing.T) {
	pp := startPolicyProxy(t, strings.Replace(actionTestPolicy, "%MODE%", "audit", 1),
		Config{Upstreams: []Upstream{{Target: startTicketServer(t, "up")}}})
	alice := pp.login(t, "alice", "alice-secret")
	before := pp.decisions(t, "would_deny")
	got, err := doAction(alice, pp.client, "EndTransaction")
	require.NoError(t, err)
	assert.Equal(t, []string{"up did EndTransaction"}, got)
	assert.Equal(t, before+1, pp.decisions(t, "would_deny"))
	assert.Zero(t, pp.decisions(t, "deny"))
	var seen bool
	for _, e := range pp.audit.entries(t) {
		if e.Resource == ActionResourceType && e.Name == "EndTransaction" {
			seen = true
			assert.Equal(t, "would_deny", e.Result)
			assert.Equal(t, "no_matching_allow", e.Reason)
		}
	}
	assert.True(t, seen, "audit log names the action")
	// Nothing is hidden in audit mode either.
	assert.Len(t, listActionTypes(t, alice, pp.client), len(ticketActions))
}

// TestPolicyFlightSQLActions: arrow-go's Flight SQL client through the
// proxy. BeginTransaction and CreatePreparedStatement are DoAction calls;
// anonymous callers may prepare statements but not begin transactions.
// The test server implements neither, so an allowed call comes back
// Unimplemented from it, a denied one PermissionDenied from the proxy.
func TestPolicyFlightSQLActions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &sqlServer{location: "grpc://" + ln.Addr().String()}
	g := grpc.NewServer()
	flight.RegisterFlightServiceServer(g, flightsql.NewFlightServer(srv))
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	pp := startPolicyProxy(t, `acls:
  - {principal: "User:ANONYMOUS", operation: WRITE, resource: flight_action, name: CreatePreparedStatement, permission: allow}
  - {principal: "User:ANONYMOUS", operation: READ, resource: flight_dataset, name: "sql:", pattern: prefixed, permission: allow}
`, Config{Upstreams: []Upstream{{Name: "sql", Target: srv.location}}})
	cl, err := flightsql.NewClient(pp.proxy.Addr(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cl.Close()
	ctx := context.Background()

	_, err = cl.BeginTransaction(ctx)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), `User:ANONYMOUS may not call flight_action "BeginTransaction"`)
	_, err = cl.Prepare(ctx, "SELECT 1")
	assert.Equal(t, codes.Unimplemented, status.Code(err), "allowed: reached the server: %v", err)
}

// TestPolicyAuthorizerDecideActionDoesNotAllocate: DecideAction runs on
// every DoAction and for every listed action type.
func TestPolicyAuthorizerDecideActionDoesNotAllocate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(actionTestPolicy, "%MODE%", "enforce", 1)), 0o600))
	store, err := policy.NewStore(policy.StoreConfig{Path: path, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	a := PolicyAuthorizer{Store: store}
	require.True(t, a.DecideAction("User:alice", "admin.compact").Allow)
	require.False(t, a.DecideAction("User:alice", "admin.purge").Allow)
	allocs := testing.AllocsPerRun(100, func() {
		a.DecideAction("User:alice", "admin.compact")
		a.DecideAction("User:alice", "admin.purge")
		a.DecideAction("User:carol", "EndTransaction")
	})
	assert.Zero(t, allocs)
}
