package tlsfiles

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPrincipal(t *testing.T) {
	spiffe, err := url.Parse("spiffe://example.org/ns/shop/sa/billing")
	require.NoError(t, err)
	web, err := url.Parse("https://example.org/x")
	require.NoError(t, err)
	both := &x509.Certificate{Subject: pkix.Name{CommonName: "alice", Organization: []string{"Shop"}}, URIs: []*url.URL{web, spiffe}}
	cnOnly := &x509.Certificate{Subject: pkix.Name{CommonName: "alice"}}
	none := &x509.Certificate{}
	tests := []struct {
		cert *x509.Certificate
		from PrincipalFrom
		want string // "" for an error
	}{
		{both, "", "User:spiffe://example.org/ns/shop/sa/billing"},
		{both, FromSPIFFE, "User:spiffe://example.org/ns/shop/sa/billing"},
		{both, FromCN, "User:alice"},
		{both, FromDN, "User:CN=alice,O=Shop"},
		{cnOnly, FromSPIFFEOrCN, "User:alice"},
		{cnOnly, FromSPIFFE, ""},
		{none, FromSPIFFEOrCN, ""},
		{none, FromCN, ""},
		{both, "upn", ""},
	}
	for _, tt := range tests {
		got, err := Principal(tt.cert, tt.from)
		if tt.want == "" {
			assert.Error(t, err, "%v %s", tt.cert.Subject, tt.from)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tt.want, got)
	}
}

func TestNewRefusesHalfAPair(t *testing.T) {
	_, err := New(Files{CertFile: "x.crt"}, nil)
	assert.ErrorContains(t, err, "both a certificate file and a key file")
	_, err = New(Files{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}, nil)
	assert.ErrorContains(t, err, "/nonexistent.crt")
	_, err = New(Files{ClientAuth: "maybe"}, nil)
	assert.ErrorContains(t, err, "want none, request or require")
}
