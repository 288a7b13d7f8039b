package kafkaproxy

import (
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pipemesh/pipemesh/policy"
)

// TestScramRFC7677 replays the SCRAM-SHA-256 example exchange of RFC 7677
// section 3 against the server.
func TestScramRFC7677(t *testing.T) {
	salt, err := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	require.NoError(t, err)
	cred, err := policy.DeriveScram(sha256.New, "pencil", salt, 4096)
	require.NoError(t, err)
	lookup := func(user string) (*policy.Credentials, bool) {
		return &policy.Credentials{User: user, SHA256: cred}, user == "user"
	}
	s := newScramServer(mechScram256, lookup)
	s.serverNonce = func() string { return "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0" }

	first, done, err := s.next([]byte("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"))
	require.NoError(t, err)
	assert.False(t, done)
	assert.Equal(t, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", string(first))

	final, done, err := s.next([]byte("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	require.NoError(t, err)
	assert.True(t, done)
	assert.Equal(t, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", string(final))
}

func TestScramRejects(t *testing.T) {
	salt := []byte("0123456789abcdef")
	cred, err := policy.DeriveScram(sha256.New, "pencil", salt, 4096)
	require.NoError(t, err)
	lookup := func(user string) (*policy.Credentials, bool) {
		return &policy.Credentials{User: user, SHA256: cred}, user == "user"
	}
	tests := []struct {
		name         string
		first, final string
	}{
		{"channel binding", "p=tls-unique,,n=user,r=abc", ""},
		{"no nonce", "n,,n=user", ""},
		{"impersonation", "n,a=admin,n=user,r=abc", ""},
		{"bad escape", "n,,n=us=er,r=abc", ""},
		{"wrong proof", "n,,n=user,r=abc", "c=biws,r=abcXYZ,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="},
		{"wrong nonce", "n,,n=user,r=abc", "c=biws,r=abcXYZW,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="},
		{"wrong binding", "n,,n=user,r=abc", "c=eSws,r=abcXYZ,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="},
		{"unknown user", "n,,n=mallory,r=abc", "c=biws,r=abcXYZ,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="},
		{"garbage proof", "n,,n=user,r=abc", "c=biws,r=abcXYZ,p=!!!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScramServer(mechScram256, lookup)
			s.serverNonce = func() string { return "XYZ" }
			_, _, err := s.next([]byte(tt.first))
			if tt.final == "" {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			_, done, err := s.next([]byte(tt.final))
			require.Error(t, err)
			assert.False(t, done)
		})
	}
}

func TestSaslname(t *testing.T) {
	got, err := saslname("a=2Cb=3Dc")
	require.NoError(t, err)
	assert.Equal(t, "a,b=c", got)
	_, err = saslname("a=2")
	assert.Error(t, err)
}

func TestFailureLimiter(t *testing.T) {
	l := newFailureLimiter()
	base := timeAt(0)
	for range authFailLimit {
		assert.False(t, l.blocked("10.0.0.1", base))
		l.fail("10.0.0.1", base)
	}
	assert.True(t, l.blocked("10.0.0.1", base))
	assert.False(t, l.blocked("10.0.0.2", base), "other sources are not affected")
	assert.False(t, l.blocked("10.0.0.1", base.Add(authFailWindow+1)), "the window passes")
}

func timeAt(sec int64) time.Time { return time.Unix(1_800_000_000+sec, 0) }

// FuzzScramServer feeds arbitrary client messages to the SCRAM server: it
// must answer or refuse, never panic, and never succeed without the proof.
func FuzzScramServer(f *testing.F) {
	f.Add([]byte("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"), []byte("c=biws,r=rOprNGfwEbeRWgbNEkqOXYZ,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	f.Add([]byte("y,a=user,n=user,r=x"), []byte("c=eSxhPXVzZXIs,r=xXYZ,p="))
	f.Add([]byte("n,,n==2C=3D,r=,"), []byte(",p=,p=,"))
	cred, err := policy.DeriveScram(sha256.New, "pencil", []byte("salt"), 4096)
	require.NoError(f, err)
	lookup := func(user string) (*policy.Credentials, bool) {
		return &policy.Credentials{User: user, SHA256: cred}, user == "user"
	}
	f.Fuzz(func(t *testing.T, first, final []byte) {
		s := newScramServer(mechScram256, lookup)
		s.serverNonce = func() string { return "XYZ" }
		if _, _, err := s.next(first); err != nil {
			return
		}
		if _, done, err := s.next(final); err == nil || done {
			t.Fatalf("a made-up proof was accepted: %q / %q", first, final)
		}
	})
}
