package kafkaproxy_test

// TLS on client listeners with client certificates as identities (mTLS),
// certificate reload, and the proxy's own credentials towards brokers.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pipemesh/pipemesh/internal/devbroker"
	"github.com/pipemesh/pipemesh/internal/tlsfiles"
	"github.com/pipemesh/pipemesh/kafkaproxy"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pipemesh test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for a leaf: a server for 127.0.0.1
// when server is set, else a client with cn and optional SPIFFE ID.
func (ca *testCA) issue(t *testing.T, serial int64, server bool, cn, spiffe string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"pipemesh"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if spiffe != "" {
		u, err := url.Parse(spiffe)
		require.NoError(t, err)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func (ca *testCA) clientTLS(t *testing.T, cn, spiffe string) *tls.Config {
	certPEM, keyPEM := ca.issue(t, time.Now().UnixNano(), false, cn, spiffe)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	return &tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// writeServerFiles writes a server certificate, its key and the CA into dir
// and returns the tlsfiles.Files naming them.
func writeServerFiles(t *testing.T, dir string, ca *testCA, serial int64) tlsfiles.Files {
	certPEM, keyPEM := ca.issue(t, serial, true, "proxy", "")
	f := tlsfiles.Files{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), CAFile: filepath.Join(dir, "ca.crt")}
	require.NoError(t, os.WriteFile(f.CertFile, certPEM, 0o600))
	require.NoError(t, os.WriteFile(f.KeyFile, keyPEM, 0o600))
	require.NoError(t, os.WriteFile(f.CAFile, ca.pem, 0o600))
	return f
}

const spiffeWriter = "spiffe://pipemesh.test/ns/shop/sa/orders-writer"

func TestAuthzMTLS(t *testing.T) {
	ca := newTestCA(t)
	files := writeServerFiles(t, t.TempDir(), ca, 100)
	rl, err := tlsfiles.New(files, nil) // CA given: client certificates required
	require.NoError(t, err)
	e := startAuthzEnv(t, authzPolicy+
		"  - {principal: \""+"User:"+spiffeWriter+"\", operation: WRITE, resource: topic, name: orders, permission: allow}\n",
		withProxyConfig(func(c *kafkaproxy.Config) { c.ClientTLS = rl.Server() }))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The SPIFFE ID names the principal: it may write orders, with no SASL.
	writer := e2eClient(t, e.env, kgo.DialTLSConfig(ca.clientTLS(t, "ignored-cn", spiffeWriter)), kgo.RequestRetries(2))
	require.NoError(t, writer.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("over mTLS")}).FirstErr())

	// A certificate with CN bob is User:bob: he may read orders but not write.
	bob := e2eClient(t, e.env, kgo.DialTLSConfig(ca.clientTLS(t, "bob", "")), kgo.RequestRetries(2),
		kgo.DisableIdempotentWrite(), kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.ErrorIs(t, bob.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr(), kerr.TopicAuthorizationFailed)
	fs := bob.PollFetches(ctx)
	require.NoError(t, fs.Err0())
	var got []string
	fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	assert.Equal(t, []string{"over mTLS"}, got)

	// Without a client certificate the handshake fails.
	anon := e2eClient(t, e.env, kgo.DialTLSConfig(&tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}), kgo.RequestRetries(0))
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	require.Error(t, anon.Ping(pctx))
	require.Eventually(t, func() bool { return closedTotal(t, e.registry, "tls_failed") > 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestTLSCertificateReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	files := writeServerFiles(t, dir, ca, 100)
	files.ClientAuth = tlsfiles.NoClientCert
	rl, err := tlsfiles.New(files, nil)
	require.NoError(t, err)
	e := startEnv(t, withProxyConfig(func(c *kafkaproxy.Config) { c.ClientTLS = rl.Server() }))
	serial := func() int64 {
		c, err := tls.Dial("tcp", e.addr, &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS12})
		require.NoError(t, err)
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	assert.Equal(t, int64(100), serial())
	writeServerFiles(t, dir, ca, 200) // rotated on disk
	changed, err := rl.Reload()
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, int64(200), serial(), "new connections get the new certificate")

	// A broken rotation is refused and the certificate in use stays.
	require.NoError(t, os.WriteFile(files.KeyFile, []byte("not a key"), 0o600))
	_, err = rl.Reload()
	require.Error(t, err)
	assert.Equal(t, int64(200), serial())
}

// TestUpstreamCredentials puts the proxy in front of brokers that require
// SASL/SCRAM: the proxy authenticates with its own user, clients connect
// with none.
func TestUpstreamCredentials(t *testing.T) {
	e := startEnv(t, withTopic("orders", 1),
		func(c *kafkaproxy.Config, d *devbroker.Config) {
			d.Options = append(d.Options, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "pipemesh", "proxy-secret"))
			c.UpstreamSASL = scram.Auth{User: "pipemesh", Pass: "proxy-secret"}.AsSha512Mechanism()
		})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := e2eClient(t, e, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte("through an authenticated upstream")}).FirstErr())
	fs := cl.PollFetches(ctx)
	require.NoError(t, fs.Err0())
	require.Equal(t, 1, fs.NumRecords())
	assert.Equal(t, "through an authenticated upstream", string(fs.Records()[0].Value))
}

// TestUpstreamTLS connects the proxy to brokers over TLS.
func TestUpstreamTLS(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 7, true, "broker", "")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	p, err := kafkaproxy.New(kafkaproxy.Config{
		Listen: "127.0.0.1:0", BrokerPortBase: -1, Upstreams: cluster.ListenAddrs(), Logger: testLogger(t),
		UpstreamTLS: &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS12},
	})
	require.NoError(t, err)
	require.NoError(t, p.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { ok, _ := p.Ready(); return ok }, 10*time.Second, 10*time.Millisecond)

	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	require.NoError(t, cl.ProduceSync(pctx, &kgo.Record{Topic: "orders", Value: []byte("tls upstream")}).FirstErr())
	fs := cl.PollFetches(pctx)
	require.NoError(t, fs.Err0())
	require.Equal(t, 1, fs.NumRecords())
}
