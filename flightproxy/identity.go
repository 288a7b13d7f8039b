package flightproxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Anonymous is the principal of callers the proxy does not authenticate.
const Anonymous = "User:ANONYMOUS"

// tokenHeader carries tokens in Flight's older handshake protocol.
const tokenHeader = "auth-token-bin"

// DefaultTokenTTL is how long a bearer token issued by the proxy lasts.
const DefaultTokenTTL = time.Hour

// Identity makes the proxy authenticate Flight callers itself. Principals
// are "User:<name>", as on the Kafka side, so one policy covers both.
//
// A client authenticates with basic credentials (an "authorization: Basic"
// header on Handshake, as the Flight clients and the Flight SQL JDBC driver
// send them, or a BasicAuth payload in the Handshake) and receives a bearer
// token in the "authorization" response header (and, for a payload, as the
// response payload), which it sends on every later call as "authorization:
// Bearer" or, in the older protocol, as "auth-token-bin". Static bearer tokens (service accounts) and client
// certificates (mTLS, the certificate's common name) work without a
// Handshake. The proxy consumes these credentials: they are not sent to
// the upstream.
type Identity struct {
	// Basic verifies a user name and password; nil refuses basic auth.
	Basic func(user, password string) bool
	// Tokens maps static bearer tokens to user names.
	Tokens map[string]string
	// TokenTTL is the lifetime of issued tokens. Default DefaultTokenTTL.
	TokenTTL time.Duration
	// AllowAnonymous lets callers without credentials in as User:ANONYMOUS
	// (for the authorizer to decide); otherwise they get Unauthenticated.
	AllowAnonymous bool
	// Anonymous, when set, replaces AllowAnonymous and is asked on every
	// call, so that a policy reload that adds principals turns anonymous
	// access off, as on the Kafka side.
	Anonymous func() bool
	// Known, when set, is asked on every call whether the user of a bearer
	// token issued earlier still exists, so that removing a principal from
	// the policy ends its tokens at once rather than at expiry.
	Known func(user string) bool
}

func (id *Identity) allowAnonymous() bool {
	if id.Anonymous != nil {
		return id.Anonymous()
	}
	return id.AllowAnonymous
}

var errNoCredentials = status.Error(codes.Unauthenticated,
	"pipemesh: this Flight endpoint needs credentials: call Handshake with basic auth (user and password) "+
		"and send the bearer token it returns, or send a bearer token you were given")

// identify returns the caller's principal and the request headers that
// carried credentials the proxy consumed. Handshake may come without
// credentials in its headers (they can be in its payload).
func (p *Proxy) identify(ctx context.Context, md metadata.MD, method string) (string, []string, error) {
	id := p.cfg.Identity
	if id == nil {
		return Anonymous, nil, nil
	}
	consumed := []string{"authorization", tokenHeader}
	// A verified client certificate names the principal when no valid
	// token does. A token that does not verify falls back to it: a
	// certificate's principal is no policy principal, so the token the
	// proxy gave it at Handshake fails Known.
	cert := ""
	if pr, ok := peer.FromContext(ctx); ok {
		if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			cert = "User:" + ti.State.VerifiedChains[0][0].Subject.CommonName
		}
	}
	// Flight's older token handshake (arrow's ClientAuthHandler) sends the
	// token it got back under auth-token-bin.
	for _, v := range md.Get(tokenHeader) {
		if name, ok := p.verifyToken(v); ok {
			return "User:" + name, consumed, nil
		}
		if cert != "" {
			return cert, consumed, nil
		}
		return "", nil, status.Error(codes.Unauthenticated, "pipemesh: the auth-token-bin token is not valid or has expired; call Handshake again")
	}
	for _, v := range md.Get("authorization") {
		scheme, cred, _ := strings.Cut(v, " ")
		switch strings.ToLower(scheme) {
		case "bearer":
			if name, ok := p.verifyToken(strings.TrimSpace(cred)); ok {
				return "User:" + name, consumed, nil
			}
			if cert != "" {
				return cert, consumed, nil
			}
			return "", nil, status.Error(codes.Unauthenticated, "pipemesh: the bearer token is not valid or has expired; call Handshake again")
		case "basic":
			user, err := p.verifyBasic(ctx, strings.TrimSpace(cred))
			if err != nil {
				return "", nil, err
			}
			return "User:" + user, consumed, nil
		}
	}
	if cert != "" {
		return cert, consumed, nil
	}
	if method == "Handshake" || id.allowAnonymous() {
		return Anonymous, consumed, nil
	}
	return "", nil, errNoCredentials
}

// verifyBasic checks the credentials of an "authorization: Basic" header.
func (p *Proxy) verifyBasic(ctx context.Context, cred string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(cred) // arrow-go's client omits padding
	}
	if err != nil {
		return "", status.Error(codes.Unauthenticated, "pipemesh: the basic credentials are not valid base64 of user:password")
	}
	user, pass, _ := strings.Cut(string(raw), ":")
	if err := p.checkBasic(ctx, user, pass); err != nil {
		return "", err
	}
	return user, nil
}

// issueToken returns a bearer token for user: the name and expiry signed
// with the ticket key, so any replica with the same key accepts it.
func (p *Proxy) issueToken(user string) string {
	ttl := p.cfg.Identity.TokenTTL
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	b := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Add(ttl).Unix()))
	b = append(b, user...)
	m := hmac.New(sha256.New, p.tokenKey())
	m.Write(b)
	return "pm1." + base64.RawURLEncoding.EncodeToString(m.Sum(b))
}

func (p *Proxy) tokenKey() []byte { return append([]byte("token:"), p.ticketKey...) }

func (p *Proxy) verifyToken(tok string) (string, bool) {
	for t, name := range p.cfg.Identity.Tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
			return name, true
		}
	}
	rest, ok := strings.CutPrefix(tok, "pm1.")
	if !ok {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) < 8+sha256.Size {
		return "", false
	}
	body, mac := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	m := hmac.New(sha256.New, p.tokenKey())
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), mac) {
		return "", false
	}
	if time.Now().Unix() > int64(binary.BigEndian.Uint64(body)) {
		return "", false
	}
	user := string(body[8:])
	if known := p.cfg.Identity.Known; known != nil && !known(user) {
		return "", false
	}
	return user, true
}

// handshakeLocal answers Handshake at the proxy: a caller identified by
// its headers gets a bearer token in the response header; a caller that
// sends a BasicAuth payload gets the token as the response payload too.
func (p *Proxy) handshakeLocal(c *call) error {
	if user, ok := strings.CutPrefix(c.principal, "User:"); ok && c.principal != Anonymous {
		// Identified by its headers: answer at once, then let the client
		// half-close in its own time.
		if err := c.ss.SendHeader(metadata.Pairs("authorization", "Bearer "+p.issueToken(user))); err != nil {
			return err
		}
		for {
			var req flight.HandshakeRequest
			if err := c.ss.RecvMsg(&req); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	for {
		var req flight.HandshakeRequest
		err := c.ss.RecvMsg(&req)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		var ba flight.BasicAuth
		if len(req.Payload) == 0 || proto.Unmarshal(req.Payload, &ba) != nil || ba.Username == "" {
			continue
		}
		if err := p.checkBasic(c.ss.Context(), ba.Username, ba.Password); err != nil {
			return err
		}
		tok := p.issueToken(ba.Username)
		_ = c.ss.SendHeader(metadata.Pairs("authorization", "Bearer "+tok))
		return c.ss.SendMsg(&flight.HandshakeResponse{ProtocolVersion: req.ProtocolVersion, Payload: []byte(tok)})
	}
	return errNoCredentials
}
