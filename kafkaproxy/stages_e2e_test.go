package kafkaproxy_test

// Every stage at once: identity and authorization, quotas, recompression and
// the observe stage run on the same connections, in the order conn.go fixes
// (authorize, shape, transform, observe). Each stage has its own tests; this
// one checks that they compose: what authorization rewrites is what gets
// recompressed and counted, and the principal SASL establishes is the one
// quotas and lineage see.

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/lineage"
	"github.com/pipemesh/pipemesh/protocol"
)

const stagesPolicy = `
principals:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
acls:
  - {principal: "User:alice", operation: WRITE, resource: topic, name: "logs.", pattern: prefixed, permission: allow}
  - {principal: "User:bob", operation: READ, resource: topic, name: "logs.", pattern: prefixed, permission: allow}
  - {principal: "User:bob", operation: READ, resource: group, name: audit, permission: allow}
`

func TestStagesCompose(t *testing.T) {
	const (
		topic = "logs.app"
		small = 300
		large = 5 // 200 KiB each: past the 64 KiB head, so they would stream
	)
	rec := newRecorder()
	e := startAuthzEnv(t, stagesPolicy,
		withTopic(topic, 3),
		withCompression(zstdLogsRule),
		// Only alice is limited, and only on logs.: 512 KiB/s against the
		// ~1.1 MB she sends, so she must be throttled; bob reads freely.
		withQuotas(kafkaproxy.QuotaRule{Principal: "User:alice", Topic: "logs.", Prefixed: true, ProduceBytesPerSecond: 512 << 10}),
		withLineage(rec),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	throttled := &throttleHook{}
	alice := saslClient(t, e, "SCRAM-SHA-512", "alice", "alice-secret",
		kgo.ClientID("log-shipper"), kgo.ProducerBatchCompression(kgo.GzipCompression()), kgo.WithHooks(throttled))
	want := map[string][]byte{}
	var recs []*kgo.Record
	for i := range small + large {
		r, w := e2eRecord("stages", i)
		if i >= small {
			// Random bytes: quotas count bytes as sent (compressed), so
			// these must not shrink under gzip.
			w.value = make([]byte, 200<<10)
			rand.NewChaCha8([32]byte{byte(i)}).Read(w.value)
			r.Value = w.value
		}
		r.Topic, r.Headers = topic, nil
		want[string(r.Key)] = w.value
		recs = append(recs, r)
	}
	require.NoError(t, alice.ProduceSync(ctx, recs...).FirstErr())

	// One request with an allowed and a denied topic: the allowed part is
	// written, recompressed and counted; the denied part is refused.
	mixed := alice.ProduceSync(ctx,
		&kgo.Record{Topic: topic, Key: []byte("mixed-ok"), Value: []byte("kept")},
		&kgo.Record{Topic: "secret", Key: []byte("mixed-no"), Value: []byte("refused")})
	for _, r := range mixed {
		if r.Record.Topic == topic {
			require.NoError(t, r.Err)
		} else {
			require.ErrorIs(t, r.Err, kerr.TopicAuthorizationFailed)
		}
	}
	want["mixed-ok"] = []byte("kept")
	n := len(want)

	// Every record arrives once, byte for byte, decompressed by bob's client
	// from the zstd batches the broker stores.
	bob := saslClient(t, e, "PLAIN", "bob", "bob-secret", kgo.ClientID("auditor"),
		kgo.ConsumeTopics(topic), kgo.ConsumerGroup("audit"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := map[string][]byte{}
	for len(got) < n && ctx.Err() == nil {
		fs := bob.PollFetches(ctx)
		require.NoError(t, fs.Err0())
		fs.EachRecord(func(r *kgo.Record) {
			_, dup := got[string(r.Key)]
			require.False(t, dup, "record %q arrived twice", r.Key)
			got[string(r.Key)] = r.Value
		})
	}
	require.Len(t, got, n)
	for k, v := range want {
		require.True(t, bytes.Equal(v, got[k]), "record %q differs", k)
	}

	byCodec, _, _ := storedBatches(ctx, t, e.env, topic, 3)
	assert.Equal(t, []protocol.Codec{protocol.CodecZstd}, compressMapKeys(byCodec), "the broker holds only zstd batches")

	// Quotas saw alice's principal, not an anonymous one.
	assert.Positive(t, throttled.n.Load(), "alice was throttled (throttle_time_ms)")
	assert.Positive(t, proxyLabeled(t, e.env, "pipemesh_kafka_throttle_seconds_total", map[string]string{"principal": "User:alice"}))

	// Lineage names the authenticated principals and counts exactly the
	// records that reached the topic: the denied one is not there.
	pe := waitEdge(t, e.env, rec, edgeName(app("User:alice/log-shipper"), topicRef(topic), lineage.Produces), int64(n))
	for c := range pe.clients {
		assert.Equal(t, "User:alice", c.Principal)
	}
	ce := waitEdge(t, e.env, rec, edgeName(topicRef(topic), groupRef("audit"), lineage.Consumes), int64(n))
	for c := range ce.clients {
		assert.Equal(t, "User:bob", c.Principal)
	}
	for _, name := range rec.names() {
		assert.NotContains(t, name, "topic:secret", "a denied topic is no lineage edge")
	}
	e2eNoProtocolErrors(t, e.env)
}
