package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// flightPolicy covers Kafka topics and Flight datasets in one file.
const flightPolicy = `
principals:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
acls:
  - {principal: "User:alice", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: WRITE, resource: flight_dataset, name: "sales.staging", permission: allow}
  - {principal: "User:*", operation: ALL, resource: flight_dataset, name: "sales.secret", pattern: prefixed, permission: deny}
  - {principal: "User:alice", operation: READ, resource: topic, name: "sales.", pattern: prefixed, permission: allow}
  - {principal: "User:carol", operation: DESCRIBE, resource: flight_dataset, name: "*", permission: allow}
  - {principal: "User:bob", operation: READ, resource: flight_dataset, name: "bob.", pattern: prefixed, permission: deny, mode: audit}
  - {principal: "User:bob", operation: READ, resource: flight_dataset, name: "*", permission: allow}
flight_quotas:
  - {principal: "User:alice", max_streams: 2, bytes_per_second: 200MiB}
  - {principal: "User:*", max_streams: 8}
`

func TestDecideFlightDataset(t *testing.T) {
	p := mustParse(t, flightPolicy)
	tests := []struct {
		principal string
		op        Operation
		name      string
		want      Result
		rule      int // -1: none
	}{
		{"User:alice", OpRead, "sales.orders", Allowed, 0},
		{"User:alice", OpDescribe, "sales.orders", Allowed, 0}, // READ implies DESCRIBE
		{"User:alice", OpWrite, "sales.orders", Denied, -1},
		{"User:alice", OpWrite, "sales.staging", Allowed, 1},
		{"User:alice", OpDescribe, "sales.staging", Allowed, 0}, // first rule in file order
		{"User:alice", OpRead, "sales.secret.pay", Denied, 2},   // deny wins
		{"User:alice", OpDescribe, "sales.secret.pay", Denied, 2},
		{"User:alice", OpRead, "hr.people", Denied, -1},
		{"User:bob", OpRead, "sales.orders", Allowed, 6},
		{"User:bob", OpRead, "bob.x", WouldDeny, 5}, // audited deny rule
		{"User:carol", OpDescribe, "anything", Allowed, 4},
		{"User:carol", OpRead, "anything", Denied, -1},
		{"User:ANONYMOUS", OpDescribe, "sales.orders", Denied, -1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_%s_%s", tt.principal, tt.op, tt.name), func(t *testing.T) {
			d := p.Decide(tt.principal, tt.op, ResFlightDataset, tt.name)
			assert.Equal(t, tt.want, d.Result)
			if tt.rule < 0 {
				assert.Nil(t, d.Rule)
			} else if assert.NotNil(t, d.Rule) {
				assert.Equal(t, tt.rule, d.Rule.Index)
			}
		})
	}
	// The topic rule and the dataset rule with the same name stay apart.
	assert.Equal(t, Allowed, p.Decide("User:alice", OpRead, ResTopic, "sales.orders").Result)
	assert.Equal(t, Denied, p.Decide("User:bob", OpRead, ResTopic, "sales.orders").Result)
	assert.Equal(t, Denied, p.Decide("User:alice", OpWrite, ResTopic, "sales.staging").Result)
	assert.Contains(t, p.Rules()[0].String(), `on flight_dataset prefixed:"sales."`)
}

func TestFlightQuotas(t *testing.T) {
	p := mustParse(t, flightPolicy)
	q, ok := p.FlightQuota("User:alice")
	require.True(t, ok)
	assert.Equal(t, 2, q.MaxStreams)
	assert.Equal(t, int64(200<<20), q.BytesPerSecond)
	q, ok = p.FlightQuota("User:bob") // falls to User:*
	require.True(t, ok)
	assert.Equal(t, FlightQuota{Principal: "User:*", Pos: Pos{15, 5}, MaxStreams: 8}, q)
	assert.Len(t, p.FlightQuotas(), 2)

	none := mustParse(t, flightPolicy[:strings.Index(flightPolicy, "flight_quotas:")])
	_, ok = none.FlightQuota("User:alice")
	assert.False(t, ok)
}

func TestParseFlightErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"operation not for datasets", `
acls:
  - {principal: "User:a", operation: ALTER, resource: flight_dataset, name: d, permission: allow}
`, []string{`policy.yaml:3:5: operation ALTER does not apply to resource type flight_dataset (pipemesh allows READ, WRITE, DESCRIBE, ALL)`}},
		{"prefixed star", `
acls:
  - {principal: "User:a", operation: READ, resource: flight_dataset, name: "*", pattern: prefixed, permission: allow}
`, []string{`policy.yaml:3:76: prefixed pattern with name "*"`}},
		{"misspelt resource", `
acls:
  - {principal: "User:a", operation: READ, resource: flight_datasets, name: d, permission: allow}
`, []string{`policy.yaml:3:54: unknown resource type "flight_datasets": want topic, group, transactional_id, cluster, flight_dataset or flight_action`}},
		{"operation not for actions", `
acls:
  - {principal: "User:a", operation: READ, resource: flight_action, name: BeginTransaction, permission: allow}
`, []string{`policy.yaml:3:5: operation READ does not apply to resource type flight_action (pipemesh allows WRITE, ALL; calling an action, and seeing it in ListActions, is WRITE)`}},
		{"action without a name", `
acls:
  - {principal: "User:a", operation: WRITE, resource: flight_action, permission: allow}
`, []string{`policy.yaml:3:5: acl is missing name (use "*" with pattern literal for every flight_action)`}},
		{"bad quotas", `
acls:
  - {principal: "User:a", operation: READ, resource: flight_dataset, name: d, permission: allow}
flight_quotas:
  - {principal: "User:a", max_streams: many}
  - {principal: "User:a", bytes_per_second: 2TB}
  - {principal: "alice", max_streams: 1}
  - {max_streams: -1}
  - {principal: "User:b"}
  - {principal: "User:c", max_stream: 1}
`, []string{
			`policy.yaml:5:40: max_streams "many": want a whole number of streams`,
			`policy.yaml:6:17: flight quota for User:a is given twice (first at line 5)`,
			`policy.yaml:6:45: bytes_per_second "2TB": want bytes`,
			`policy.yaml:7:17: principal "alice": want Type:name`,
			`policy.yaml:8:5: flight quota is missing principal`,
			`policy.yaml:8:19: max_streams "-1": want a whole number`,
			`policy.yaml:9:5: flight quota sets nothing`,
			`policy.yaml:10:5: flight quota sets nothing`,
			`policy.yaml:10:27: flight quota: unknown key "max_stream"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("policy.yaml", []byte(tt.text), Options{Getenv: testEnv})
			var pe *Error
			require.True(t, errors.As(err, &pe), "want *Error, got %T: %v", err, err)
			lines := strings.Split(err.Error(), "\n")
			require.Len(t, lines, len(tt.want), "issues:\n%s", err)
			for i, w := range tt.want {
				assert.True(t, strings.HasPrefix(lines[i], w), "issue %d:\n got %s\nwant %s...", i, lines[i], w)
			}
		})
	}
}

// actionPolicy has flight_action rules: alice may call BeginTransaction
// and the "admin." actions but admin.purge; everyone may call
// CreatePreparedStatement.
const actionPolicy = `
acls:
  - {principal: "User:alice", operation: WRITE, resource: flight_action, name: BeginTransaction, permission: allow}
  - {principal: "User:alice", operation: ALL, resource: flight_action, name: "admin.", pattern: prefixed, permission: allow}
  - {principal: "User:alice", operation: WRITE, resource: flight_action, name: admin.purge, permission: deny}
  - {principal: "User:*", operation: WRITE, resource: flight_action, name: CreatePreparedStatement, permission: allow}
  - {principal: "User:alice", operation: WRITE, resource: flight_dataset, name: "*", permission: allow}
`

func TestDecideFlightAction(t *testing.T) {
	p := mustParse(t, actionPolicy)
	tests := []struct {
		principal, name string
		want            Result
		rule            int // -1: none
	}{
		{"User:alice", "BeginTransaction", Allowed, 0},
		{"User:alice", "admin.compact", Allowed, 1},
		{"User:alice", "admin.purge", Denied, 2},
		{"User:alice", "EndTransaction", Denied, -1},
		{"User:alice", "begintransaction", Denied, -1}, // names are case-sensitive
		{"User:bob", "CreatePreparedStatement", Allowed, 3},
		{"User:bob", "BeginTransaction", Denied, -1},
		{"User:alice", "*", Denied, -1}, // the dataset wildcard does not cover actions
	}
	for _, tt := range tests {
		t.Run(tt.principal+"_"+tt.name, func(t *testing.T) {
			d := p.Decide(tt.principal, OpWrite, ResFlightAction, tt.name)
			assert.Equal(t, tt.want, d.Result)
			if tt.rule < 0 {
				assert.Nil(t, d.Rule)
				assert.Equal(t, ReasonNoAllow, d.Reason)
			} else if assert.NotNil(t, d.Rule) {
				assert.Equal(t, tt.rule, d.Rule.Index)
			}
		})
	}
	// An action type is not a dataset of the same name.
	assert.Equal(t, Denied, p.Decide("User:alice", OpRead, ResFlightDataset, "BeginTransaction").Result)
	assert.Contains(t, p.Rules()[1].String(), `allow User:alice ALL on flight_action prefixed:"admin."`)
}

func TestDecideFlightDoesNotAllocate(t *testing.T) {
	p := mustParse(t, flightPolicy)
	a := mustParse(t, actionPolicy)
	allocs := testing.AllocsPerRun(100, func() {
		p.Decide("User:alice", OpRead, ResFlightDataset, "sales.orders.2026")
		p.Decide("User:alice", OpDescribe, ResFlightDataset, "sales.secret.x")
		p.Decide("User:bob", OpRead, ResFlightDataset, "bob.y")
		p.FlightQuota("User:bob")
		a.Decide("User:alice", OpWrite, ResFlightAction, "admin.compact")
		a.Decide("User:alice", OpWrite, ResFlightAction, "EndTransaction")
	})
	assert.Zero(t, allocs)
}

// BenchmarkDecideFlightDataset decides against 10,000 flight_dataset rules:
// 2,500 principals with a literal WRITE, a prefixed READ, a literal
// DESCRIBE and a prefixed deny for everyone each.
func BenchmarkDecideFlightDataset(b *testing.B) {
	var text []byte
	text = append(text, "acls:\n"...)
	for i := range 2500 {
		text = fmt.Appendf(text, "  - {principal: \"User:u%d\", operation: WRITE, resource: flight_dataset, name: \"ingest/%d\", permission: allow}\n", i, i)
		text = fmt.Appendf(text, "  - {principal: \"User:u%d\", operation: READ, resource: flight_dataset, name: \"team%d/\", pattern: prefixed, permission: allow}\n", i, i)
		text = fmt.Appendf(text, "  - {principal: \"User:u%d\", operation: DESCRIBE, resource: flight_dataset, name: \"catalog/%d\", permission: allow}\n", i, i)
		text = fmt.Appendf(text, "  - {principal: \"User:*\", operation: ALL, resource: flight_dataset, name: \"team%d/private/\", pattern: prefixed, permission: deny}\n", i)
	}
	p := mustParse(b, string(text))
	require.Len(b, p.Rules(), 10000)
	cases := []struct {
		name, principal string
		op              Operation
		res             string
		want            Result
	}{
		{"literal_allow", "User:u1234", OpWrite, "ingest/1234", Allowed},
		{"prefixed_allow", "User:u1234", OpRead, "team1234/events/2026-12", Allowed},
		{"prefixed_deny", "User:u1234", OpRead, "team1234/private/pay", Denied},
		{"implied_describe", "User:u1234", OpDescribe, "team1234/events", Allowed},
		{"no_match", "User:u7", OpRead, "team8/events", Denied},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p.Decide(c.principal, c.op, ResFlightDataset, c.res).Result != c.want {
					b.Fatal("wrong decision")
				}
			}
		})
	}
}

// TestAuditModeNamesTheDenyRule: in an audit policy, a deny rule that
// matches with no allow is the rule reported (it decides once enforced);
// in an enforced policy, an audited deny rule with no allow leaves the
// default deny in force.
func TestAuditModeNamesTheDenyRule(t *testing.T) {
	rules := `
acls:
  - {principal: "User:bob", operation: READ, resource: flight_dataset, name: "sales.", pattern: prefixed, permission: deny%s}
`
	audit := mustParse(t, "mode: audit"+fmt.Sprintf(rules, ""))
	d := audit.Decide("User:bob", OpRead, ResFlightDataset, "sales.orders")
	assert.Equal(t, WouldDeny, d.Result)
	assert.Equal(t, ReasonDenyRule, d.Reason)
	require.NotNil(t, d.Rule)

	enforced := mustParse(t, "mode: enforce"+fmt.Sprintf(rules, ", mode: audit"))
	d = enforced.Decide("User:bob", OpRead, ResFlightDataset, "sales.orders")
	assert.Equal(t, Denied, d.Result)
	assert.Equal(t, ReasonNoAllow, d.Reason)
}
