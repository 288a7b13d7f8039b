package flightproxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits are one principal's caps on Flight data streams (DoGet, DoPut,
// DoExchange); zero means no cap.
type Limits struct {
	// MaxStreams caps the principal's data streams open at once; one more
	// is refused with ResourceExhausted.
	MaxStreams int
	// BytesPerSecond caps the FlightData bytes of all the principal's
	// streams together, both directions. Over it, the proxy waits before
	// forwarding the next message, which gRPC flow control turns into
	// backpressure on the sender: nothing is dropped.
	BytesPerSecond float64
}

// Quotas gives each principal's limits. The policy package implements it;
// nil means no limits.
type Quotas interface {
	FlightLimits(principal string) Limits
}

// StaticQuotas gives every principal the same limits.
type StaticQuotas Limits

// FlightLimits returns q.
func (q StaticQuotas) FlightLimits(string) Limits { return Limits(q) }

// principalUse is what one principal is using now.
type principalUse struct {
	streams int
	// The byte budget: tokens may go negative (debt), which the next
	// sender waits off; so a message larger than a second's worth still
	// passes, late.
	tokens float64
	last   time.Time
}

// shaper keeps the principals' stream counts and byte budgets.
type shaper struct {
	quotas Quotas
	mu     sync.Mutex
	use    map[string]*principalUse
}

func newShaper(q Quotas) *shaper { return &shaper{quotas: q, use: map[string]*principalUse{}} }

// admit counts a new stream for principal, or refuses it. release must be
// called when the stream ends. rate is the principal's byte budget (nil
// when unlimited).
func (s *shaper) admit(principal string) (release func(), rate *byteRate, err error) {
	if s.quotas == nil {
		return func() {}, nil, nil
	}
	lim := s.quotas.FlightLimits(principal)
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.use[principal]
	if u == nil {
		u = &principalUse{tokens: lim.BytesPerSecond, last: time.Now()}
		s.use[principal] = u
	}
	if lim.MaxStreams > 0 && u.streams >= lim.MaxStreams {
		return nil, nil, status.Errorf(codes.ResourceExhausted,
			"pipemesh: %s has %d Flight data streams open, the most it may; retry when one has finished", principal, u.streams)
	}
	u.streams++
	release = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if u.streams--; u.streams == 0 && u.tokens >= 0 {
			delete(s.use, principal) // nothing owed: forget the principal
		}
	}
	if lim.BytesPerSecond > 0 {
		rate = &byteRate{s: s, u: u, perSec: lim.BytesPerSecond}
	}
	return release, rate, nil
}

// byteRate spends one principal's byte budget.
type byteRate struct {
	s      *shaper
	u      *principalUse
	perSec float64
}

// wait takes n bytes from the budget, waiting as long as the budget is in
// debt, or until ctx ends.
func (r *byteRate) wait(ctx context.Context, n int) error {
	if r == nil {
		return nil
	}
	r.s.mu.Lock()
	now := time.Now()
	u := r.u
	u.tokens = min(u.tokens+now.Sub(u.last).Seconds()*r.perSec, r.perSec) // at most a second's burst
	u.last = now
	u.tokens -= float64(n)
	debt := -u.tokens
	r.s.mu.Unlock()
	if debt <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(debt / r.perSec * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flightproxy: waiting for the byte-rate quota: %w", ctx.Err())
	}
}
