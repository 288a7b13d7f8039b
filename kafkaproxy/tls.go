package kafkaproxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/internal/tlsfiles"
)

// reasonTLS closes a client connection whose TLS handshake failed or whose
// certificate names no principal.
const reasonTLS = "tls_failed"

// handshakeTimeout bounds a client's TLS handshake and the proxy's own
// SASL exchange with a broker.
const handshakeTimeout = 10 * time.Second

// acceptTLS runs the TLS handshake of a client connection when the
// listeners speak TLS, and returns the principal its verified certificate
// names ("" without one). On failure it closes nc, logs and counts why, and
// returns false.
func (p *Proxy) acceptTLS(nc net.Conn) (net.Conn, string, bool) {
	if p.cfg.ClientTLS == nil {
		return nc, "", true
	}
	tc, principal, err := p.handshake(nc)
	if err != nil {
		p.m.closed.WithLabelValues(reasonTLS).Inc()
		nc.Close()
		p.log.Warn("kafka connection closed", "client", nc.RemoteAddr().String(), "reason", reasonTLS, "err", err)
		return nil, "", false
	}
	return tc, principal, true
}

func (p *Proxy) handshake(nc net.Conn) (net.Conn, string, error) {
	tc := tls.Server(nc, p.cfg.ClientTLS)
	ctx, cancel := context.WithTimeout(p.ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, "", fmt.Errorf("TLS handshake with the client: %w (is the client configured for TLS, with a certificate the client CA signed?)", err)
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return tc, "", nil
	}
	principal, err := tlsfiles.Principal(st.PeerCertificates[0], p.cfg.PrincipalFrom)
	if err != nil {
		return nil, "", fmt.Errorf("client certificate %q: %w", st.PeerCertificates[0].Subject, err)
	}
	return tc, principal, nil
}

// secureUpstream wraps a new broker connection in TLS and authenticates it
// with the proxy's own SASL credentials, as configured, so that clients
// never hold broker credentials.
func (p *Proxy) secureUpstream(nc net.Conn, addr string) (net.Conn, error) {
	if p.cfg.UpstreamTLS != nil {
		cfg := p.cfg.UpstreamTLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(nc, cfg)
		ctx, cancel := context.WithTimeout(p.ctx, handshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with broker %s: %w", addr, err)
		}
		nc = tc
	}
	if p.cfg.UpstreamSASL != nil {
		nc.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := p.upstreamSASL(nc, addr); err != nil {
			nc.Close()
			return nil, fmt.Errorf("SASL %s with broker %s as the proxy's own user: %w", p.cfg.UpstreamSASL.Name(), addr, err)
		}
		nc.SetDeadline(time.Time{})
	}
	return nc, nil
}

// upstreamSASL authenticates nc with SaslHandshake v1 and SaslAuthenticate
// v1 (KIP-152), driving the client side of the mechanism.
func (p *Proxy) upstreamSASL(nc net.Conn, addr string) error {
	mech := p.cfg.UpstreamSASL
	host, _, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(p.ctx, handshakeTimeout)
	defer cancel()
	sess, msg, err := mech.Authenticate(ctx, host)
	if err != nil {
		return err
	}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, mech.Name()
	resp, err := roundTrip(nc, hs, 0)
	if err != nil {
		return err
	}
	if code := resp.(*kmsg.SASLHandshakeResponse).ErrorCode; code != 0 {
		return fmt.Errorf("broker refused the mechanism (it offers %v): %w", resp.(*kmsg.SASLHandshakeResponse).SupportedMechanisms, kerr.ErrorForCode(code))
	}
	for corr := int32(1); ; corr++ {
		auth := kmsg.NewPtrSASLAuthenticateRequest()
		auth.Version, auth.SASLAuthBytes = 1, msg
		resp, err := roundTrip(nc, auth, corr)
		if err != nil {
			return err
		}
		ar := resp.(*kmsg.SASLAuthenticateResponse)
		if ar.ErrorCode != 0 {
			e := kerr.ErrorForCode(ar.ErrorCode)
			if ar.ErrorMessage != nil {
				return fmt.Errorf("%w: %s", e, *ar.ErrorMessage)
			}
			return e
		}
		done, next, err := sess.Challenge(ar.SASLAuthBytes)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		msg = next
		if corr > 10 {
			return errors.New("SASL exchange did not finish")
		}
	}
}

// roundTrip writes one non-flexible request with a v1 header and reads its
// v0-header response.
func roundTrip(nc net.Conn, req kmsg.Request, corr int32) (kmsg.Response, error) {
	const clientID = "pipemesh-proxy"
	out := make([]byte, 4, 64)
	out = binary.BigEndian.AppendUint16(out, uint16(req.Key()))
	out = binary.BigEndian.AppendUint16(out, uint16(req.GetVersion()))
	out = binary.BigEndian.AppendUint32(out, uint32(corr))
	out = binary.BigEndian.AppendUint16(out, uint16(len(clientID)))
	out = append(out, clientID...)
	out = req.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	if _, err := nc.Write(out); err != nil {
		return nil, err
	}
	var sz [4]byte
	if _, err := io.ReadFull(nc, sz[:]); err != nil {
		return nil, fmt.Errorf("reading the broker's %s answer: %w", kmsg.NameForKey(req.Key()), err)
	}
	n := binary.BigEndian.Uint32(sz[:])
	if n < 4 || n > 1<<20 {
		return nil, fmt.Errorf("broker answered %s with a %d-byte frame", kmsg.NameForKey(req.Key()), n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(nc, body); err != nil {
		return nil, err
	}
	if got := int32(binary.BigEndian.Uint32(body)); got != corr {
		return nil, fmt.Errorf("broker answered correlation id %d, want %d", got, corr)
	}
	resp := req.ResponseKind()
	if err := resp.ReadFrom(body[4:]); err != nil {
		return nil, fmt.Errorf("decoding the broker's %s answer: %w", kmsg.NameForKey(req.Key()), err)
	}
	return resp, nil
}

// upstreamOpts are the metadata client's options for the same upstream
// TLS and SASL.
func (p *Proxy) upstreamOpts() []kgo.Opt {
	var opts []kgo.Opt
	if p.cfg.UpstreamTLS != nil {
		opts = append(opts, kgo.DialTLSConfig(p.cfg.UpstreamTLS.Clone()))
	}
	if p.cfg.UpstreamSASL != nil {
		opts = append(opts, kgo.SASL(p.cfg.UpstreamSASL))
	}
	return opts
}
