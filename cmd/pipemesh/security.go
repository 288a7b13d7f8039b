package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pipemesh/pipemesh/internal/config"
	"github.com/pipemesh/pipemesh/internal/tlsfiles"
)

// securityFlags are serve's TLS and upstream credential flags.
type securityFlags struct {
	tlsCert, tlsKey, tlsClientCA, tlsClientAuth, principalFrom string
	upTLS                                                      bool
	upCA, upCert, upKey, upServerName                          string
	upMech, upUser, upPassEnv                                  string
}

func (f *securityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tlsCert, "kafka-tls-cert", "", "PEM certificate `file` for TLS on every client listener (reloaded when it changes)")
	fs.StringVar(&f.tlsKey, "kafka-tls-key", "", "PEM private key `file` of --kafka-tls-cert")
	fs.StringVar(&f.tlsClientCA, "kafka-tls-client-ca", "", "PEM `file` of CAs that sign client certificates; turns on mTLS")
	fs.StringVar(&f.tlsClientAuth, "kafka-tls-client-auth", "", "`mode` none, request or require (default: require with --kafka-tls-client-ca, else none)")
	fs.StringVar(&f.principalFrom, "kafka-principal-from", "", "how a client certificate names its principal: `rule` spiffe_or_cn (default), spiffe, cn or dn")
	fs.BoolVar(&f.upTLS, "upstream-tls", false, "connect to the brokers over TLS")
	fs.StringVar(&f.upCA, "upstream-tls-ca", "", "PEM `file` of CAs that sign the brokers' certificates (default: system roots); implies --upstream-tls")
	fs.StringVar(&f.upCert, "upstream-tls-cert", "", "PEM certificate `file` the proxy presents to brokers (mTLS); implies --upstream-tls")
	fs.StringVar(&f.upKey, "upstream-tls-key", "", "PEM private key `file` of --upstream-tls-cert")
	fs.StringVar(&f.upServerName, "upstream-tls-server-name", "", "`name` to verify the brokers' certificates for (default: the host dialed)")
	fs.StringVar(&f.upMech, "upstream-sasl-mechanism", "", "SASL `mechanism` the proxy authenticates to brokers with: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	fs.StringVar(&f.upUser, "upstream-sasl-username", "", "the proxy's own SASL `user` at the brokers")
	fs.StringVar(&f.upPassEnv, "upstream-sasl-password-env", "", "environment `variable` holding that user's password")
}

// securitySettings are the resolved TLS and upstream credential settings.
type securitySettings struct {
	clientTLS     *tlsfiles.Files
	principalFrom tlsfiles.PrincipalFrom
	upstreamTLS   *tlsfiles.Files
	upstreamSASL  sasl.Mechanism
}

// resolveSecurity merges the security flags over the config file's keys.
func (f *securityFlags) resolve(set map[string]bool, k config.Kafka, getenv func(string) (string, bool)) (securitySettings, error) {
	var s securitySettings
	pick := func(name, flagVal, fileVal string) string {
		if set[name] || fileVal == "" {
			return flagVal
		}
		return fileVal
	}
	cert := pick("kafka-tls-cert", f.tlsCert, k.TLS.CertFile)
	key := pick("kafka-tls-key", f.tlsKey, k.TLS.KeyFile)
	ca := pick("kafka-tls-client-ca", f.tlsClientCA, k.TLS.ClientCAFile)
	auth := pick("kafka-tls-client-auth", f.tlsClientAuth, k.TLS.ClientAuth)
	s.principalFrom = tlsfiles.PrincipalFrom(pick("kafka-principal-from", f.principalFrom, k.TLS.PrincipalFrom))
	switch {
	case cert != "" || key != "":
		if cert == "" || key == "" {
			return s, errors.New("TLS on the client listeners needs both --kafka-tls-cert and --kafka-tls-key")
		}
		s.clientTLS = &tlsfiles.Files{CertFile: cert, KeyFile: key, CAFile: ca, ClientAuth: tlsfiles.ClientAuth(auth)}
	case ca != "" || auth != "":
		return s, errors.New("--kafka-tls-client-ca and --kafka-tls-client-auth need --kafka-tls-cert and --kafka-tls-key")
	}
	switch s.principalFrom {
	case "", tlsfiles.FromSPIFFEOrCN, tlsfiles.FromSPIFFE, tlsfiles.FromCN, tlsfiles.FromDN:
	default:
		return s, fmt.Errorf("--kafka-principal-from %q: want spiffe_or_cn, spiffe, cn or dn", s.principalFrom)
	}
	u := k.UpstreamTLS
	upCA := pick("upstream-tls-ca", f.upCA, u.CAFile)
	upCert := pick("upstream-tls-cert", f.upCert, u.CertFile)
	upKey := pick("upstream-tls-key", f.upKey, u.KeyFile)
	// The file's keys turn TLS on, an explicit --upstream-tls=false turns
	// it off (flags win), and a CA or certificate given as a flag implies it.
	upTLS := u.Enabled || u.CAFile != "" || u.CertFile != ""
	if set["upstream-tls"] {
		upTLS = f.upTLS
	}
	if f.upCA != "" || f.upCert != "" {
		upTLS = true
	}
	if upTLS {
		s.upstreamTLS = &tlsfiles.Files{CertFile: upCert, KeyFile: upKey, CAFile: upCA,
			ServerName: pick("upstream-tls-server-name", f.upServerName, u.ServerName)}
	}
	mech := strings.ToUpper(pick("upstream-sasl-mechanism", f.upMech, k.UpstreamSASL.Mechanism))
	user := pick("upstream-sasl-username", f.upUser, k.UpstreamSASL.Username)
	passEnv := pick("upstream-sasl-password-env", f.upPassEnv, k.UpstreamSASL.PasswordEnv)
	if mech == "" && user == "" && passEnv == "" {
		return s, nil
	}
	if mech == "" || user == "" || passEnv == "" {
		return s, errors.New("upstream SASL needs --upstream-sasl-mechanism, --upstream-sasl-username and --upstream-sasl-password-env together")
	}
	pass, ok := getenv(passEnv)
	if !ok || pass == "" {
		return s, fmt.Errorf("--upstream-sasl-password-env %s is not set (or empty); export the proxy's broker password there", passEnv)
	}
	switch mech {
	case "PLAIN":
		s.upstreamSASL = plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "SCRAM-SHA-256":
		s.upstreamSASL = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		s.upstreamSASL = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	default:
		return s, fmt.Errorf("--upstream-sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", mech)
	}
	return s, nil
}

// setupSecurity loads the TLS files into s.proxy and keeps them reloading
// until ctx ends.
func setupSecurity(ctx context.Context, s *settings, log *slog.Logger) error {
	if f := s.security.clientTLS; f != nil {
		rl, err := tlsfiles.New(*f, log)
		if err != nil {
			return fmt.Errorf("client listener TLS: %w", err)
		}
		s.proxy.ClientTLS = rl.Server()
		s.proxy.PrincipalFrom = s.security.principalFrom
		go rl.Run(ctx, 10*time.Second)
	}
	if f := s.security.upstreamTLS; f != nil {
		rl, err := tlsfiles.New(*f, log)
		if err != nil {
			return fmt.Errorf("upstream TLS: %w", err)
		}
		s.proxy.UpstreamTLS = rl.Client()
		go rl.Run(ctx, 10*time.Second)
	}
	s.proxy.UpstreamSASL = s.security.upstreamSASL
	return nil
}
