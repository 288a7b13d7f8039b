package flightproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// testCA issues certificates for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMutualTLSIdentity serves clients over TLS, requires client
// certificates, and checks the certificate's common name is the principal
// the authorizer sees, and that the advertised location says grpc+tls.
func TestMutualTLSIdentity(t *testing.T) {
	up := startUpstream(t, "self", 0)
	ca := newTestCA(t)
	var mu sync.Mutex
	var seen []string
	authz := AuthorizerFunc(func(principal string, op Operation, dataset string) Decision {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, principal)
		return Decision{Allow: principal == "User:etl-job", Rule: "only etl-job"}
	})
	p, _ := startProxy(t, Config{
		Upstreams: []Upstream{{Target: up.addr}},
		TLS: &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "proxy", x509.ExtKeyUsageServerAuth)},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool, MinVersion: tls.VersionTLS12},
		Identity:   &Identity{},
		Authorizer: authz,
	})
	assert.True(t, strings.HasPrefix(p.Location(), "grpc+tls://"))
	dialAs := func(cn string) flight.Client {
		creds := credentials.NewTLS(&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{ca.issue(t, cn, x509.ExtKeyUsageClientAuth)}, MinVersion: tls.VersionTLS12})
		c, err := flight.NewClientWithMiddleware(p.Addr(), nil, nil, grpc.WithTransportCredentials(creds))
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	etl := dialAs("etl-job")
	putDataset(t, etl, []string{"t"}, 2, 10)
	fi, err := etl.GetFlightInfo(context.Background(), pathDesc("t"))
	require.NoError(t, err)
	assert.Len(t, readAll(t, etl, fi, 10), 2)

	_, err = dialAs("intruder").GetFlightInfo(context.Background(), pathDesc("t"))
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, seen, "User:intruder")
}

// TestMutualTLSHandshakeUnderPolicy: a client identified by its
// certificate that calls Handshake anyway (as some Flight clients do on
// connect) gets a bearer token back and sends it on its next calls; under a
// policy with password principals, the certificate's principal is not one
// of them, and the call must still go through as that principal.
func TestMutualTLSHandshakeUnderPolicy(t *testing.T) {
	ca := newTestCA(t)
	text := `principals:
  - {name: alice, password: alice-secret}
acls:
  - {principal: "User:etl-job", operation: ALL, resource: flight_dataset, name: "*", permission: allow}
`
	pp := startPolicyProxy(t, text, Config{
		TLS: &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "proxy", x509.ExtKeyUsageServerAuth)},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool, MinVersion: tls.VersionTLS12},
		Identity: &Identity{},
	})
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{ca.issue(t, "etl-job", x509.ExtKeyUsageClientAuth)}, MinVersion: tls.VersionTLS12})
	c, err := flight.NewClientWithMiddleware(pp.proxy.Addr(), nil, nil, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, putDatasetCtx(ctx, c, []string{"t"}, 1, 10), "the certificate alone")

	hs, err := c.Handshake(ctx)
	require.NoError(t, err)
	require.NoError(t, hs.Send(&flight.HandshakeRequest{}))
	require.NoError(t, hs.CloseSend())
	hdr, err := hs.Header()
	require.NoError(t, err)
	tok := hdr.Get("authorization")
	require.Len(t, tok, 1, "the proxy answers the handshake with a token")
	_, _ = hs.Recv()

	_, err = c.GetFlightInfo(metadata.AppendToOutgoingContext(ctx, "authorization", tok[0]), pathDesc("t"))
	require.NoError(t, err, "the certificate's principal with the token it was given")
}
