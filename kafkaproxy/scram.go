package kafkaproxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/pipemesh/pipemesh/policy"
)

// scramServer is the server side of one SCRAM exchange (RFC 5802, with the
// Kafka profile of KIP-84): client-first, server-first, client-final,
// server-final. It is written here rather than taken from a library because
// the exchange is small, fully specified, and the only server-side Go
// implementations are either unexported (kfake) or pull in a larger
// dependency for forty lines of logic; the primitives (PBKDF2, HMAC) are the
// standard library's.
type scramServer struct {
	h         func() hash.Hash
	lookup    func(user string) (*policy.Credentials, bool)
	sha512    bool
	step      int
	user      string
	cred      policy.ScramCredential
	known     bool
	nonce     string
	cnonce    string
	gs2       string
	firstBare string
	srvFirst  string
	// serverNonce makes the server's part of the nonce; tests replace it
	// to replay the RFC's example exchange.
	serverNonce func() string
}

func newScramServer(mech string, lookup func(string) (*policy.Credentials, bool)) *scramServer {
	s := &scramServer{lookup: lookup, h: sha256.New}
	if mech == mechScram512 {
		s.h, s.sha512 = sha512.New, true
	}
	return s
}

// errScramFailed is the one answer to a bad user or a bad proof, so that
// the reply does not tell which.
var errScramFailed = errors.New("authentication failed: invalid credentials")

// next consumes one client message and returns the server's reply; done is
// true after the final, successful step.
func (s *scramServer) next(msg []byte) (reply []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step++
		return s.first(string(msg))
	case 1:
		s.step++
		return s.final(string(msg))
	}
	return nil, false, errors.New("SCRAM exchange already finished")
}

func (s *scramServer) first(msg string) ([]byte, bool, error) {
	// gs2-header: "n," or "y," (no channel binding over Kafka), then an
	// optional authzid, then ",".
	cb, rest, ok := strings.Cut(msg, ",")
	if !ok || (cb != "n" && cb != "y") {
		return nil, false, fmt.Errorf("SCRAM client-first message: channel binding %q is not supported", cb)
	}
	authz, bare, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, false, errors.New("SCRAM client-first message is malformed")
	}
	s.gs2 = cb + "," + authz + ","
	s.firstBare = bare
	var user, cnonce string
	for _, attr := range strings.Split(bare, ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "n":
			user = v
		case "r":
			cnonce = v
		case "m":
			return nil, false, errors.New("SCRAM mandatory extensions are not supported")
		case "tokenauth":
			return nil, false, errors.New("SCRAM delegation tokens are not supported by pipemesh")
		}
	}
	if user == "" || cnonce == "" {
		return nil, false, errors.New("SCRAM client-first message lacks a user name or nonce")
	}
	user, err := saslname(user)
	if err != nil {
		return nil, false, err
	}
	if authz != "" {
		if a, err := saslname(strings.TrimPrefix(authz, "a=")); err != nil || !strings.HasPrefix(authz, "a=") || a != user {
			return nil, false, errors.New("SCRAM authorization id differs from the user name; pipemesh does not support impersonation")
		}
	}
	s.user = user
	if c, ok := s.lookup(user); ok {
		s.known = true
		s.cred = c.SHA256
		if s.sha512 {
			s.cred = c.SHA512
		}
	} else {
		// Carry on with a random salt so that an unknown user fails at
		// the same step, and in the same way, as a wrong password.
		salt := make([]byte, 16)
		rand.Read(salt)
		s.cred = policy.ScramCredential{Salt: salt, Iterations: policy.ScramIterations}
	}
	s.cnonce = cnonce
	if s.serverNonce != nil {
		s.nonce = cnonce + s.serverNonce()
	} else {
		nb := make([]byte, 24)
		rand.Read(nb)
		s.nonce = cnonce + base64.RawURLEncoding.EncodeToString(nb)
	}
	s.srvFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(s.cred.Salt) + ",i=" + strconv.Itoa(s.cred.Iterations)
	return []byte(s.srvFirst), false, nil
}

func (s *scramServer) final(msg string) ([]byte, bool, error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, false, errors.New("SCRAM client-final message has no proof")
	}
	withoutProof, proofB64 := msg[:i], msg[i+3:]
	var cbind, nonce string
	for _, attr := range strings.Split(withoutProof, ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "c":
			cbind = v
		case "r":
			nonce = v
		}
	}
	if cbind != base64.StdEncoding.EncodeToString([]byte(s.gs2)) {
		return nil, false, errors.New("SCRAM channel binding does not match the client-first message")
	}
	// librdkafka sends its own nonce again in front of the combined one;
	// Kafka's broker accepts any client nonce that ends with the combined
	// nonce, and so does pipemesh, for exactly that form.
	if nonce != s.nonce && nonce != s.cnonce+s.nonce {
		return nil, false, errors.New("SCRAM nonce does not match the server-first message")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != s.h().Size() {
		return nil, false, errScramFailed
	}
	authMsg := []byte(s.firstBare + "," + s.srvFirst + "," + withoutProof)
	if !s.known {
		return nil, false, errScramFailed
	}
	sig := policy.HMAC(s.h, s.cred.StoredKey, authMsg)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ sig[i]
	}
	h := s.h()
	h.Write(clientKey)
	if subtle.ConstantTimeCompare(h.Sum(nil), s.cred.StoredKey) != 1 {
		return nil, false, errScramFailed
	}
	v := policy.HMAC(s.h, s.cred.ServerKey, authMsg)
	return []byte("v=" + base64.StdEncoding.EncodeToString(v)), true, nil
}

// saslname decodes RFC 5802's escaping of ',' and '=' in user names.
func saslname(s string) (string, error) {
	if !strings.Contains(s, "=") {
		return s, nil
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", errors.New("SCRAM user name has a bad '=' escape")
		}
		i += 2
	}
	return b.String(), nil
}
