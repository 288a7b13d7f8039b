package policy

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const examplePolicy = `
super_users: ["User:admin"]
principals:
  - name: alice
    password: alice-secret
  - name: bob
    password_env: BOB_PASSWORD
acls:
  - {principal: "User:alice", operation: WRITE, resource: topic, name: orders, pattern: literal, permission: allow}
  - {principal: "User:bob", operation: READ, resource: topic, name: "orders", pattern: prefixed, permission: allow}
  - {principal: "User:bob", operation: READ, resource: group, name: billing, pattern: literal, permission: allow}
  - {principal: "User:*", operation: ALL, resource: topic, name: secret, pattern: literal, permission: deny}
  - {principal: "User:carol", operation: ALL, resource: topic, name: "*", pattern: literal, permission: allow}
  - {principal: "User:carol", operation: WRITE, resource: topic, name: "secret", pattern: prefixed, permission: deny}
  - {principal: "User:dave", operation: ALTER_CONFIGS, resource: topic, name: "cfg", permission: allow}
  - {principal: "User:erin", operation: DescribeConfigs, resource: topic, name: "cfg", permission: allow}
  - {principal: "User:erin", operation: READ, resource: topic, name: "audited", permission: allow}
  - {principal: "User:erin", operation: READ, resource: topic, name: "audited", permission: deny, mode: audit}
  - {principal: "User:alice", operation: IDEMPOTENT_WRITE, resource: cluster, permission: allow}
`

func testEnv(name string) (string, bool) {
	if name == "BOB_PASSWORD" {
		return "bob-secret", true
	}
	return "", false
}

func mustParse(t testing.TB, text string) *Policy {
	t.Helper()
	p, err := Parse("policy.yaml", []byte(text), Options{Getenv: testEnv})
	require.NoError(t, err)
	return p
}

func TestDecideKafkaSemantics(t *testing.T) {
	p := mustParse(t, examplePolicy)
	tests := []struct {
		principal string
		op        Operation
		rt        ResourceType
		name      string
		want      Result
		reason    Reason
		rule      int // index of the deciding rule, -1 for none
	}{
		{"User:alice", OpWrite, ResTopic, "orders", Allowed, ReasonAllowRule, 0},
		{"User:alice", OpDescribe, ResTopic, "orders", Allowed, ReasonAllowRule, 0}, // WRITE implies DESCRIBE
		{"User:alice", OpRead, ResTopic, "orders", Denied, ReasonNoAllow, -1},
		{"User:alice", OpWrite, ResTopic, "orders2", Denied, ReasonNoAllow, -1}, // literal is exact
		{"User:bob", OpRead, ResTopic, "orders", Allowed, ReasonAllowRule, 1},
		{"User:bob", OpRead, ResTopic, "orders.eu", Allowed, ReasonAllowRule, 1}, // prefixed
		{"User:bob", OpRead, ResTopic, "order", Denied, ReasonNoAllow, -1},
		{"User:bob", OpDescribe, ResTopic, "orders.eu", Allowed, ReasonAllowRule, 1}, // READ implies DESCRIBE
		{"User:bob", OpWrite, ResTopic, "orders", Denied, ReasonNoAllow, -1},
		{"User:bob", OpRead, ResGroup, "billing", Allowed, ReasonAllowRule, 2},
		{"User:bob", OpRead, ResGroup, "billing2", Denied, ReasonNoAllow, -1},
		{"User:carol", OpRead, ResTopic, "anything", Allowed, ReasonAllowRule, 4}, // literal *
		{"User:carol", OpWrite, ResTopic, "secrets-x", Denied, ReasonDenyRule, 5}, // deny wins over * allow
		{"User:carol", OpRead, ResTopic, "secrets-x", Allowed, ReasonAllowRule, 4},
		{"User:carol", OpRead, ResTopic, "secret", Denied, ReasonDenyRule, 3}, // User:* ALL deny
		{"User:admin", OpAlter, ResTopic, "secret", Allowed, ReasonSuperUser, -1},
		{"User:dave", OpDescribeConfigs, ResTopic, "cfg", Allowed, ReasonAllowRule, 6}, // ALTER_CONFIGS implies DESCRIBE_CONFIGS
		{"User:dave", OpDescribe, ResTopic, "cfg", Denied, ReasonNoAllow, -1},
		{"User:erin", OpAlterConfigs, ResTopic, "cfg", Denied, ReasonNoAllow, -1},
		{"User:erin", OpDescribeConfigs, ResTopic, "cfg", Allowed, ReasonAllowRule, 7},
		{"User:erin", OpRead, ResTopic, "audited", WouldDeny, ReasonDenyRule, 9}, // audit deny rule
		{"User:alice", OpIdempotentWrite, ResCluster, ClusterName, Allowed, ReasonAllowRule, 10},
		{"User:ANONYMOUS", OpDescribe, ResTopic, "orders", Denied, ReasonNoAllow, -1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_%s_%s_%s", tt.principal, tt.op, tt.rt, tt.name), func(t *testing.T) {
			d := p.Decide(tt.principal, tt.op, tt.rt, tt.name)
			assert.Equal(t, tt.want, d.Result, "result")
			assert.Equal(t, tt.reason, d.Reason, "reason")
			if tt.rule < 0 {
				assert.Nil(t, d.Rule)
			} else if assert.NotNil(t, d.Rule) {
				assert.Equal(t, tt.rule, d.Rule.Index)
			}
		})
	}
}

func TestDenyOfReadDoesNotDenyDescribe(t *testing.T) {
	// As in Kafka: a deny rule is not widened by implication.
	p := mustParse(t, `
acls:
  - {principal: "User:a", operation: ALL, resource: topic, name: t, permission: allow}
  - {principal: "User:a", operation: READ, resource: topic, name: t, permission: deny}
`)
	assert.Equal(t, Denied, p.Decide("User:a", OpRead, ResTopic, "t").Result)
	assert.Equal(t, Allowed, p.Decide("User:a", OpDescribe, ResTopic, "t").Result)
	assert.Equal(t, Allowed, p.Decide("User:a", OpWrite, ResTopic, "t").Result)
}

func TestAllowIfNoACL(t *testing.T) {
	text := `
allow_if_no_acl: %v
acls:
  - {principal: "User:a", operation: READ, resource: topic, name: guarded, permission: allow}
  - {principal: "User:a", operation: READ, resource: topic, name: "pre", pattern: prefixed, permission: allow}
`
	on := mustParse(t, fmt.Sprintf(text, true))
	off := mustParse(t, fmt.Sprintf(text, false))
	// No rule names "free": allowed only with the switch on.
	assert.Equal(t, Allowed, on.Decide("User:b", OpWrite, ResTopic, "free").Result)
	assert.Equal(t, ReasonNoACL, on.Decide("User:b", OpWrite, ResTopic, "free").Reason)
	assert.Equal(t, Denied, off.Decide("User:b", OpWrite, ResTopic, "free").Result)
	// A rule names "guarded" (for someone else): the switch does not apply.
	assert.Equal(t, Denied, on.Decide("User:b", OpRead, ResTopic, "guarded").Result)
	assert.Equal(t, Denied, on.Decide("User:b", OpRead, ResTopic, "prefix-match").Result)
}

func TestAuditMode(t *testing.T) {
	p := mustParse(t, `
mode: audit
acls:
  - {principal: "User:a", operation: READ, resource: topic, name: t, permission: allow}
  - {principal: "User:a", operation: READ, resource: topic, name: hard, permission: deny, mode: enforce}
`)
	assert.Equal(t, Allowed, p.Decide("User:a", OpRead, ResTopic, "t").Result)
	d := p.Decide("User:a", OpWrite, ResTopic, "t")
	assert.Equal(t, WouldDeny, d.Result)
	assert.True(t, d.Allowed())
	d = p.Decide("User:a", OpRead, ResTopic, "hard")
	assert.Equal(t, Denied, d.Result, "a rule in enforce mode is enforced in an audit policy")
	assert.False(t, d.Allowed())
}

func TestEnforcedDenyBeatsAuditedDeny(t *testing.T) {
	p := mustParse(t, `
acls:
  - {principal: "User:a", operation: ALL, resource: topic, name: "*", permission: allow}
  - {principal: "User:a", operation: READ, resource: topic, name: t, permission: deny, mode: audit}
  - {principal: "User:*", operation: READ, resource: topic, name: t, pattern: prefixed, permission: deny}
`)
	d := p.Decide("User:a", OpRead, ResTopic, "t")
	assert.Equal(t, Denied, d.Result)
	assert.Equal(t, 2, d.Rule.Index)
}

func TestAllowedOnAny(t *testing.T) {
	p := mustParse(t, examplePolicy)
	assert.True(t, p.AllowedOnAny("User:alice", OpWrite, ResTopic))
	assert.False(t, p.AllowedOnAny("User:bob", OpWrite, ResTopic))
	assert.True(t, p.AllowedOnAny("User:carol", OpWrite, ResTopic)) // ALL
	assert.True(t, p.AllowedOnAny("User:admin", OpWrite, ResTopic))
	assert.True(t, p.AllowedOnAny("User:bob", OpDescribe, ResTopic))
}

func TestCredentials(t *testing.T) {
	p := mustParse(t, examplePolicy)
	require.True(t, p.HasPrincipals())
	c, ok := p.Credentials("bob")
	require.True(t, ok)
	assert.True(t, c.CheckPassword([]byte("bob-secret")))
	assert.False(t, c.CheckPassword([]byte("bob-secreT")))
	assert.Equal(t, "User:bob", c.Principal())
	assert.Len(t, c.SHA256.StoredKey, 32)
	assert.Len(t, c.SHA512.StoredKey, 64)
	assert.Equal(t, ScramIterations, c.SHA512.Iterations)
	_, ok = p.Credentials("nobody")
	assert.False(t, ok)
}

func TestDecideDoesNotAllocate(t *testing.T) {
	p := mustParse(t, examplePolicy)
	allocs := testing.AllocsPerRun(100, func() {
		p.Decide("User:bob", OpDescribe, ResTopic, "orders.eu.2026")
		p.Decide("User:carol", OpWrite, ResTopic, "secrets-x")
		p.Decide("User:admin", OpWrite, ResTopic, "x")
	})
	assert.Zero(t, allocs)
}

// BenchmarkDecide decides against 10,000 rules: 2,500 principals with a
// literal WRITE, a prefixed READ, a group READ and a deny each.
func BenchmarkDecide(b *testing.B) {
	var text []byte
	text = append(text, "acls:\n"...)
	for i := range 2500 {
		text = fmt.Appendf(text, "  - {principal: \"User:u%d\", operation: WRITE, resource: topic, name: \"orders-%d\", permission: allow}\n", i, i)
		text = fmt.Appendf(text, "  - {principal: \"User:u%d\", operation: READ, resource: topic, name: \"team%d.\", pattern: prefixed, permission: allow}\n", i, i)
		text = fmt.Appendf(text, "  - {principal: \"User:u%d\", operation: READ, resource: group, name: \"g%d\", permission: allow}\n", i, i)
		text = fmt.Appendf(text, "  - {principal: \"User:*\", operation: WRITE, resource: topic, name: \"team%d.locked\", pattern: prefixed, permission: deny}\n", i)
	}
	p := mustParse(b, string(text))
	require.Len(b, p.Rules(), 10000)
	cases := []struct {
		name, principal string
		op              Operation
		rt              ResourceType
		res             string
		want            Result
	}{
		{"literal_allow", "User:u1234", OpWrite, ResTopic, "orders-1234", Allowed},
		{"prefixed_allow", "User:u1234", OpRead, ResTopic, "team1234.events.v2", Allowed},
		{"prefixed_deny", "User:u1234", OpWrite, ResTopic, "team1234.locked.x", Denied},
		{"no_match", "User:u7", OpWrite, ResTopic, "orders-8", Denied},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p.Decide(c.principal, c.op, c.rt, c.res).Result != c.want {
					b.Fatal("wrong decision")
				}
			}
		})
	}
}
