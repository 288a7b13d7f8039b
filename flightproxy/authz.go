package flightproxy

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipemesh/pipemesh/policy"
)

// Operation is what a call does to a dataset, in Kafka ACL terms so that
// one policy file covers Kafka topics and Flight datasets.
type Operation string

// Operations on the flight_dataset resource type.
const (
	// OpRead covers GetFlightInfo, PollFlightInfo, GetSchema, DoGet and the
	// reading half of DoExchange.
	OpRead Operation = "READ"
	// OpWrite covers DoPut and the writing half of DoExchange.
	OpWrite Operation = "WRITE"
	// OpDescribe covers ListFlights, which lists only what the caller may
	// describe.
	OpDescribe Operation = "DESCRIBE"
)

// ResourceType is the policy resource type of Flight datasets.
const ResourceType = "flight_dataset"

// ActionResourceType is the policy resource type of the DoAction types the
// proxy cannot tie to a dataset (Flight SQL's BeginTransaction,
// CreatePreparedStatement, ..., and a service's own actions). Calling one
// is OpWrite on it.
const ActionResourceType = "flight_action"

// Decision is an authorizer's answer. Rule names what decided, for the
// denial message and the audit log ("acls[4] at line 9: deny User:bob READ
// on flight_dataset prefixed:\"sales.\"").
type Decision struct {
	Allow bool
	Rule  string
	// WouldDeny marks a denial the authorizer's audit mode lets through:
	// Allow is true, and the proxy logs the call as would_deny.
	WouldDeny bool
	// Reason is the kind of decision for the audit log (allow_rule,
	// deny_rule, no_matching_allow, ...); optional.
	Reason string
}

// result is the decision as the audit log and the policy metrics name it.
func (d Decision) result() string {
	switch {
	case d.WouldDeny:
		return "would_deny"
	case d.Allow:
		return "allow"
	}
	return "deny"
}

// Authorizer decides whether principal (e.g. "User:alice") may perform op on
// a dataset (descriptor path joined with "/", or a command kind such as
// "sql:CommandStatementQuery"; "" when the proxy cannot name it, for a
// ticket it did not issue). The policy package implements it. Decide runs
// on every call, so it must be fast and safe for concurrent use.
type Authorizer interface {
	Decide(principal string, op Operation, dataset string) Decision
}

// ActionAuthorizer is an Authorizer that also decides DoAction types that
// name no dataset. With an Authorizer that is not one, such actions pass
// unchecked (AllowAll, AuthorizerFunc); PolicyAuthorizer is one, so under a
// policy an action type no rule allows is denied, as Kafka denies an API
// it has no mapping for.
type ActionAuthorizer interface {
	Authorizer
	// DecideAction decides whether principal may call DoAction with
	// actionType, and so see it in ListActions. It runs on every such
	// call: fast and safe for concurrent use.
	DecideAction(principal, actionType string) Decision
}

// AllowAll is the authorizer without a policy: everything is allowed.
type AllowAll struct{}

// Decide allows.
func (AllowAll) Decide(string, Operation, string) Decision {
	return Decision{Allow: true, Rule: "no policy"}
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(principal string, op Operation, dataset string) Decision

// Decide calls f.
func (f AuthorizerFunc) Decide(principal string, op Operation, dataset string) Decision {
	return f(principal, op, dataset)
}

// authorize returns PermissionDenied, naming the rule, when the caller may
// not. Denials and audited denials (and allows, with AuditAllows) are
// written to the audit log.
func (p *Proxy) authorize(c *call, op Operation, dataset string) error {
	d := p.decide(c, op, dataset)
	if d.Allow {
		return nil
	}
	name := dataset
	if name == "" {
		name = "(a ticket this proxy did not issue)"
	}
	return status.Error(codes.PermissionDenied, fmt.Sprintf("pipemesh: %s may not %s %s %q: %s", c.principal, op, ResourceType, name, d.Rule))
}

// decide asks the authorizer and records what it said.
func (p *Proxy) decide(c *call, op Operation, dataset string) Decision {
	d := p.cfg.Authorizer.Decide(c.principal, op, dataset)
	if !d.Allow || d.WouldDeny || p.cfg.AuditAllows {
		p.audit(c, op, ResourceType, dataset, d)
	}
	return d
}

// authorizeAction returns PermissionDenied, naming the rule, when the
// caller may not call the action type; like authorize, it writes the
// audit log.
func (p *Proxy) authorizeAction(c *call, actionType string) error {
	d := p.decideAction(c, actionType)
	if d.Allow {
		return nil
	}
	hint := ""
	if d.Reason == policy.ReasonNoAllow.String() {
		hint = fmt.Sprintf("; allow it with a %s rule (docs/security.md)", ActionResourceType)
	}
	return status.Error(codes.PermissionDenied, fmt.Sprintf("pipemesh: %s may not call %s %q: %s%s",
		c.principal, ActionResourceType, actionType, d.Rule, hint))
}

// decideAction asks the authorizer about an action type, if it decides
// actions, and records what it said.
func (p *Proxy) decideAction(c *call, actionType string) Decision {
	aa, ok := p.cfg.Authorizer.(ActionAuthorizer)
	if !ok {
		return Decision{Allow: true, Rule: "the authorizer does not check actions"}
	}
	d := aa.DecideAction(c.principal, actionType)
	if !d.Allow || d.WouldDeny || p.cfg.AuditAllows {
		p.audit(c, OpWrite, ActionResourceType, actionType, d)
	}
	return d
}

var (
	_ Authorizer = AllowAll{}
	_ Authorizer = AuthorizerFunc(nil)
)
