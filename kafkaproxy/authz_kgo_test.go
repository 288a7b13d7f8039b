package kafkaproxy_test

// Identity and authorization end to end: kgo clients authenticate to the
// proxy with SASL PLAIN and SCRAM and are held to the policy in force.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/kafkaproxy"
	"github.com/pipemesh/pipemesh/policy"
)

// authzPolicy is the policy of these tests: alice writes orders, bob reads
// every orders* topic in group billing, nobody may see "secret" but the
// super user admin.
const authzPolicy = `
super_users: ["User:admin"]
principals:
  - {name: alice, password: alice-secret}
  - {name: bob, password: bob-secret}
  - {name: admin, password: admin-secret}
acls:
  - {principal: "User:alice", operation: WRITE, resource: topic, name: orders, permission: allow}
  - {principal: "User:bob", operation: READ, resource: topic, name: orders, pattern: prefixed, permission: allow}
  - {principal: "User:bob", operation: READ, resource: group, name: billing, permission: allow}
  - {principal: "User:*", operation: DESCRIBE, resource: topic, name: public, permission: allow}
  - {principal: "User:*", operation: ALL, resource: topic, name: secret, permission: deny}
`

// authzEnv is a proxy with the test policy loaded from a file (so reload
// can be tested), in front of a one-broker cluster (so that one produce
// request can carry several topics).
type authzEnv struct {
	*env
	store *policy.Store
	path  string
	audit *syncBuffer
}

func startAuthzEnv(t *testing.T, text string, opts ...envOpt) *authzEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	store, err := policy.NewStore(policy.StoreConfig{Path: path, Logger: testLogger(t)})
	require.NoError(t, err)
	audit := &syncBuffer{}
	opts = append([]envOpt{
		func(_ *kafkaproxy.Config, d *devbroker.Config) { d.Brokers = 1 },
		withTopic("orders", 3), withTopic("secret", 1), withTopic("public", 1),
		withProxyConfig(func(c *kafkaproxy.Config) { c.Policy, c.AuditLog = store, audit }),
	}, opts...)
	e := startEnv(t, opts...)
	return &authzEnv{env: e, store: store, path: path, audit: audit}
}

// syncBuffer is a bytes.Buffer safe for the proxy's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func mechanism(name, user, pass string) sasl.Mechanism {
	switch name {
	case "PLAIN":
		return plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	}
	return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
}

func saslClient(t *testing.T, e *authzEnv, mech, user, pass string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return e2eClient(t, e.env, append([]kgo.Opt{kgo.SASL(mechanism(mech, user, pass)), kgo.RequestRetries(2)}, opts...)...)
}

func TestAuthzKgoProduceConsume(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			e := startAuthzEnv(t, authzPolicy)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// alice may write orders: every record is acknowledged.
			alice := saslClient(t, e, mech, "alice", "alice-secret", kgo.DefaultProduceTopic("orders"))
			const n = 200
			want := map[string][]byte{}
			var recs []*kgo.Record
			for i := range n {
				r, w := e2eRecord(mech, i)
				want[string(r.Key)] = w.value
				recs = append(recs, r)
			}
			require.NoError(t, alice.ProduceSync(ctx, recs...).FirstErr())

			// bob may read orders in group billing: every record arrives
			// once, byte for byte.
			bob := saslClient(t, e, mech, "bob", "bob-secret",
				kgo.ConsumeTopics("orders"), kgo.ConsumerGroup("billing"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			got := map[string][]byte{}
			for len(got) < n && ctx.Err() == nil {
				fs := bob.PollFetches(ctx)
				require.NoError(t, fs.Err0(), "bob's fetch")
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
			require.NoError(t, bob.CommitUncommittedOffsets(ctx), "bob commits in billing")
		})
	}
}

func TestAuthzKgoDenials(t *testing.T) {
	e := startAuthzEnv(t, authzPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("produce without WRITE", func(t *testing.T) {
		bob := saslClient(t, e, "SCRAM-SHA-512", "bob", "bob-secret", kgo.DisableIdempotentWrite())
		err := bob.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr()
		require.ErrorIs(t, err, kerr.TopicAuthorizationFailed)
	})
	t.Run("idempotent producer without WRITE anywhere", func(t *testing.T) {
		bob := saslClient(t, e, "SCRAM-SHA-512", "bob", "bob-secret")
		err := bob.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr()
		require.ErrorIs(t, err, kerr.ClusterAuthorizationFailed, "InitProducerId needs IDEMPOTENT_WRITE or WRITE on a topic")
	})
	t.Run("consume without READ", func(t *testing.T) {
		alice := saslClient(t, e, "PLAIN", "alice", "alice-secret", kgo.ConsumeTopics("orders"))
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		defer pcancel()
		var err error
		for err == nil && pctx.Err() == nil {
			alice.PollFetches(pctx).EachError(func(_ string, _ int32, e error) {
				if !errors.Is(e, context.DeadlineExceeded) {
					err = e
				}
			})
		}
		require.ErrorIs(t, err, kerr.TopicAuthorizationFailed)
	})
	t.Run("group without READ", func(t *testing.T) {
		bob := saslClient(t, e, "PLAIN", "bob", "bob-secret")
		err := kmsgRequest(ctx, bob, &kmsg.JoinGroupRequest{Group: "payroll", SessionTimeoutMillis: 10000, RebalanceTimeoutMillis: 10000, ProtocolType: "consumer",
			Protocols: []kmsg.JoinGroupRequestProtocol{{Name: "range"}}})
		require.ErrorIs(t, err, kerr.GroupAuthorizationFailed)
	})
	t.Run("mixed produce: allowed part written, denied part refused", func(t *testing.T) {
		alice := saslClient(t, e, "PLAIN", "alice", "alice-secret", kgo.ProducerLinger(100*time.Millisecond))
		// Warm up: the connection to the leader is open and authenticated
		// (SASL steps are answered by the proxy too, and would count).
		require.NoError(t, alice.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("warm")}).FirstErr())
		local := proxyCounter(t, e.env, "pipemesh_kafka_local_responses_total", "", "")
		res := alice.ProduceSync(ctx,
			&kgo.Record{Topic: "orders", Value: []byte("ok")},
			&kgo.Record{Topic: "secret", Value: []byte("no")})
		require.Len(t, res, 2)
		for _, r := range res {
			if r.Record.Topic == "orders" {
				assert.NoError(t, r.Err)
			} else {
				assert.ErrorIs(t, r.Err, kerr.TopicAuthorizationFailed)
			}
		}
		// Both topics went in one request: the proxy forwarded the
		// allowed part and answered nothing wholly by itself.
		assert.Equal(t, local, proxyCounter(t, e.env, "pipemesh_kafka_local_responses_total", "", ""))
	})
	t.Run("audit log", func(t *testing.T) {
		assert.Contains(t, e.audit.String(), `"principal":"User:bob","client_id":"kgo","source"`)
		assert.Contains(t, e.audit.String(), `"result":"deny"`)
		assert.Contains(t, e.audit.String(), `"operation":"WRITE","resource_type":"topic","resource_name":"orders"`)
	})
}

// kmsgRequest sends req through cl and returns the error code of its
// response as an error.
func kmsgRequest(ctx context.Context, cl *kgo.Client, req kmsg.Request) error {
	resp, err := cl.Request(ctx, req)
	if err != nil {
		return err
	}
	switch r := resp.(type) {
	case *kmsg.JoinGroupResponse:
		return kerr.ErrorForCode(r.ErrorCode)
	}
	return fmt.Errorf("unexpected %T", resp)
}

func TestAuthzMetadataHidesTopics(t *testing.T) {
	e := startAuthzEnv(t, authzPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topics := func(cl *kgo.Client, names ...string) map[string]int16 {
		req := kmsg.NewPtrMetadataRequest()
		for _, n := range names {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(n)
			req.Topics = append(req.Topics, rt)
		}
		resp, err := req.RequestWith(ctx, cl)
		require.NoError(t, err)
		out := map[string]int16{}
		for _, t := range resp.Topics {
			out[*t.Topic] = t.ErrorCode
		}
		return out
	}
	bob := saslClient(t, e, "PLAIN", "bob", "bob-secret")
	assert.Equal(t, map[string]int16{"orders": 0, "public": 0}, topics(bob), "bob sees what he may describe, not secret")
	assert.Equal(t, map[string]int16{"secret": kerr.TopicAuthorizationFailed.Code}, topics(bob, "secret"), "named, it is refused")
	admin := saslClient(t, e, "SCRAM-SHA-512", "admin", "admin-secret")
	assert.Equal(t, map[string]int16{"orders": 0, "public": 0, "secret": 0}, topics(admin), "super user sees everything")

	// Auto-creation needs CREATE: bob's request for a new topic does not
	// create it.
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr("orders-new")
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = true
	resp, err := req.RequestWith(ctx, bob)
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	assert.Equal(t, kerr.UnknownTopicOrPartition.Code, resp.Topics[0].ErrorCode)
	assert.NotContains(t, topics(admin), "orders-new")
}

func TestAuthzWrongPasswordIsAuthError(t *testing.T) {
	e := startAuthzEnv(t, authzPolicy)
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cl := saslClient(t, e, mech, "alice", "wrong")
			err := cl.Ping(ctx)
			require.ErrorIs(t, err, kerr.SaslAuthenticationFailed)
			cl = saslClient(t, e, mech, "mallory", "x")
			require.ErrorIs(t, cl.Ping(ctx), kerr.SaslAuthenticationFailed, "an unknown user fails the same way")
		})
	}
	assert.Equal(t, 4.0, proxyCounter(t, e.env, "pipemesh_kafka_authentication_failures_total", "", ""))
}

func TestAuthzAnonymousRefused(t *testing.T) {
	e := startAuthzEnv(t, authzPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := e2eClient(t, e.env, kgo.RequestRetries(0))
	require.Error(t, cl.Ping(ctx))
	// The close is counted once both halves of the connection are done.
	require.Eventually(t, func() bool { return closedTotal(t, e.registry, "auth_refused") > 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestAuthzReloadRevokesWriteWithoutReconnect(t *testing.T) {
	e := startAuthzEnv(t, authzPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice := saslClient(t, e, "SCRAM-SHA-512", "alice", "alice-secret", kgo.DefaultProduceTopic("orders"), kgo.UnknownTopicRetries(0))
	require.NoError(t, alice.ProduceSync(ctx, kgo.StringRecord("before")).FirstErr())
	accepted := proxyCounter(t, e.env, "pipemesh_kafka_connections_accepted_total", "", "")

	revoked := authzPolicy + "  - {principal: \"User:alice\", operation: WRITE, resource: topic, name: orders, permission: deny}\n"
	require.NoError(t, os.WriteFile(e.path, []byte(revoked), 0o600))
	require.NoError(t, e.store.Reload())

	err := alice.ProduceSync(ctx, kgo.StringRecord("after")).FirstErr()
	require.ErrorIs(t, err, kerr.TopicAuthorizationFailed)
	assert.Equal(t, accepted, proxyCounter(t, e.env, "pipemesh_kafka_connections_accepted_total", "", ""),
		"the produce that failed went over the connections alice already had")
}

func TestAuthzAuditModeLetsThrough(t *testing.T) {
	e := startAuthzEnv(t, "mode: audit\n"+authzPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bob := saslClient(t, e, "PLAIN", "bob", "bob-secret", kgo.DisableIdempotentWrite())
	require.NoError(t, bob.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("audited")}).FirstErr())
	assert.Contains(t, e.audit.String(), `"result":"would_deny","principal":"User:bob"`)
}

// TestAuthzDeniedAcks0ProduceCloses: a produce with acks=0 has no answer
// to carry an error, so a denied one closes the connection, as Kafka does.
func TestAuthzDeniedAcks0ProduceCloses(t *testing.T) {
	e := startAuthzEnv(t, authzPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bob := saslClient(t, e, "PLAIN", "bob", "bob-secret", kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	require.NoError(t, bob.Ping(ctx))
	// With acks=0 kgo counts the record sent once written; the proxy's
	// answer is the closed connection.
	_ = bob.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("fire and forget")}).FirstErr()
	require.Eventually(t, func() bool { return closedTotal(t, e.registry, "auth_refused") >= 1 }, 10*time.Second, 20*time.Millisecond)

	admin := saslClient(t, e, "PLAIN", "admin", "admin-secret", kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	fs := admin.PollFetches(pctx)
	assert.Zero(t, fs.NumRecords(), "the denied record must not reach the broker")
}
