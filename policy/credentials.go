package policy

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"fmt"
	"hash"
)

// ScramIterations is the PBKDF2 iteration count of derived SCRAM
// credentials: 4096, Kafka's default and the RFC 7677 minimum.
const ScramIterations = 4096

// ScramCredential is what a SCRAM server keeps for a user (RFC 5802 §3):
// never the password, only the salt, the iteration count and the two keys.
type ScramCredential struct {
	Salt       []byte
	Iterations int
	StoredKey  []byte
	ServerKey  []byte
}

// Credentials are one principal's secrets, derived at load.
type Credentials struct {
	// User is the bare user name; the principal is "User:" + User.
	User     string
	password []byte
	// SHA256 and SHA512 serve SCRAM-SHA-256 and SCRAM-SHA-512.
	SHA256, SHA512 ScramCredential
}

// Principal returns "User:<name>".
func (c *Credentials) Principal() string { return "User:" + c.User }

// CheckPassword compares a SASL/PLAIN password in constant time.
func (c *Credentials) CheckPassword(pw []byte) bool {
	return subtle.ConstantTimeCompare(c.password, pw) == 1
}

func deriveCredentials(user, password string) (*Credentials, error) {
	c := &Credentials{User: user, password: []byte(password)}
	var err error
	if c.SHA256, err = DeriveScram(sha256.New, password, nil, ScramIterations); err != nil {
		return nil, fmt.Errorf("deriving SCRAM-SHA-256 credentials of %s: %w", user, err)
	}
	if c.SHA512, err = DeriveScram(sha512.New, password, nil, ScramIterations); err != nil {
		return nil, fmt.Errorf("deriving SCRAM-SHA-512 credentials of %s: %w", user, err)
	}
	return c, nil
}

// DeriveScram computes a SCRAM credential from a password (RFC 5802 §3):
// SaltedPassword = PBKDF2(password, salt, i), StoredKey = H(HMAC(SaltedPassword,
// "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key"). A nil salt
// gets 16 random bytes.
func DeriveScram(h func() hash.Hash, password string, salt []byte, iterations int) (ScramCredential, error) {
	if salt == nil {
		salt = make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return ScramCredential{}, err
		}
	}
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return ScramCredential{}, err
	}
	clientKey := HMAC(h, salted, []byte("Client Key"))
	stored := h()
	stored.Write(clientKey)
	return ScramCredential{
		Salt: salt, Iterations: iterations,
		StoredKey: stored.Sum(nil),
		ServerKey: HMAC(h, salted, []byte("Server Key")),
	}, nil
}

// HMAC returns HMAC-H(key, msg).
func HMAC(h func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(h, key)
	m.Write(msg)
	return m.Sum(nil)
}
