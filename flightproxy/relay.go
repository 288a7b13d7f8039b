package flightproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// The proxy's listener feeds an h2relay.Relay, which terminates each
// client's HTTP/2 connection and relays its streams to the proxy's gRPC
// server over an in-process socket pair (backendConn). The gRPC handlers
// keep every decision (identity, policy, routing, rewriting); DoGet and
// DoPut then splice their data straight between the client and the
// upstream (splice.go), where gRPC's own transport would copy each message
// twice in user space.

// backendConn is the gRPC server's end of the socket pair for one client
// connection. It answers RemoteAddr with the client's address and carries
// the client's TLS state, so peer information reads as if gRPC had served
// the client itself.
type backendConn struct {
	net.Conn
	remote net.Addr
	tls    *tls.ConnectionState
}

func (c *backendConn) RemoteAddr() net.Addr { return c.remote }

// backendListener hands backend connections to the gRPC server.
type backendListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newBackendListener(addr net.Addr) *backendListener {
	return &backendListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *backendListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *backendListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *backendListener) Addr() net.Addr { return l.addr }

// dial returns the relay's end of a new socket pair whose other end the
// gRPC server accepts.
func (l *backendListener) dial(client net.Conn) (net.Conn, error) {
	relayEnd, serverEnd, err := socketPair()
	if err != nil {
		return nil, fmt.Errorf("socket pair: %w", err)
	}
	bc := &backendConn{Conn: serverEnd, remote: client.RemoteAddr()}
	if tc, ok := client.(*tls.Conn); ok {
		st := tc.ConnectionState()
		bc.tls = &st
	}
	select {
	case l.ch <- bc:
		return relayEnd, nil
	case <-l.done:
		_ = relayEnd.Close()
		_ = serverEnd.Close()
		return nil, net.ErrClosed
	}
}

// relayCreds are the gRPC server's transport credentials behind the relay:
// no handshake (the relay terminated TLS), and the client's TLS state as
// the peer's AuthInfo.
type relayCreds struct{ secure bool }

type plainAuthInfo struct{ credentials.CommonAuthInfo }

func (plainAuthInfo) AuthType() string { return "insecure" }

func (relayCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("flightproxy: relay credentials are server-only")
}

func (relayCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if bc, ok := c.(*backendConn); ok && bc.tls != nil {
		return c, credentials.TLSInfo{State: *bc.tls, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	return c, plainAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (r relayCreds) Info() credentials.ProtocolInfo {
	if r.secure {
		return credentials.ProtocolInfo{SecurityProtocol: "tls"}
	}
	return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
}

func (r relayCreds) Clone() credentials.TransportCredentials { return r }
func (relayCreds) OverrideServerName(string) error           { return nil }

// serveConn terminates TLS when configured and relays one client
// connection.
func (p *Proxy) serveConn(ctx context.Context, nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if p.cfg.TLS != nil {
		cfg := p.cfg.TLS.Clone()
		cfg.NextProtos = []string{"h2"}
		tc := tls.Server(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			p.log.Debug("TLS handshake failed", "remote", nc.RemoteAddr(), "error", err)
			_ = nc.Close()
			return
		}
		nc = tc
	}
	if err := p.relay.ServeConn(ctx, nc); err != nil {
		p.log.Debug("client connection ended", "remote", nc.RemoteAddr(), "error", err)
	}
}
