package flightproxy

import (
	"crypto/subtle"
	"time"

	"google.golang.org/grpc/peer"

	"github.com/pipemesh/pipemesh/policy"
)

// UsePolicy makes the policy in store govern the proxy, as it governs the
// Kafka proxy: it decides every call on flight_dataset rules (PolicyAuthorizer),
// accepts the policy's principals by basic auth (their PLAIN passwords,
// exchanged for the proxy's bearer token), and takes per-principal caps from
// its flight_quotas (falling back to the Quotas already set). Every call
// reads the policy in force, so a reload applies to the next call of a
// connected client.
func (c *Config) UsePolicy(store *policy.Store) {
	c.Authorizer = PolicyAuthorizer{Store: store}
	if c.Identity == nil {
		c.Identity = &Identity{}
	}
	c.Identity.Basic = PolicyBasic(store)
	// As on the Kafka side: anonymous callers only while the policy
	// defines no principals (then the rules decide what User:ANONYMOUS,
	// or a certificate's principal, may do).
	c.Identity.Anonymous = func() bool { return !store.Current().HasPrincipals() }
	c.Identity.Known = func(user string) bool {
		pol := store.Current()
		if !pol.HasPrincipals() {
			return true
		}
		_, ok := pol.Credentials(user)
		return ok
	}
	c.Quotas = PolicyQuotas{Store: store, Fallback: c.Quotas}
}

// PolicyAuthorizer decides Flight calls with the policy in force in Store,
// on its flight_dataset rules (and DoAction types on its flight_action
// rules), and counts each decision in
// pipemesh_policy_decisions_total. In audit mode a denial comes back allowed
// and marked WouldDeny.
type PolicyAuthorizer struct {
	Store *policy.Store
}

// policyOps maps the proxy's operations to the policy's.
func policyOp(op Operation) (policy.Operation, bool) {
	switch op {
	case OpRead:
		return policy.OpRead, true
	case OpWrite:
		return policy.OpWrite, true
	case OpDescribe:
		return policy.OpDescribe, true
	}
	return 0, false
}

// Decide implements Authorizer. It does not allocate: rule texts are kept
// by the compiled policy.
func (a PolicyAuthorizer) Decide(principal string, op Operation, dataset string) Decision {
	pol := a.Store.Current()
	pop, ok := policyOp(op)
	if !ok {
		a.Store.Count(policy.Denied)
		return Decision{Rule: "pipemesh: unknown Flight operation " + string(op), Reason: "unknown_operation"}
	}
	return a.answer(pol.Decide(principal, pop, policy.ResFlightDataset, dataset))
}

// DecideAction implements ActionAuthorizer: WRITE on the flight_action
// named actionType. It does not allocate either.
func (a PolicyAuthorizer) DecideAction(principal, actionType string) Decision {
	return a.answer(a.Store.Current().Decide(principal, policy.OpWrite, policy.ResFlightAction, actionType))
}

// answer counts the policy's decision and turns it into the proxy's.
func (a PolicyAuthorizer) answer(d policy.Decision) Decision {
	a.Store.Count(d.Result)
	out := Decision{Allow: d.Allowed(), WouldDeny: d.Result == policy.WouldDeny, Reason: d.Reason.String()}
	switch {
	case d.Rule != nil:
		out.Rule = d.Rule.String()
	case d.Reason == policy.ReasonSuperUser:
		out.Rule = "super user"
	case d.Reason == policy.ReasonNoACL:
		out.Rule = "no rule names it and allow_if_no_acl is true"
	default:
		out.Rule = "no allow rule matches (no matching allow means deny)"
	}
	return out
}

// dummyPassword is compared against when the user is unknown, so that an
// unknown user costs the same as a wrong password.
var dummyPassword = []byte("pipemesh-no-such-user-0123456789")

// PolicyBasic checks a user name and password against the PLAIN
// credentials of the policy in force, in constant time.
func PolicyBasic(store *policy.Store) func(user, password string) bool {
	return func(user, password string) bool {
		c, ok := store.Current().Credentials(user)
		if !ok {
			subtle.ConstantTimeCompare(dummyPassword, []byte(password))
			return false
		}
		return c.CheckPassword([]byte(password))
	}
}

// PolicyQuotas gives each principal the caps of its flight_quotas entry in
// the policy in force (its own, else the User:* entry), else Fallback's.
type PolicyQuotas struct {
	Store    *policy.Store
	Fallback Quotas
}

// FlightLimits implements Quotas.
func (q PolicyQuotas) FlightLimits(principal string) Limits {
	if fq, ok := q.Store.Current().FlightQuota(principal); ok {
		return Limits{MaxStreams: fq.MaxStreams, BytesPerSecond: float64(fq.BytesPerSecond)}
	}
	if q.Fallback != nil {
		return q.Fallback.FlightLimits(principal)
	}
	return Limits{}
}

// audit records a decision in the shared audit log format
// (policy.AuditLog); API is the Flight method, resource ResourceType or
// ActionResourceType.
func (p *Proxy) audit(c *call, op Operation, resource, name string, d Decision) {
	e := policy.AuditEntry{
		Time: time.Now().UTC(), Result: d.result(), Principal: c.principal, API: c.method,
		Operation: string(op), Resource: resource, Name: name, Reason: d.Reason, Rule: d.Rule,
	}
	if c.job != c.principal {
		e.Job = c.job
	}
	if pr, ok := peer.FromContext(c.ss.Context()); ok && pr.Addr != nil {
		e.Source = pr.Addr.String()
	}
	p.auditLog.Record(e, d.Allow && !d.WouldDeny)
}

var (
	_ ActionAuthorizer = PolicyAuthorizer{}
	_ Quotas           = PolicyQuotas{}
)
