package kafkaproxy_test

// Compression and quota rules from the policy file, end to end: kgo clients
// through the proxy to kfake, with the policy reloaded under live
// connections.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/policy"
	"github.com/pipemesh/pipemesh/protocol"
)

// openPolicy lets every request through (no ACLs, allow_if_no_acl), so the
// tests below exercise only the rule sections appended to it.
const openPolicy = "allow_if_no_acl: true\n"

// produceBatches sends n records one ProduceSync at a time (one batch each)
// and returns what was sent by key.
func produceBatches(ctx context.Context, t *testing.T, cl *kgo.Client, round string, n int) map[string]string {
	t.Helper()
	sent := map[string]string{}
	for i := range n {
		k := fmt.Sprintf("%s-%03d", round, i)
		v := strings.Repeat(fmt.Sprintf("%s record %d, compressible text; ", round, i), 40)
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Key: []byte(k), Value: []byte(v)}).FirstErr())
		sent[k] = v
	}
	return sent
}

func TestPolicyRulesReloadRecompressesLiveConnections(t *testing.T) {
	e := startAuthzEnv(t, openPolicy+"compression:\n  - {topic: \"logs.\", pattern: prefixed, codec: zstd, level: 3}\n",
		withTopic("logs.app", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := e2eClient(t, e.env, kgo.DefaultProduceTopic("logs.app"), kgo.ProducerBatchCompression(kgo.GzipCompression()),
		kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	sent := produceBatches(ctx, t, cl, "zstd", 10)
	byCodec, _, _ := storedBatches(ctx, t, e.env, "logs.app", 1)
	assert.Equal(t, map[protocol.Codec]int{protocol.CodecZstd: 10}, byCodec, "gzip batches stored as zstd")
	accepted := proxyCounter(t, e.env, "pipemesh_kafka_connections_accepted_total", "", "")

	// The store's own watcher sees the file replaced (as an editor or a
	// ConfigMap update does) and reloads it.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go e.store.Run(rctx, 10*time.Millisecond)
	tmp := e.path + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(openPolicy+"compression:\n  - {topic: \"logs.\", pattern: prefixed, codec: lz4}\n"), 0o600))
	require.NoError(t, os.Rename(tmp, e.path))
	require.Eventually(t, func() bool { return e.store.Current().Compression()[0].Codec == "lz4" }, 10*time.Second, 10*time.Millisecond)
	rcancel()
	for k, v := range produceBatches(ctx, t, cl, "lz4", 10) {
		sent[k] = v
	}
	byCodec, _, _ = storedBatches(ctx, t, e.env, "logs.app", 1)
	assert.Equal(t, map[protocol.Codec]int{protocol.CodecZstd: 10, protocol.CodecLZ4: 10}, byCodec, "the next batches stored as lz4")

	// An invalid file is refused and the lz4 rule stays.
	require.NoError(t, os.WriteFile(e.path, []byte(openPolicy+"compression:\n  - {topic: \"logs.\", pattern: prefixed, codec: brotli}\n"), 0o600))
	err := e.store.Reload()
	require.Error(t, err)
	assert.Contains(t, err.Error(), ":3:48: compression[0].codec: unknown compression codec \"brotli\"")
	for k, v := range produceBatches(ctx, t, cl, "kept", 10) {
		sent[k] = v
	}
	byCodec, _, _ = storedBatches(ctx, t, e.env, "logs.app", 1)
	assert.Equal(t, map[protocol.Codec]int{protocol.CodecZstd: 10, protocol.CodecLZ4: 20}, byCodec, "old rules kept after a bad reload")
	assert.Equal(t, accepted, proxyCounter(t, e.env, "pipemesh_kafka_connections_accepted_total", "", ""),
		"every produce after the reloads went over the connections the producer already had")

	// Every record arrives once, byte for byte, through the proxy.
	consumer := e2eClient(t, e.env, kgo.ConsumeTopics("logs.app"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := map[string]string{}
	for len(got) < len(sent) {
		fs := consumer.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consumed %d of %d", len(got), len(sent))
		fs.EachRecord(func(r *kgo.Record) {
			_, dup := got[string(r.Key)]
			require.False(t, dup, "record %s twice", r.Key)
			got[string(r.Key)] = string(r.Value)
		})
	}
	assert.Equal(t, sent, got)
}

func TestPolicyRulesReloadAddsQuotaOnSameConnection(t *testing.T) {
	e := startAuthzEnv(t, openPolicy, withTopic("logs.app", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hook := &throttleHook{}
	cl := e2eClient(t, e.env, kgo.DefaultProduceTopic("logs.app"), kgo.WithHooks(hook),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerLinger(0))
	value := make([]byte, 30<<10)
	for range 3 {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr())
	}
	require.Zero(t, hook.n.Load(), "no quota, no throttle")
	accepted := proxyCounter(t, e.env, "pipemesh_kafka_connections_accepted_total", "", "")
	assert.Zero(t, proxyCounter(t, e.env, "pipemesh_kafka_rules", "kind", "quota"))

	// 10 KiB/s with a 1 s burst: the next 30 KiB produce is about 2 s over.
	require.NoError(t, os.WriteFile(e.path, []byte(openPolicy+"quotas:\n  - {principal: \"User:*\", produce_bytes_per_second: 10KiB}\n"), 0o600))
	require.NoError(t, e.store.Reload())
	assert.Equal(t, 1.0, proxyCounter(t, e.env, "pipemesh_kafka_rules", "kind", "quota"))
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr())
	assert.Positive(t, hook.n.Load(), "kgo saw throttle_time_ms on the first produce after the reload")
	assert.GreaterOrEqual(t, hook.total.Load(), int64(1000), "throttled for about 2 s")
	assert.Equal(t, accepted, proxyCounter(t, e.env, "pipemesh_kafka_connections_accepted_total", "", ""),
		"the throttled produce went over the connection the producer already had")
	assert.Positive(t, proxyCounter(t, e.env, "pipemesh_kafka_throttled_responses_total", "principal", "User:ANONYMOUS"))
}

// A reload keeps the allowances of the quota rules it leaves unchanged: a
// principal in debt stays in debt while other rules come and go.
func TestPolicyRulesReloadKeepsQuotaDebt(t *testing.T) {
	rules := "quotas:\n  - {principal: \"User:*\", produce_bytes_per_second: 10KiB}\n"
	e := startAuthzEnv(t, openPolicy+rules, withTopic("logs.app", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hook := &throttleHook{}
	cl := e2eClient(t, e.env, kgo.DefaultProduceTopic("logs.app"), kgo.WithHooks(hook),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerLinger(0))
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: make([]byte, 25<<10)}).FirstErr())
	first := hook.n.Load()
	require.Positive(t, first, "over the quota")

	require.NoError(t, os.WriteFile(e.path, []byte(openPolicy+"super_users: [\"User:ops\"]\n"+rules+
		"  - {principal: \"User:other\", fetch_bytes_per_second: 1MiB}\n"), 0o600))
	require.NoError(t, e.store.Reload())
	// After the pause the debt left is the burst, so 8 KiB (0.8 s at the
	// rate) is over it; fresh allowances would take 8 KiB within the burst.
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: make([]byte, 8<<10)}).FirstErr())
	assert.Greater(t, hook.n.Load(), first, "still throttled: the reload did not forgive the debt")
}

func TestPolicyRulesRefusedWhenConfigSetsRulesToo(t *testing.T) {
	path := t.TempDir() + "/policy.yaml"
	require.NoError(t, os.WriteFile(path, []byte(openPolicy+"quotas:\n  - {principal: \"User:*\", produce_bytes_per_second: 1MiB}\n"), 0o600))
	store, err := policy.NewStore(policy.StoreConfig{Path: path, Logger: testLogger(t)})
	require.NoError(t, err)
	c, err := devbroker.Start(devbroker.Config{Brokers: 1})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	_, err = kafkaproxy.New(kafkaproxy.Config{
		Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: c.ListenAddrs(), Logger: testLogger(t), Policy: store,
		Compression: []kafkaproxy.CompressionRule{{Topic: "logs.", Prefixed: true, Codec: protocol.CodecZstd}},
	})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "set both in the Config (config file) and in the policy file "+path)
}

// With rules in the Config (the config file's), a policy file without rules
// is fine and the Config's rules apply; a policy reload that brings rules
// later is not merged in (serve refuses such a reload earlier, in the
// parser; this is the proxy's own guard).
func TestPolicyRulesConfigRulesStayWithPolicy(t *testing.T) {
	e := startAuthzEnv(t, openPolicy, withTopic("logs.app", 1),
		withCompression(kafkaproxy.CompressionRule{Topic: "logs.", Prefixed: true, Codec: protocol.CodecZstd}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := e2eClient(t, e.env, kgo.DefaultProduceTopic("logs.app"), kgo.ProducerBatchCompression(kgo.GzipCompression()), kgo.ProducerLinger(0))
	produceBatches(ctx, t, cl, "config", 3)
	require.NoError(t, os.WriteFile(e.path, []byte(openPolicy+"compression:\n  - {topic: \"logs.\", pattern: prefixed, codec: lz4}\n"), 0o600))
	require.NoError(t, e.store.Reload())
	produceBatches(ctx, t, cl, "after", 3)
	byCodec, _, _ := storedBatches(ctx, t, e.env, "logs.app", 1)
	assert.Equal(t, map[protocol.Codec]int{protocol.CodecZstd: 6}, byCodec, "the Config's rule stays; the policy's is not merged")
	assert.Equal(t, 1.0, proxyCounter(t, e.env, "pipemesh_kafka_rules", "kind", "compression"))
}
