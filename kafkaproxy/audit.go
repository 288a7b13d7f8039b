package kafkaproxy

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipemesh/pipemesh/policy"
	"github.com/pipemesh/pipemesh/protocol"
)

// auditLog records the proxy's decisions in the shared audit log format
// (policy.AuditLog), with what the Kafka side knows of the request.
type auditLog struct {
	log    *policy.AuditLog
	allows bool
}

// record writes one entry. principal and clientID are passed in, not read
// from c, because fix-ups record from the response goroutine.
func (l *auditLog) record(c *conn, principal, clientID string, key int16, op policy.Operation, rt policy.ResourceType, name string, d policy.Decision) {
	e := policy.AuditEntry{
		Time: time.Now().UTC(), Result: d.Result.String(), Principal: principal, ClientID: clientID,
		Source: c.client.RemoteAddr().String(), API: protocol.KeyName(key), Operation: op.String(),
		Resource: rt.String(), Name: name, Reason: d.Reason.String(),
	}
	if d.Rule != nil {
		e.Rule = d.Rule.String()
	}
	l.log.Record(e, d.Result == policy.Allowed)
}

// initAuth prepares what a policy needs: the audit log, the failure
// limiter and their metrics.
func (p *Proxy) initAuth() error {
	p.audit = &auditLog{log: policy.NewAuditLog(p.cfg.AuditLog, p.log), allows: p.cfg.AuditAllows}
	p.authFails = newFailureLimiter()
	p.authFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pipemesh_kafka_authentication_failures_total", Help: "Failed SASL authentications (wrong password, unknown user, rate-limited source).",
	})
	if err := p.cfg.Registerer.Register(p.authFailures); err != nil {
		return fmt.Errorf("kafkaproxy: registering metrics: %w", err)
	}
	return nil
}
