package flightproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipemesh/pipemesh/policy"
)

// flightTestPolicy is the policy file of the tests below: alice reads and
// writes datasets under "sales.", bob is denied them by a rule of his own,
// carol writes "hr.".
const flightTestPolicy = `mode: %MODE%
principals:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
  - {name: carol, password: carol-secret}
acls:
  - {principal: "User:alice", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: WRITE, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:bob", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: deny}
  - {principal: "User:carol", operation: ALL, resource: flight_dataset, name: "hr.", pattern: prefixed, permission: allow}
`

// syncBuffer is an audit log the test reads while the proxy writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// entries decodes the audit lines written so far.
func (s *syncBuffer) entries(t *testing.T) []policy.AuditEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []policy.AuditEntry
	for _, line := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if line == "" {
			continue
		}
		var e policy.AuditEntry
		require.NoError(t, json.Unmarshal([]byte(line), &e), line)
		out = append(out, e)
	}
	return out
}

// policyProxy writes text as a policy file, loads it into a store and runs
// a proxy governed by it in front of the built-in Flight server.
type policyProxy struct {
	path   string
	store  *policy.Store
	preg   *prometheus.Registry // the policy's metrics
	proxy  *Proxy
	client flight.Client
	audit  *syncBuffer
}

func startPolicyProxy(t testing.TB, text string, cfg Config) *policyProxy {
	t.Helper()
	pp := &policyProxy{path: filepath.Join(t.TempDir(), "policy.yaml"), preg: prometheus.NewRegistry(), audit: &syncBuffer{}}
	require.NoError(t, os.WriteFile(pp.path, []byte(text), 0o600))
	var err error
	pp.store, err = policy.NewStore(policy.StoreConfig{Path: pp.path, Registerer: pp.preg})
	require.NoError(t, err)
	if len(cfg.Upstreams) == 0 {
		cfg.Upstreams = []Upstream{{Target: startUpstream(t, "self", 0).addr}}
	}
	cfg.AuditLog = pp.audit
	cfg.UsePolicy(pp.store)
	pp.proxy, _ = startProxy(t, cfg)
	pp.client = dial(t, pp.proxy.Addr())
	return pp
}

func (pp *policyProxy) login(t testing.TB, user, password string) context.Context {
	t.Helper()
	ctx, err := pp.client.AuthenticateBasicToken(context.Background(), user, password)
	require.NoError(t, err, user)
	return ctx
}

func (pp *policyProxy) decisions(t *testing.T, result string) float64 {
	t.Helper()
	mfs, err := pp.preg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "pipemesh_policy_decisions_total" {
			continue
		}
		for _, m := range mf.Metric {
			if labelsMatch(m, map[string]string{"result": result}) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func listNames(t *testing.T, ctx context.Context, c flight.Client) []string {
	t.Helper()
	ls, err := c.ListFlights(ctx, &flight.Criteria{})
	require.NoError(t, err)
	var names []string
	for {
		fi, err := ls.Recv()
		if errors.Is(err, io.EOF) {
			return names
		}
		require.NoError(t, err)
		names = append(names, joinPath(fi.FlightDescriptor.Path))
	}
}

func enforcePolicy() string { return strings.Replace(flightTestPolicy, "%MODE%", "enforce", 1) }

// TestPolicyGovernsFlight runs the policy file's principals and
// flight_dataset rules through the proxy with the arrow-go client: basic
// auth against the policy's passwords, reads and writes allowed and denied
// with the rule named, ListFlights filtered, and the audit log.
func TestPolicyGovernsFlight(t *testing.T) {
	pp := startPolicyProxy(t, enforcePolicy(), Config{})
	c, bg := pp.client, context.Background()

	_, err := c.AuthenticateBasicToken(bg, "alice", "wrong")
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "wrong password")
	_, err = c.AuthenticateBasicToken(bg, "mallory", "alice-secret")
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "unknown user")
	_, err = c.GetFlightInfo(bg, pathDesc("sales.orders"))
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "anonymous callers are refused once the policy has principals")

	alice, bob, carol := pp.login(t, "alice", "alice-secret"), pp.login(t, "bob", "bob-secret"), pp.login(t, "carol", "carol-secret")
	const rows = 500
	require.NoError(t, putDatasetCtx(alice, c, []string{"sales.orders"}, 4, rows))
	require.NoError(t, putDatasetCtx(alice, c, []string{"sales.returns"}, 1, rows))
	require.NoError(t, putDatasetCtx(carol, c, []string{"hr.people"}, 1, rows))
	err = putDatasetCtx(alice, c, []string{"hr.salaries"}, 1, rows)
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "alice may not write hr.")

	// alice reads every batch once, byte for byte.
	fi, err := c.GetFlightInfo(alice, pathDesc("sales.orders"))
	require.NoError(t, err)
	var seen []int
	for _, ep := range fi.Endpoint {
		got, err := readEndpoint(alice, c, ep, rows)
		require.NoError(t, err)
		seen = append(seen, got...)
	}
	assert.Equal(t, []int{0, 1, 2, 3}, seen)
	_, err = c.GetSchema(alice, pathDesc("sales.orders"))
	require.NoError(t, err)

	// bob is denied by his deny rule, named with its line.
	_, err = c.GetFlightInfo(bob, pathDesc("sales.orders"))
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Contains(t, err.Error(), `User:bob may not READ flight_dataset "sales.orders"`)
	assert.Contains(t, err.Error(), `acls[2] at line 9: deny User:bob READ on flight_dataset prefixed:"sales."`)
	// alice's ticket does not help him either.
	s, err := c.DoGet(bob, fi.Endpoint[0].Ticket)
	require.NoError(t, err)
	_, err = s.Recv()
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
	// With no rule for him, the default deny is named.
	_, err = c.GetFlightInfo(carol, pathDesc("sales.orders"))
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Contains(t, err.Error(), "no allow rule matches")

	// ListFlights shows each principal what it may DESCRIBE (implied by
	// READ and WRITE).
	assert.ElementsMatch(t, []string{"sales.orders", "sales.returns"}, listNames(t, alice, c))
	assert.Equal(t, []string{"hr.people"}, listNames(t, carol, c))
	assert.Empty(t, listNames(t, bob, c))

	// The audit log has the denials in the Kafka proxy's fields.
	var bobDoGet *policy.AuditEntry
	for _, e := range pp.audit.entries(t) {
		assert.NotEqual(t, "allow", e.Result, "allows are not logged without AuditAllows")
		if e.Principal == "User:bob" && e.API == "DoGet" {
			bobDoGet = &e
		}
	}
	require.NotNil(t, bobDoGet)
	assert.Equal(t, "deny", bobDoGet.Result)
	assert.Equal(t, "READ", bobDoGet.Operation)
	assert.Equal(t, "flight_dataset", bobDoGet.Resource)
	assert.Equal(t, "sales.orders", bobDoGet.Name)
	assert.Equal(t, "deny_rule", bobDoGet.Reason)
	assert.Contains(t, bobDoGet.Rule, "acls[2] at line 9")
	assert.True(t, strings.HasPrefix(bobDoGet.Source, "127.0.0.1:"), bobDoGet.Source)
	assert.Positive(t, pp.decisions(t, "deny"))
	assert.Positive(t, pp.decisions(t, "allow"))
}

// TestPolicyReloadAppliesToConnectedFlightClients revokes alice's READ
// while her client stays connected: the next DoGet fails, on the same
// connection, and re-granting brings it back.
func TestPolicyReloadAppliesToConnectedFlightClients(t *testing.T) {
	pp := startPolicyProxy(t, enforcePolicy(), Config{})
	c := pp.client
	alice := pp.login(t, "alice", "alice-secret")
	require.NoError(t, putDatasetCtx(alice, c, []string{"sales.orders"}, 2, 100))
	fi, err := c.GetFlightInfo(alice, pathDesc("sales.orders"))
	require.NoError(t, err)
	_, err = readEndpoint(alice, c, fi.Endpoint[0], 100)
	require.NoError(t, err)

	revoked := strings.Replace(enforcePolicy(),
		`  - {principal: "User:alice", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: allow}`+"\n", "", 1)
	require.NotEqual(t, enforcePolicy(), revoked)
	require.NoError(t, os.WriteFile(pp.path, []byte(revoked), 0o600))
	require.NoError(t, pp.store.Reload())

	_, err = readEndpoint(alice, c, fi.Endpoint[0], 100)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the ticket she holds no longer reads")
	assert.Contains(t, err.Error(), "no allow rule matches")
	// WRITE still implies DESCRIBE: she still sees the dataset listed.
	assert.Equal(t, []string{"sales.orders"}, listNames(t, alice, c))

	require.NoError(t, os.WriteFile(pp.path, []byte(enforcePolicy()), 0o600))
	require.NoError(t, pp.store.Reload())
	got, err := readEndpoint(alice, c, fi.Endpoint[0], 100)
	require.NoError(t, err)
	assert.NotEmpty(t, got)

	// Removing bob from the policy ends his token at once.
	bob := pp.login(t, "bob", "bob-secret")
	noBob := strings.Replace(enforcePolicy(), "  - {name: bob, password: bob-secret}\n", "", 1)
	require.NoError(t, os.WriteFile(pp.path, []byte(noBob), 0o600))
	require.NoError(t, pp.store.Reload())
	_, err = c.GetFlightInfo(bob, pathDesc("hr.people"))
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
}

// TestPolicyAuditModeFlight lets bob's would-be denial through in audit
// mode, counts it as would_deny and logs it.
func TestPolicyAuditModeFlight(t *testing.T) {
	pp := startPolicyProxy(t, strings.Replace(flightTestPolicy, "%MODE%", "audit", 1), Config{})
	c := pp.client
	alice, bob := pp.login(t, "alice", "alice-secret"), pp.login(t, "bob", "bob-secret")
	require.NoError(t, putDatasetCtx(alice, c, []string{"sales.orders"}, 3, 100))

	before := pp.decisions(t, "would_deny")
	fi, err := c.GetFlightInfo(bob, pathDesc("sales.orders"))
	require.NoError(t, err, "audit mode lets the call through")
	got, err := readEndpoint(bob, c, fi.Endpoint[0], 100)
	require.NoError(t, err)
	assert.Equal(t, []int{0, 1, 2}, got)
	assert.Equal(t, before+2, pp.decisions(t, "would_deny"), "GetFlightInfo and DoGet")
	assert.Zero(t, pp.decisions(t, "deny"))

	var apis []string
	for _, e := range pp.audit.entries(t) {
		if e.Principal == "User:bob" {
			assert.Equal(t, "would_deny", e.Result)
			assert.Contains(t, e.Rule, "acls[2] at line 9")
			apis = append(apis, e.API)
		}
	}
	assert.Equal(t, []string{"GetFlightInfo", "DoGet"}, apis)
}

// TestPolicyFlightQuotas caps alice at one data stream by the policy's
// flight_quotas; bob, without an entry, takes the fallback (none).
func TestPolicyFlightQuotas(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer(grpc.MaxSendMsgSize(4 << 20))
	flight.RegisterFlightServiceServer(g, &floodServer{})
	serveGRPC(t, func(ctx context.Context) error {
		context.AfterFunc(ctx, g.Stop)
		return g.Serve(ln)
	})
	text := enforcePolicy() + `  - {principal: "User:*", operation: READ, resource: flight_dataset, name: "*", permission: allow}
flight_quotas:
  - {principal: "User:alice", max_streams: 1}
`
	pp := startPolicyProxy(t, text, Config{Upstreams: []Upstream{{Target: ln.Addr().String()}}})
	c := pp.client
	alice, bob := pp.login(t, "alice", "alice-secret"), pp.login(t, "bob", "bob-secret")
	// The flood server takes any ticket; under a policy the proxy takes only
	// its own, so seal one as GetFlightInfo would.
	ticket := pp.proxy.tickets.wrap(routedTicket{route: "default", dataset: "x", inner: []byte("x")})
	open := func(ctx context.Context) error {
		s, err := c.DoGet(ctx, &flight.Ticket{Ticket: ticket})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	held, cancel := context.WithCancel(alice)
	defer cancel()
	require.NoError(t, open(held), "alice's first stream")
	err = open(alice)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Contains(t, err.Error(), "User:alice has 1 Flight data streams open")

	b1, cancelB := context.WithCancel(bob)
	defer cancelB()
	require.NoError(t, open(b1))
	b2, cancelB2 := context.WithCancel(bob)
	defer cancelB2()
	require.NoError(t, open(b2), "bob has no cap")

	cancel()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithCancel(alice)
		defer cancel()
		return open(ctx) == nil
	}, 10*time.Second, 50*time.Millisecond, "admitted again once the first stream ended")
}

// TestFlightLoginFailuresLimited: after five failed logins from one source,
// even the right password is refused until the window passes.
func TestFlightLoginFailuresLimited(t *testing.T) {
	pp := startPolicyProxy(t, enforcePolicy(), Config{})
	c, bg := pp.client, context.Background()
	for i := range loginFailLimit {
		_, err := c.AuthenticateBasicToken(bg, "alice", "guess-"+string(rune('a'+i)))
		require.Equal(t, codes.Unauthenticated, status.Code(err))
		assert.Contains(t, err.Error(), "wrong user name or password")
	}
	_, err := c.AuthenticateBasicToken(bg, "alice", "alice-secret")
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.Contains(t, err.Error(), "too many failed logins from 127.0.0.1")
	assert.Equal(t, float64(loginFailLimit+1), testutilCounter(t, pp.proxy, "pipemesh_flight_authentication_failures_total"))
}

func testutilCounter(t *testing.T, p *Proxy, name string) float64 {
	t.Helper()
	reg, ok := p.cfg.Registerer.(*prometheus.Registry)
	require.True(t, ok)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.Metric[0].GetCounter().GetValue()
		}
	}
	return 0
}

func TestLoginLimiterWindow(t *testing.T) {
	l := newLoginLimiter()
	now := time.Now()
	for range loginFailLimit - 1 {
		l.fail("10.0.0.1", now)
	}
	_, blocked := l.blocked("10.0.0.1", now)
	assert.False(t, blocked, "four failures")
	l.fail("10.0.0.1", now)
	retry, blocked := l.blocked("10.0.0.1", now.Add(10*time.Second))
	assert.True(t, blocked)
	assert.Equal(t, 20*time.Second, retry)
	_, blocked = l.blocked("10.0.0.2", now)
	assert.False(t, blocked, "per source")
	_, blocked = l.blocked("10.0.0.1", now.Add(loginFailWindow))
	assert.False(t, blocked, "the window has passed")
	assert.Empty(t, l.by, "forgotten")
}

// TestPolicyActions: the built-in service's delete needs WRITE on the
// dataset; renewing or cancelling a ticket needs READ on its dataset.
func TestPolicyActions(t *testing.T) {
	pp := startPolicyProxy(t, enforcePolicy(), Config{})
	c := pp.client
	alice, carol := pp.login(t, "alice", "alice-secret"), pp.login(t, "carol", "carol-secret")
	require.NoError(t, putDatasetCtx(carol, c, []string{"hr.people"}, 1, 10))
	del := func(ctx context.Context, name string) error {
		s, err := c.DoAction(ctx, &flight.Action{Type: "delete", Body: []byte(name)})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	err := del(alice, "hr.people")
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Contains(t, err.Error(), `User:alice may not WRITE flight_dataset "hr.people"`)
	require.NoError(t, del(carol, "hr.people"))
	_, err = c.GetFlightInfo(carol, pathDesc("hr.people"))
	assert.Equal(t, codes.NotFound, status.Code(err), "deleted")

	tp := startPolicyProxy(t, enforcePolicy(), Config{Upstreams: []Upstream{{Target: startTicketServer(t, "up")}}})
	alice, bob := tp.login(t, "alice", "alice-secret"), tp.login(t, "bob", "bob-secret")
	fi, err := tp.client.GetFlightInfo(alice, pathDesc("sales.q1"))
	require.NoError(t, err)
	_, err = tp.client.RenewFlightEndpoint(alice, &flight.RenewFlightEndpointRequest{Endpoint: fi.Endpoint[0]})
	require.NoError(t, err)
	_, err = tp.client.RenewFlightEndpoint(bob, &flight.RenewFlightEndpointRequest{Endpoint: fi.Endpoint[0]})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "bob may not renew alice's ticket")
	_, err = tp.client.CancelFlightInfo(bob, &flight.CancelFlightInfoRequest{Info: fi})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "nor cancel it")
	// (The test upstream answers a cancel with text, so read it raw.)
	s, err := tp.client.DoAction(alice, &flight.Action{Type: flight.CancelFlightInfoActionType,
		Body: mustMarshal(t, &flight.CancelFlightInfoRequest{Info: fi})})
	require.NoError(t, err)
	res, err := s.Recv()
	require.NoError(t, err)
	assert.Equal(t, "up cancelled up-ticket", string(res.Body))
}

// TestPolicyForeignTicketDenied: a ticket the proxy did not issue names no
// dataset the policy can check, so under a policy it must not reach the
// upstream. Bob may read everything but "sales."; the built-in service's
// ticket format is plain JSON, so without this he could write a ticket for
// "sales.orders" himself and read it through the proxy.
func TestPolicyForeignTicketDenied(t *testing.T) {
	text := enforcePolicy() + `  - {principal: "User:bob", operation: READ, resource: flight_dataset, name: "*", permission: allow}
`
	pp := startPolicyProxy(t, text, Config{})
	c := pp.client
	alice, bob := pp.login(t, "alice", "alice-secret"), pp.login(t, "bob", "bob-secret")
	require.NoError(t, putDatasetCtx(alice, c, []string{"sales.orders"}, 2, 10))
	_, err := c.GetFlightInfo(bob, pathDesc("sales.orders"))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the rule holds for a descriptor")

	forged := &flight.Ticket{Ticket: []byte(`{"dataset":"sales.orders","chunk":0}`)}
	s, err := c.DoGet(bob, forged)
	if err == nil {
		_, err = s.Recv()
	}
	require.Equal(t, codes.PermissionDenied, status.Code(err), "a hand-made upstream ticket: %v", err)
	assert.Contains(t, err.Error(), "did not issue")

	_, err = c.RenewFlightEndpoint(bob, &flight.RenewFlightEndpointRequest{Endpoint: &flight.FlightEndpoint{Ticket: forged}})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "nor renew one")
}
