package flightproxy

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Failed basic-auth logins are counted per source host, as the Kafka
// proxy counts failed SASL logins: after loginFailLimit failures within
// loginFailWindow, further attempts from that host are refused without
// looking at the password until the window has passed.
const (
	loginFailLimit  = 5
	loginFailWindow = 30 * time.Second
	loginFailTrack  = 10000 // hosts tracked at most, so a flood cannot grow memory
)

type loginFails struct {
	n     int
	first time.Time
}

// loginLimiter counts failed logins per source host.
type loginLimiter struct {
	mu sync.Mutex
	by map[string]*loginFails
}

func newLoginLimiter() *loginLimiter { return &loginLimiter{by: map[string]*loginFails{}} }

// blocked reports whether host has used up its failures; retry is how long
// until the window ends.
func (l *loginLimiter) blocked(host string, now time.Time) (retry time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.by[host]
	if f == nil {
		return 0, false
	}
	if left := loginFailWindow - now.Sub(f.first); left > 0 {
		return left, f.n >= loginFailLimit
	}
	delete(l.by, host)
	return 0, false
}

func (l *loginLimiter) fail(host string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.by[host]
	if f == nil || now.Sub(f.first) >= loginFailWindow {
		if len(l.by) >= loginFailTrack {
			for h, old := range l.by {
				if now.Sub(old.first) >= loginFailWindow {
					delete(l.by, h)
				}
			}
			if len(l.by) >= loginFailTrack {
				return
			}
		}
		f = &loginFails{first: now}
		l.by[host] = f
	}
	f.n++
}

// sourceHost is the caller's IP address ("" when unknown).
func sourceHost(ctx context.Context) string {
	pr, ok := peer.FromContext(ctx)
	if !ok || pr.Addr == nil {
		return ""
	}
	h, _, err := net.SplitHostPort(pr.Addr.String())
	if err != nil {
		return pr.Addr.String()
	}
	return h
}

var errWrongPassword = status.Error(codes.Unauthenticated, "pipemesh: wrong user name or password")

// checkBasic verifies a user name and password with Identity.Basic, under
// the per-source limit on failures. Wrong password and unknown user get the
// same answer.
func (p *Proxy) checkBasic(ctx context.Context, user, password string) error {
	host := sourceHost(ctx)
	now := time.Now()
	if retry, blocked := p.logins.blocked(host, now); blocked {
		p.metrics.authFailures.Inc()
		p.log.Warn("Flight login refused: too many failures from this source", "source", host, "user", user)
		return status.Error(codes.Unauthenticated, fmt.Sprintf(
			"pipemesh: too many failed logins from %s; try again in %s", host, retry.Round(time.Second)))
	}
	if user == "" || p.cfg.Identity.Basic == nil || !p.cfg.Identity.Basic(user, password) {
		p.logins.fail(host, now)
		p.metrics.authFailures.Inc()
		p.log.Info("Flight login failed", "source", host, "user", user)
		return errWrongPassword
	}
	return nil
}
