package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

const cliPolicy = `principals:
  - name: alice
    password: alice-secret
acls:
  - {principal: "User:alice", operation: WRITE, resource: topic, name: orders, permission: allow}
  - {principal: "User:*", operation: ALL, resource: topic, name: secret, permission: deny}
`

func writePolicy(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

func TestPolicyCheck(t *testing.T) {
	var out, errOut bytes.Buffer
	good := writePolicy(t, cliPolicy)
	require.Equal(t, 0, run(context.Background(), []string{"policy", "check", good}, &out, &errOut), errOut.String())
	assert.Contains(t, out.String(), ": ok: 2 rules")

	bad := writePolicy(t, `principals:
  - name: alice
  - {name: alice, password: x}
acls:
  - {principal: "User:a", operation: SMASH, resource: topic, name: t, pattern: glob, permission: allow}
`)
	out.Reset()
	errOut.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"policy", "check", bad}, &out, &errOut))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 4, out.String())
	assert.Contains(t, lines[0], bad+`:2:5: principal "alice" has no password source`)
	assert.Contains(t, lines[1], bad+`:3:12: principal "alice" is defined twice`)
	assert.Contains(t, lines[2], bad+`:5:38: unknown operation "SMASH"`)
	assert.Contains(t, lines[3], bad+`:5:80: bad pattern "glob"`)
	assert.Contains(t, errOut.String(), "4 problem(s)")
}

func TestPolicyExplain(t *testing.T) {
	path := writePolicy(t, cliPolicy)
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--principal", "User:alice", "--operation", "WRITE", "--topic", "orders"},
			[]string{`ALLOW: User:alice WRITE topic "orders"`, "by acls[0] at line 5: allow User:alice WRITE on topic literal:\"orders\""}},
		{[]string{"--principal", "User:bob", "--operation", "WRITE", "--topic", "orders"},
			[]string{`DENY: User:bob WRITE topic "orders"`, "no allow rule matches"}},
		{[]string{"--principal", "User:alice", "--operation", "read", "--topic", "secret"},
			[]string{`DENY: User:alice READ topic "secret"`, "by acls[1] at line 6: deny User:* ALL"}},
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
	assert.Equal(t, 1, run(context.Background(), []string{"policy", "explain", path, "--principal", "bob", "--operation", "READ", "--topic", "t"}, &out, &errOut))
	assert.Contains(t, errOut.String(), "want User:name")
}

// TestServeWithPolicy runs serve --policy end to end: SASL is required and
// the rules hold.
func TestServeWithPolicy(t *testing.T) {
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 1, Topics: []devbroker.Topic{{Name: "orders", Partitions: 1}}})
	require.NoError(t, err)
	defer cluster.Close()
	path := writePolicy(t, cliPolicy)
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	fs := newFlagSet("serve", "", "", &bytes.Buffer{})
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse([]string{"--kafka-listen", "127.0.0.1:0", "--broker-port-base", "-1", "--admin-listen", "127.0.0.1:0",
		"--kafka-upstream", cluster.ListenAddrs()[0], "--policy", path, "--audit-log", audit}))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, s, slog.New(slog.DiscardHandler), func(p *kafkaproxy.Proxy, _ *admin.Server) { addr <- p.Addr() })
	}()
	bootstrap := <-addr
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.SASL(plain.Auth{User: "alice", Pass: "alice-secret"}.AsMechanism()))
	require.NoError(t, err)
	defer cl.Close()
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	require.NoError(t, cl.ProduceSync(pctx, &kgo.Record{Topic: "orders", Value: []byte("v")}).FirstErr())
	require.ErrorIs(t, cl.ProduceSync(pctx, &kgo.Record{Topic: "secret", Value: []byte("v")}).FirstErr(), kerr.TopicAuthorizationFailed)
	cancel()
	require.NoError(t, <-done)
	data, err := os.ReadFile(audit)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"principal":"User:alice"`)
	assert.Contains(t, string(data), `"resource_name":"secret"`)
}
