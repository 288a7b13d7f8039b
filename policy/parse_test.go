package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseErrorsNameFileLineColumn(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string // every issue, in order
	}{
		{"unknown operation", `
acls:
  - {principal: "User:a", operation: SMASH, resource: topic, name: t, permission: allow}
`, []string{`policy.yaml:3:38: unknown operation "SMASH"`}},
		{"bad pattern", `
acls:
  - principal: "User:a"
    operation: READ
    resource: topic
    name: t
    pattern: glob
    permission: allow
`, []string{`policy.yaml:7:14: bad pattern "glob": want literal or prefixed`}},
		{"duplicate principal", `
principals:
  - {name: alice, password: x}
  - {name: alice, password: y}
`, []string{`policy.yaml:4:12: principal "alice" is defined twice (first at line 3)`}},
		{"missing password source", `
principals:
  - name: alice
`, []string{`policy.yaml:3:5: principal "alice" has no password source: add password or password_env`}},
		{"unset password_env", `
principals:
  - {name: carl, password_env: CARL_PW}
`, []string{`policy.yaml:3:32: password_env CARL_PW is not set in the environment`}},
		{"several at once", `
mode: strict
acls:
  - {principal: "alice", operation: READ, resource: topics, name: t, permission: maybe, colour: red}
  - {principal: "User:a", operation: WRITE, resource: group, name: g, permission: allow}
  - {principal: "User:a", operation: READ, resource: topic, permission: allow}
`, []string{
			`policy.yaml:2:7: mode "strict": want enforce or audit`,
			`policy.yaml:4:17: principal "alice": want Type:name`,
			`policy.yaml:4:53: unknown resource type "topics"`,
			`policy.yaml:4:82: bad permission "maybe"`,
			`policy.yaml:4:89: acl: unknown key "colour"`,
			`policy.yaml:5:5: operation WRITE does not apply to resource type group`,
			`policy.yaml:6:5: acl is missing name`,
		}},
		{"not yaml", "acls: [\n", []string{`policy.yaml:1:1: not valid YAML`}},
		{"empty", "", []string{`policy.yaml:1:1: the file is empty`}},
		{"audit on allow", `
acls:
  - {principal: "User:a", operation: READ, resource: topic, name: t, permission: allow, mode: audit}
`, []string{`policy.yaml:3:5: mode applies to deny rules only`}},
		{"host", `
acls:
  - {principal: "User:a", operation: READ, resource: topic, name: t, permission: allow, host: 10.0.0.1}
`, []string{`policy.yaml:3:95: host "10.0.0.1"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("policy.yaml", []byte(tt.text), Options{Getenv: testEnv})
			require.Error(t, err)
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

func TestParseClusterDefaultsName(t *testing.T) {
	p := mustParse(t, `
acls:
  - {principal: "User:ops", operation: ALTER, resource: cluster, permission: allow}
`)
	assert.Equal(t, ClusterName, p.Rules()[0].Name)
	assert.Equal(t, Allowed, p.Decide("User:ops", OpAlter, ResCluster, ClusterName).Result)
	assert.Equal(t, Allowed, p.Decide("User:ops", OpDescribe, ResCluster, ClusterName).Result)
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
}

func TestStoreReloadKeepsOldPolicyOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, `
acls:
  - {principal: "User:a", operation: WRITE, resource: topic, name: t, permission: allow}
`)
	reg := prometheus.NewRegistry()
	s, err := NewStore(StoreConfig{Path: path, Registerer: reg})
	require.NoError(t, err)
	assert.Equal(t, Allowed, s.Current().Decide("User:a", OpWrite, ResTopic, "t").Result)

	writeFile(t, path, "acls:\n  - {principal: nope}\n")
	require.Error(t, s.Reload())
	assert.Equal(t, Allowed, s.Current().Decide("User:a", OpWrite, ResTopic, "t").Result, "old policy stays")
	assert.Equal(t, 1.0, testutil.ToFloat64(s.failed))
	assert.Equal(t, 1.0, testutil.ToFloat64(s.reloads.WithLabelValues("error")))

	writeFile(t, path, `
acls:
  - {principal: "User:a", operation: READ, resource: topic, name: t, permission: allow}
`)
	require.NoError(t, s.Reload())
	assert.Equal(t, Denied, s.Current().Decide("User:a", OpWrite, ResTopic, "t").Result, "new policy in force")
	assert.Equal(t, 0.0, testutil.ToFloat64(s.failed))
}

func TestStoreRunReloadsOnFileChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, `
acls:
  - {principal: "User:a", operation: WRITE, resource: topic, name: t, permission: allow}
`)
	s, err := NewStore(StoreConfig{Path: path})
	require.NoError(t, err)
	ctx := t.Context()
	go s.Run(ctx, 10*time.Millisecond)
	// Replace the file the way editors and ConfigMaps do: a new file renamed over.
	tmp := filepath.Join(dir, "new.yaml")
	writeFile(t, tmp, `
acls:
  - {principal: "User:a", operation: READ, resource: topic, name: t, permission: allow}
`)
	require.NoError(t, os.Rename(tmp, path))
	require.Eventually(t, func() bool {
		return s.Current().Decide("User:a", OpWrite, ResTopic, "t").Result == Denied
	}, 5*time.Second, 10*time.Millisecond)
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(examplePolicy))
	f.Add([]byte("acls:\n  - {principal: \"User:*\", operation: ALL, resource: topic, name: \"*\", permission: deny}\n"))
	f.Add([]byte("mode: audit\nsuper_users: [User:x]\nacls: []\nprincipals: [{name: a, password: b}]\n"))
	f.Add([]byte("acls: [\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte(flightPolicy))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		p, err := Parse("fuzz.yaml", data, Options{Getenv: func(string) (string, bool) { return "x", true }})
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) && len(pe.Issues) == 0 {
				t.Fatal("an *Error with no issues")
			}
			return
		}
		// Whatever parsed must decide without panicking.
		for _, r := range p.Rules() {
			p.Decide(r.Principal, r.Operation, r.Resource, r.Name)
			p.Decide("User:x", OpDescribe, r.Resource, r.Name+"x")
		}
		for _, q := range p.FlightQuotas() {
			if got, ok := p.FlightQuota(q.Principal); !ok || got != q {
				t.Fatalf("flight quota of %s: got %+v, want %+v", q.Principal, got, q)
			}
			if q.MaxStreams < 0 || q.BytesPerSecond < 0 || q.BytesPerSecond > maxQuotaRate {
				t.Fatalf("flight quota out of range: %+v", q)
			}
		}
	})
}
