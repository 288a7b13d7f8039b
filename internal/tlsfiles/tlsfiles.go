// Package tlsfiles serves TLS configurations from certificate and key files
// that are reloaded when they change, so that rotated certificates (cert-
// manager, Vault, SPIFFE helpers) are picked up without a restart. It also
// maps a verified client certificate to a Kafka principal.
package tlsfiles

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ClientAuth says whether a server asks for client certificates.
type ClientAuth string

// Client authentication modes.
const (
	// NoClientCert does not ask for a certificate.
	NoClientCert ClientAuth = "none"
	// RequestClientCert verifies a certificate when the client sends one;
	// clients without one connect anonymously (and SASL may follow).
	RequestClientCert ClientAuth = "request"
	// RequireClientCert refuses clients without a valid certificate (mTLS).
	RequireClientCert ClientAuth = "require"
)

// Files names the PEM files of one side of TLS.
type Files struct {
	// CertFile and KeyFile are this side's certificate chain and key.
	CertFile, KeyFile string
	// CAFile holds the CAs that verify the peer: client certificates on a
	// server, the broker's certificate on a client (empty: system roots).
	CAFile string
	// ClientAuth applies to servers only. Default none, or require when
	// CAFile is set.
	ClientAuth ClientAuth
	// ServerName is the name a client checks the server's certificate
	// for; empty takes the host dialed.
	ServerName string
	// InsecureSkipVerify turns verification of the server off (clients
	// only, tests and first steps only).
	InsecureSkipVerify bool
}

// Reloader holds the certificates of Files and reloads them when the files
// change. Its Server and Client configurations read the current ones on
// every handshake.
type Reloader struct {
	files Files
	log   *slog.Logger
	cur   atomic.Pointer[material]
	mu    sync.Mutex
	hash  [32]byte
}

type material struct {
	cert *tls.Certificate
	pool *x509.CertPool
}

// New loads files; an error names the file at fault.
func New(files Files, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.Default()
	}
	switch files.ClientAuth {
	case "":
		files.ClientAuth = NoClientCert
		if files.CAFile != "" {
			files.ClientAuth = RequireClientCert
		}
	case NoClientCert, RequestClientCert, RequireClientCert:
	default:
		return nil, fmt.Errorf("tls: client_auth %q: want none, request or require", files.ClientAuth)
	}
	if (files.CertFile == "") != (files.KeyFile == "") {
		return nil, errors.New("tls: give both a certificate file and a key file, or neither")
	}
	r := &Reloader{files: files, log: log}
	if _, err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. It reports whether anything changed; on an
// error the certificates in use stay.
func (r *Reloader) Reload() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := sha256.New()
	var raw [3][]byte
	for i, f := range []string{r.files.CertFile, r.files.KeyFile, r.files.CAFile} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return false, fmt.Errorf("tls: %w", err)
		}
		raw[i] = b
		h.Write(b)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if r.cur.Load() != nil && bytes.Equal(sum[:], r.hash[:]) {
		return false, nil
	}
	m := &material{}
	if raw[0] != nil {
		c, err := tls.X509KeyPair(raw[0], raw[1])
		if err != nil {
			return false, fmt.Errorf("tls: certificate %s with key %s: %w", r.files.CertFile, r.files.KeyFile, err)
		}
		m.cert = &c
	}
	if raw[2] != nil {
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(raw[2]) {
			return false, fmt.Errorf("tls: %s holds no PEM certificate", r.files.CAFile)
		}
	}
	r.cur.Store(m)
	r.hash = sum
	return true, nil
}

// Run reloads every interval until ctx ends, logging what changed or failed.
func (r *Reloader) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			changed, err := r.Reload()
			switch {
			case err != nil:
				r.log.Error("TLS files changed but cannot be loaded; the previous certificates stay in use", "cert", r.files.CertFile, "err", err)
			case changed:
				r.log.Info("TLS certificates reloaded", "cert", r.files.CertFile, "ca", r.files.CAFile)
			}
		}
	}
}

// Server returns a server configuration that uses the current certificate
// and client CAs at every handshake.
func (r *Reloader) Server() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := r.cur.Load()
			c := &tls.Config{MinVersion: tls.VersionTLS12, ClientCAs: m.pool}
			if m.cert != nil {
				c.Certificates = []tls.Certificate{*m.cert}
			}
			switch r.files.ClientAuth {
			case RequireClientCert:
				c.ClientAuth = tls.RequireAndVerifyClientCert
			case RequestClientCert:
				c.ClientAuth = tls.VerifyClientCertIfGiven
			}
			return c, nil
		},
	}
}

// Client returns a client configuration with the current certificate (for
// mTLS to the broker) and CAs.
func (r *Reloader) Client() *tls.Config {
	m := r.cur.Load()
	c := &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: m.pool, ServerName: r.files.ServerName,
		InsecureSkipVerify: r.files.InsecureSkipVerify, //nolint:gosec // opt-in, documented as for tests
	}
	if m.cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.cur.Load().cert, nil
		}
	}
	return c
}

// PrincipalFrom says how a client certificate names its principal.
type PrincipalFrom string

// Principal mapping rules.
const (
	// FromSPIFFEOrCN takes the certificate's SPIFFE ID (a spiffe:// URI
	// SAN) when it has one, else its subject common name.
	FromSPIFFEOrCN PrincipalFrom = "spiffe_or_cn"
	// FromSPIFFE takes only the SPIFFE ID.
	FromSPIFFE PrincipalFrom = "spiffe"
	// FromCN takes only the subject common name.
	FromCN PrincipalFrom = "cn"
	// FromDN takes the whole subject, as Kafka's default SSL principal
	// builder does (CN=alice,OU=...).
	FromDN PrincipalFrom = "dn"
)

// Principal maps a verified client certificate to a Kafka principal
// ("User:spiffe://example.org/ns/payments/sa/billing", "User:alice").
func Principal(cert *x509.Certificate, from PrincipalFrom) (string, error) {
	spiffe := ""
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			spiffe = u.String()
			break
		}
	}
	switch from {
	case "", FromSPIFFEOrCN:
		if spiffe != "" {
			return "User:" + spiffe, nil
		}
		if cert.Subject.CommonName != "" {
			return "User:" + cert.Subject.CommonName, nil
		}
		return "", errors.New("the client certificate has neither a SPIFFE ID nor a common name")
	case FromSPIFFE:
		if spiffe == "" {
			return "", errors.New("the client certificate has no SPIFFE ID (spiffe:// URI SAN)")
		}
		return "User:" + spiffe, nil
	case FromCN:
		if cert.Subject.CommonName == "" {
			return "", errors.New("the client certificate has no common name")
		}
		return "User:" + cert.Subject.CommonName, nil
	case FromDN:
		return "User:" + cert.Subject.String(), nil
	}
	return "", fmt.Errorf("principal mapping %q: want %s", from, strings.Join([]string{string(FromSPIFFEOrCN), string(FromSPIFFE), string(FromCN), string(FromDN)}, ", "))
}
