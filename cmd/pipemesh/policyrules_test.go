package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/internal/admin"
	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// TestPolicyCheckTrafficRules: policy check reports problems in the
// compression: and quotas: sections at their line and column.
func TestPolicyCheckTrafficRules(t *testing.T) {
	var out, errOut bytes.Buffer
	good := writePolicy(t, cliPolicy+`compression:
  - {topic: "logs.", pattern: prefixed, codec: zstd, level: 3}
quotas:
  - {principal: "User:*", produce_bytes_per_second: 10MiB}
  - {principal: "User:alice", requests_per_second: 100}
`)
	require.Equal(t, 0, run(context.Background(), []string{"policy", "check", good}, &out, &errOut), errOut.String())
	assert.Contains(t, out.String(), ": ok: 2 rules, 1 compression rules, 2 quota rules, 0 super users")

	bad := writePolicy(t, cliPolicy+`compression:
  - {topic: "logs.", pattern: prefixed, codec: zstd, level: 30}
quotas:
  - {principal: alice, produce_bytes_per_second: 10MiB}
  - {principal: "User:*", fetch_bytes_per_second: lots}
`)
	out.Reset()
	errOut.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"policy", "check", bad}, &out, &errOut))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3, out.String())
	assert.Equal(t, bad+`:8:61: compression[0].level 30: zstd levels run from -131072 to 22`, lines[0])
	assert.Equal(t, bad+`:10:17: quotas[0].principal: "alice": want Type:name (User:alice), Type:* (User:*) or *`, lines[1])
	assert.Equal(t, bad+`:11:51: quotas[1].fetch_bytes_per_second: "lots" is not a size; write bytes (1048576) or use KiB, MiB, GiB (1MiB)`, lines[2])
	assert.Contains(t, errOut.String(), "3 problem(s)")
}

// TestServeRefusesRulesInBothFiles: with compression or quotas in the
// config file and in the policy file, serve does not start, and says which
// two files to reconcile.
func TestServeRefusesRulesInBothFiles(t *testing.T) {
	cluster, err := devbroker.Start(devbroker.Config{Brokers: 1})
	require.NoError(t, err)
	defer cluster.Close()
	pol := writePolicy(t, "allow_if_no_acl: true\nquotas:\n  - {principal: \"User:*\", produce_bytes_per_second: 1MiB}\n")
	cfg := filepath.Join(t.TempDir(), "mesh.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("compression:\n  - {topic: logs., pattern: prefixed, codec: zstd}\n"), 0o600))
	fs := newFlagSet("serve", "", "", &bytes.Buffer{})
	var f serveFlags
	f.register(fs)
	require.NoError(t, fs.Parse([]string{"--config", cfg, "--kafka-listen", "127.0.0.1:0", "--broker-port-base", "-1",
		"--admin-listen", "127.0.0.1:0", "--kafka-upstream", cluster.ListenAddrs()[0], "--policy", pol}))
	s, err := f.resolve(fs)
	require.NoError(t, err)
	err = serve(context.Background(), s, slog.New(slog.DiscardHandler), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), pol+":2:1: quotas: is also set in the config file "+cfg+"; keep the rules in one file")

	// The same config file with a policy that sets no rules starts: its
	// rules stay in force (the policy file's ACLs apply as usual).
	require.NoError(t, os.WriteFile(pol, []byte("allow_if_no_acl: true\n"), 0o600))
	s, err = f.resolve(fs)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, s, slog.New(slog.DiscardHandler), func(p *kafkaproxy.Proxy, _ *admin.Server) { close(started) })
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	assert.Len(t, s.proxy.Compression, 1)
	cancel()
	require.NoError(t, <-done)
}
