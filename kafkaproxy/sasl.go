package kafkaproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/policy"
)

// API keys of SASL (KIP-43, KIP-152).
const (
	keySaslHandshake    = 17
	keySaslAuthenticate = 36
)

// SASL mechanisms the proxy terminates.
const (
	mechPlain    = "PLAIN"
	mechScram256 = "SCRAM-SHA-256"
	mechScram512 = "SCRAM-SHA-512"
)

var mechanisms = []string{mechPlain, mechScram256, mechScram512}

// saslState is one connection's progress through SASL. It is touched only
// by the request goroutine.
type saslState struct {
	mech string
	// legacy is set after a SaslHandshake v0: the client then sends bare
	// SASL tokens in size-prefixed frames, without Kafka request headers.
	legacy bool
	scram  *scramServer
	done   bool
}

// Failed authentications are limited per source address: past
// authFailLimit failures within authFailWindow, further attempts from that
// address are refused without looking at the credentials until the window
// has passed, which bounds password guessing.
const (
	authFailLimit  = 5
	authFailWindow = 30 * time.Second
	authFailTrack  = 10000 // addresses remembered at most
)

type failureLimiter struct {
	mu sync.Mutex
	by map[string]*failRecord
}

type failRecord struct {
	n     int
	first time.Time
}

func newFailureLimiter() *failureLimiter {
	return &failureLimiter{by: make(map[string]*failRecord)}
}

// blocked reports whether host has used up its failures for now.
func (l *failureLimiter) blocked(host string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.by[host]
	if r == nil {
		return false
	}
	if now.Sub(r.first) > authFailWindow {
		delete(l.by, host)
		return false
	}
	return r.n >= authFailLimit
}

// fail records one failure of host.
func (l *failureLimiter) fail(host string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.by[host]
	if r == nil || now.Sub(r.first) > authFailWindow {
		if len(l.by) >= authFailTrack {
			for h, old := range l.by {
				if now.Sub(old.first) > authFailWindow {
					delete(l.by, h)
				}
			}
			if len(l.by) >= authFailTrack {
				return // under a flood, stop tracking new sources rather than grow
			}
		}
		r = &failRecord{first: now}
		l.by[host] = r
	}
	r.n++
}

func hostOf(a net.Addr) string {
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// saslHandshake answers SaslHandshake with the mechanisms on offer, and
// picks the client's if it is one of them.
func (c *conn) saslHandshake(req *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.SupportedMechanisms = mechanisms
	switch req.Mechanism {
	case mechPlain, mechScram256, mechScram512:
		c.sasl = saslState{mech: req.Mechanism, legacy: req.Version == 0}
		if req.Mechanism != mechPlain {
			c.sasl.scram = newScramServer(req.Mechanism, c.policy().Credentials)
		}
	default:
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		c.p.log.Warn("kafka client asked for a SASL mechanism pipemesh does not offer; configure PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
			append(c.attrs(), "mechanism", req.Mechanism)...)
	}
	return resp
}

// errAuthFailed is returned for a failed SASL exchange; the caller answers
// SASL_AUTHENTICATION_FAILED (or, after a v0 handshake, closes).
type errAuthFailed struct {
	user string
	err  error
}

func (e *errAuthFailed) Error() string { return e.err.Error() }

// saslStep consumes one client token and returns the server's reply token.
// It sets c.principal when the exchange succeeds.
func (c *conn) saslStep(token []byte) ([]byte, error) {
	host := hostOf(c.client.RemoteAddr())
	now := time.Now()
	if c.sasl.mech == "" {
		return nil, errors.New("SaslAuthenticate before SaslHandshake")
	}
	if c.p.authFails.blocked(host, now) {
		c.p.authFailures.Inc()
		return nil, &errAuthFailed{err: fmt.Errorf("too many failed authentications from %s; retry after %s", host, authFailWindow)}
	}
	var reply []byte
	var user string
	var err error
	done := false
	switch c.sasl.mech {
	case mechPlain:
		user, err = c.plain(token)
		done = err == nil
	default:
		reply, done, err = c.sasl.scram.next(token)
		user = c.sasl.scram.user
	}
	if err != nil {
		c.p.authFails.fail(host, now)
		c.p.authFailures.Inc()
		c.sasl = saslState{}
		c.p.log.Warn("kafka client failed SASL authentication", append(c.attrs(), "user", user, "err", err.Error())...)
		return nil, &errAuthFailed{user: user, err: err}
	}
	if done {
		c.sasl.done = true
		c.principal = "User:" + user
		c.p.log.Info("kafka client authenticated", c.attrs()...)
	}
	return reply, nil
}

// plain checks a SASL/PLAIN token: authzid NUL authcid NUL password
// (RFC 4616). The password is compared in constant time.
func (c *conn) plain(token []byte) (string, error) {
	parts := bytes.SplitN(token, []byte{0}, 3)
	if len(parts) != 3 {
		return "", errors.New("malformed PLAIN token")
	}
	authz, user, pw := string(parts[0]), string(parts[1]), parts[2]
	if authz != "" && authz != user {
		return user, errors.New("PLAIN authorization id differs from the user name; pipemesh does not support impersonation")
	}
	cred, ok := c.policy().Credentials(user)
	if !ok {
		// Compare anyway so an unknown user costs what a known one does.
		dummy := policy.Credentials{}
		dummy.CheckPassword(pw)
		return user, errors.New("invalid credentials")
	}
	if !cred.CheckPassword(pw) {
		return user, errors.New("invalid credentials")
	}
	return user, nil
}

// saslAuthenticate answers SaslAuthenticate (v0-v2).
func (c *conn) saslAuthenticate(req *kmsg.SASLAuthenticateRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	reply, err := c.saslStep(req.SASLAuthBytes)
	if err != nil {
		code := kerr.SaslAuthenticationFailed.Code
		var af *errAuthFailed
		if !errors.As(err, &af) {
			code = kerr.IllegalSaslState.Code
		}
		msg := "Authentication failed: " + err.Error()
		resp.ErrorCode, resp.ErrorMessage = code, &msg
		return resp
	}
	resp.SASLAuthBytes = reply
	return resp
}

// saslLegacyToken handles a bare SASL token after SaslHandshake v0. The
// reply is a bare token frame; a failure closes the connection, which is
// all that version of the protocol can say.
func (c *conn) saslLegacyToken(frame []byte) ([]byte, error) {
	reply, err := c.saslStep(frame)
	if err != nil {
		return nil, fmt.Errorf("SASL authentication failed (handshake v0 has no error answer, so the connection is closed): %w", err)
	}
	if c.sasl.done {
		c.sasl.legacy = false
	}
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(reply)), uint32(len(reply)))
	return append(out, reply...), nil
}

// addSaslVersions makes sure an ApiVersions answer offers SaslHandshake
// from v0 (librdkafka turns SASL on only then) and SaslAuthenticate, since
// the proxy answers both itself whatever the broker supports.
func addSaslVersions(resp *kmsg.ApiVersionsResponse) {
	want := map[int16]int16{keySaslHandshake: 1, keySaslAuthenticate: 2}
	for i := range resp.ApiKeys {
		k := &resp.ApiKeys[i]
		if max, ok := want[k.ApiKey]; ok {
			k.MinVersion, k.MaxVersion = 0, max
			delete(want, k.ApiKey)
		}
	}
	for _, key := range []int16{keySaslHandshake, keySaslAuthenticate} {
		if max, ok := want[key]; ok {
			resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: key, MinVersion: 0, MaxVersion: max})
		}
	}
}
