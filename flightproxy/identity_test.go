package flightproxy

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestIdentityAndAuthorization logs in with basic credentials for a bearer
// token (arrow-go's AuthenticateBasicToken), then checks a policy like the
// policy package's: alice may read and write everything, bob may only read
// and describe datasets under "public". Denials name the rule.
func TestIdentityAndAuthorization(t *testing.T) {
	up := startUpstream(t, "self", 0)
	users := map[string]string{"alice": "a-secret", "bob": "b-secret"}
	authz := AuthorizerFunc(func(principal string, op Operation, dataset string) Decision {
		switch {
		case principal == "User:alice":
			return Decision{Allow: true, Rule: "allow User:alice * flight_dataset *"}
		case principal == "User:bob" && op != OpWrite && strings.HasPrefix(dataset, "public/"):
			return Decision{Allow: true, Rule: "allow User:bob READ,DESCRIBE flight_dataset public/ (prefixed)"}
		}
		return Decision{Rule: "no rule allows it (default deny)"}
	})
	rec := &recorder{}
	p, reg := startProxy(t, Config{
		Upstreams:  []Upstream{{Target: up.addr}},
		Identity:   &Identity{Basic: func(u, pw string) bool { return users[u] == pw && pw != "" }},
		Authorizer: authz,
		Observer:   rec,
	})
	c := dial(t, p.Addr())
	bg := context.Background()

	_, err := c.GetFlightInfo(bg, pathDesc("public", "a"))
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "no credentials")
	_, err = c.AuthenticateBasicToken(bg, "bob", "wrong")
	assert.Equal(t, codes.Unauthenticated, status.Code(err))

	alice, err := c.AuthenticateBasicToken(bg, "alice", "a-secret")
	require.NoError(t, err)
	bob, err := c.AuthenticateBasicToken(bg, "bob", "b-secret")
	require.NoError(t, err)
	md, _ := metadata.FromOutgoingContext(bob)
	require.True(t, strings.HasPrefix(md.Get("authorization")[0], "Bearer pm1."), "a token the proxy issued")

	for _, path := range [][]string{{"public", "a"}, {"private", "b"}} {
		require.NoError(t, putDatasetCtx(alice, c, path, 2, 100))
	}

	// bob reads public data, and is denied the rest with the rule named.
	fi, err := c.GetFlightInfo(bob, pathDesc("public", "a"))
	require.NoError(t, err)
	s, err := c.DoGet(bob, fi.Endpoint[0].Ticket)
	require.NoError(t, err)
	for err == nil {
		_, err = s.Recv()
	}
	require.ErrorIs(t, err, io.EOF)
	assert.Equal(t, float64(200), counterFor(t, reg, "pipemesh_flight_rows_total", "User:bob", "public/a", "read"))

	_, err = c.GetFlightInfo(bob, pathDesc("private", "b"))
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Contains(t, err.Error(), "default deny")
	assert.Contains(t, err.Error(), `User:bob may not READ flight_dataset "private/b"`)

	// A ticket alice got for private data does not help bob.
	fi, err = c.GetFlightInfo(alice, pathDesc("private", "b"))
	require.NoError(t, err)
	s, err = c.DoGet(bob, fi.Endpoint[0].Ticket)
	require.NoError(t, err)
	_, err = s.Recv()
	assert.Equal(t, codes.PermissionDenied, status.Code(err))

	err = putDatasetCtx(bob, c, []string{"public", "a"}, 1, 10)
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "bob may not write")

	// ListFlights shows bob only what he may describe.
	ls, err := c.ListFlights(bob, &flight.Criteria{})
	require.NoError(t, err)
	var names []string
	for {
		fi, err := ls.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		names = append(names, joinPath(fi.FlightDescriptor.Path))
	}
	assert.Equal(t, []string{"public/a"}, names)

	// Observations carry the authenticated principals.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	principals := map[string]bool{}
	for _, o := range rec.streams {
		principals[o.Principal] = true
	}
	assert.Equal(t, map[string]bool{"User:alice": true, "User:bob": true}, principals)
}

// payloadAuth is arrow-go's older handshake from the client side: a
// BasicAuth payload out, a token payload back, then auth-token-bin.
type payloadAuth struct {
	user, pass string
	token      string
}

func (a *payloadAuth) Authenticate(_ context.Context, c flight.AuthConn) error {
	b, err := proto.Marshal(&flight.BasicAuth{Username: a.user, Password: a.pass})
	if err != nil {
		return err
	}
	if err := c.Send(b); err != nil {
		return err
	}
	tok, err := c.Read()
	if err != nil {
		return err
	}
	a.token = string(tok)
	return nil
}

func (a *payloadAuth) GetToken(context.Context) (string, error) { return a.token, nil }

func TestHandshakePayloadAuth(t *testing.T) {
	up := startUpstream(t, "self", 0)
	rec := &recorder{}
	p, _ := startProxy(t, Config{
		Upstreams: []Upstream{{Target: up.addr}},
		Identity:  &Identity{Basic: func(u, pw string) bool { return u == "carol" && pw == "c-secret" }},
		Observer:  rec,
	})
	for _, tc := range []struct {
		pass string
		ok   bool
	}{{"wrong", false}, {"c-secret", true}} {
		auth := &payloadAuth{user: "carol", pass: tc.pass}
		c, err := flight.NewClientWithMiddleware(p.Addr(), auth, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		err = c.Authenticate(context.Background())
		if !tc.ok {
			assert.Equal(t, codes.Unauthenticated, status.Code(err))
			c.Close()
			continue
		}
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(auth.token, "pm1."))
		putDataset(t, c, []string{"c"}, 1, 10)
		c.Close()
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.NotEmpty(t, rec.streams)
	assert.Equal(t, "User:carol", rec.streams[0].Principal)
}

func TestStaticBearerTokens(t *testing.T) {
	up := startUpstream(t, "self", 0)
	var mu sync.Mutex
	seen := map[string]bool{}
	p, _ := startProxy(t, Config{
		Upstreams: []Upstream{{Target: up.addr}},
		Identity:  &Identity{Tokens: map[string]string{"svc-token-123": "etl"}},
		Authorizer: AuthorizerFunc(func(principal string, _ Operation, _ string) Decision {
			mu.Lock()
			defer mu.Unlock()
			seen[principal] = true
			return Decision{Allow: true, Rule: "test"}
		}),
	})
	c := dial(t, p.Addr())
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer svc-token-123")
	require.NoError(t, putDatasetCtx(ctx, c, []string{"s"}, 1, 10))
	bad := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer nope")
	_, err := c.GetFlightInfo(bad, pathDesc("s"))
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string]bool{"User:etl": true}, seen)
}
