package kafkaproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipemesh/pipemesh/policy"
	"github.com/pipemesh/pipemesh/protocol"
)

// auditLog writes one JSON line per denied (or audited) decision, and per
// allowed one when asked, to the configured writer; without one, denials go
// to the proxy's log at warn level.
type auditLog struct {
	mu     sync.Mutex
	w      io.Writer
	allows bool
	p      *Proxy
}

// auditEntry is one line of the audit log.
type auditEntry struct {
	Time      time.Time `json:"time"`
	Result    string    `json:"result"`
	Principal string    `json:"principal"`
	ClientID  string    `json:"client_id,omitempty"`
	Source    string    `json:"source"`
	API       string    `json:"api"`
	Operation string    `json:"operation"`
	Resource  string    `json:"resource_type"`
	Name      string    `json:"resource_name"`
	Reason    string    `json:"reason"`
	Rule      string    `json:"rule,omitempty"`
}

func (l *auditLog) record(c *conn, principal string, key int16, op policy.Operation, rt policy.ResourceType, name string, d policy.Decision) {
	e := auditEntry{
		Time: time.Now().UTC(), Result: d.Result.String(), Principal: principal, ClientID: c.clientID,
		Source: c.client.RemoteAddr().String(), API: protocol.KeyName(key), Operation: op.String(),
		Resource: rt.String(), Name: name, Reason: d.Reason.String(),
	}
	if d.Rule != nil {
		e.Rule = d.Rule.String()
	}
	if l.w == nil {
		if d.Result == policy.Allowed {
			return
		}
		l.p.log.Warn("policy "+e.Result, "principal", e.Principal, "client_id", e.ClientID, "source", e.Source, "api", e.API,
			"operation", e.Operation, "resource_type", e.Resource, "resource_name", e.Name, "reason", e.Reason, "rule", e.Rule)
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(b); err != nil {
		l.p.log.Error("writing the audit log failed", "err", err)
	}
}

// initAuth prepares what a policy needs: the audit log, the failure
// limiter and their metrics.
func (p *Proxy) initAuth() error {
	p.audit = &auditLog{w: p.cfg.AuditLog, allows: p.cfg.AuditAllows, p: p}
	p.authFails = newFailureLimiter()
	p.authFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pipemesh_kafka_authentication_failures_total", Help: "Failed SASL authentications (wrong password, unknown user, rate-limited source).",
	})
	if err := p.cfg.Registerer.Register(p.authFailures); err != nil {
		return fmt.Errorf("kafkaproxy: registering metrics: %w", err)
	}
	return nil
}
