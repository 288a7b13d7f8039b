package kafkaproxy_test

// Identity and authorization with sarama and kcat (librdkafka): the same
// policy as authz_kgo_test.go, over SASL PLAIN (handshake v1 and the legacy
// v0) and SCRAM-SHA-512.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// saramaScram adapts franz-go's SCRAM client to sarama's SCRAMClient, so
// that the test does not bring in another SCRAM implementation.
type saramaScram struct {
	sess  sasl.Session
	first []byte
	done  bool
}

func (s *saramaScram) Begin(user, pass, _ string) error {
	sess, first, err := scram.Auth{User: user, Pass: pass}.AsSha512Mechanism().Authenticate(context.Background(), "")
	s.sess, s.first = sess, first
	return err
}

func (s *saramaScram) Step(challenge string) (string, error) {
	if s.first != nil {
		f := s.first
		s.first = nil
		return string(f), nil
	}
	done, next, err := s.sess.Challenge([]byte(challenge))
	s.done = done
	return string(next), err
}

func (s *saramaScram) Done() bool { return s.done }

func saramaSASL(t *testing.T, mech string, v0 bool, user, pass string) *sarama.Config {
	cfg := saramaConfig(t)
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.User, cfg.Net.SASL.Password = user, pass
	cfg.Net.SASL.Mechanism = sarama.SASLMechanism(mech)
	if v0 {
		// Sarama sends handshake v0 only without ApiVersions, so it is
		// told a Kafka version whose requests the proxy can read.
		cfg.Net.SASL.Version = sarama.SASLHandshakeV0
		cfg.ApiVersionsRequest = false
		cfg.Version = sarama.V2_8_0_0
	}
	if mech == sarama.SASLTypeSCRAMSHA512 {
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &saramaScram{} }
	}
	cfg.Producer.Idempotent = false
	require.NoError(t, cfg.Validate())
	return cfg
}

func TestAuthzSarama(t *testing.T) {
	for _, c := range []struct {
		name string
		mech string
		v0   bool
	}{
		{"PLAIN", sarama.SASLTypePlaintext, false},
		{"PLAIN-handshake-v0", sarama.SASLTypePlaintext, true},
		{"SCRAM-SHA-512", sarama.SASLTypeSCRAMSHA512, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := startAuthzEnv(t, authzPolicy)

			// alice writes orders.
			sp, err := sarama.NewSyncProducer([]string{e.addr}, saramaSASL(t, c.mech, c.v0, "alice", "alice-secret"))
			require.NoError(t, err)
			defer sp.Close()
			const n = 100
			want := map[string]saramaWant{}
			for i := range n {
				k, v, h := saramaRecord(c.name, i)
				want[string(k)] = saramaWant{value: v, headers: h}
				_, _, err := sp.SendMessage(&sarama.ProducerMessage{Topic: "orders", Key: sarama.ByteEncoder(k), Value: sarama.ByteEncoder(v), Headers: h})
				require.NoError(t, err)
			}
			// ...but not secret.
			_, _, err = sp.SendMessage(&sarama.ProducerMessage{Topic: "secret", Value: sarama.StringEncoder("x")})
			require.ErrorIs(t, err, sarama.ErrTopicAuthorizationFailed)

			// bob reads orders in group billing, every record once.
			group, err := sarama.NewConsumerGroup([]string{e.addr}, "billing", saramaSASL(t, c.mech, c.v0, "bob", "bob-secret"))
			require.NoError(t, err)
			defer group.Close()
			col := &saramaCollector{want: want, seen: map[string]int{}, all: make(chan struct{})}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			go func() {
				for ctx.Err() == nil {
					if err := group.Consume(ctx, []string{"orders"}, col); err != nil {
						return
					}
				}
			}()
			select {
			case <-col.all:
			case <-ctx.Done():
				t.Fatalf("bob received %d of %d records", len(col.seen), n)
			}
			cancel()
			col.mu.Lock()
			assert.Empty(t, col.bad)
			for k, c := range col.seen {
				assert.Equal(t, 1, c, "record %q", k)
			}
			col.mu.Unlock()

			// bob may not write.
			bp, err := sarama.NewSyncProducer([]string{e.addr}, saramaSASL(t, c.mech, c.v0, "bob", "bob-secret"))
			require.NoError(t, err)
			defer bp.Close()
			_, _, err = bp.SendMessage(&sarama.ProducerMessage{Topic: "orders", Value: sarama.StringEncoder("x")})
			require.ErrorIs(t, err, sarama.ErrTopicAuthorizationFailed)

			// A wrong password is an authentication error (with handshake
			// v0 the protocol can only close the connection).
			bad := saramaSASL(t, c.mech, c.v0, "alice", "wrong")
			bad.Metadata.Retry.Max = 0
			_, err = sarama.NewClient([]string{e.addr}, bad)
			require.Error(t, err)
			if !c.v0 {
				assert.ErrorIs(t, err, sarama.ErrSASLAuthenticationFailed)
			}
		})
	}
}

// kcatSASL returns kcat's flags for SASL as user.
func kcatSASL(mech, user, pass string) []string {
	return []string{"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=" + mech,
		"-X", "sasl.username=" + user, "-X", "sasl.password=" + pass}
}

// kcatFails runs kcat expecting it to fail and returns its stderr.
func kcatFails(t *testing.T, kcat string, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.WaitDelay = 2 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "kcat timed out; stderr:\n%s", stderr.String())
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "kcat should have failed: %v\nstderr:\n%s", err, stderr.String())
	return stderr.String()
}

func TestAuthzKcat(t *testing.T) {
	kcat := externalTool(t, "kcat")
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			e := startAuthzEnv(t, authzPolicy)
			var in bytes.Buffer
			const n = 50
			for i := range n {
				fmt.Fprintf(&in, "%s-record-%03d\n", mech, i)
			}
			// alice produces to orders.
			runTool(t, 60*time.Second, in.Bytes(), kcat, kcatArgs(e.addr, append(kcatSASL(mech, "alice", "alice-secret"),
				"-P", "-t", "orders", "-p", "0", "-X", "enable.idempotence=false")...)...)
			// bob reads them all back, once each, in order.
			out := runTool(t, 60*time.Second, nil, kcat, kcatArgs(e.addr, append(kcatSASL(mech, "bob", "bob-secret"),
				"-C", "-t", "orders", "-p", "0", "-o", "beginning", "-e", "-f", "%s\n")...)...)
			assert.Equal(t, in.String(), string(out))

			// bob may not produce: librdkafka reports the authorization error.
			stderr := kcatFails(t, kcat, []byte("x\n"), kcatArgs(e.addr, append(kcatSASL(mech, "bob", "bob-secret"),
				"-P", "-t", "orders", "-p", "0", "-X", "enable.idempotence=false")...)...)
			assert.Contains(t, strings.ToLower(stderr), "authorization failed", stderr)

			// secret is not listed for bob.
			meta := runTool(t, 30*time.Second, nil, kcat, kcatArgs(e.addr, append(kcatSASL(mech, "bob", "bob-secret"), "-L")...)...)
			assert.Contains(t, string(meta), `topic "orders"`)
			assert.NotContains(t, string(meta), `topic "secret"`)

			// A wrong password is an authentication failure, not a timeout.
			stderr = kcatFails(t, kcat, nil, kcatArgs(e.addr, append(kcatSASL(mech, "alice", "nope"), "-L")...)...)
			assert.Contains(t, strings.ToLower(stderr), "authentication failed", stderr)
		})
	}
}
