package flightproxy

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

// Decision is an authorizer's answer. Rule names what decided, for the
// denial message and the audit log ("deny User:bob READ flight_dataset
// sales/ (prefixed), policy.yaml:12").
type Decision struct {
	Allow bool
	Rule  string
}

// Authorizer decides whether principal (e.g. "User:alice") may perform op on
// a dataset (descriptor path joined with "/", or a command kind such as
// "sql:CommandStatementQuery"; "" when the proxy cannot name it, for a
// ticket it did not issue). The policy package implements it. Decide runs
// on every call, so it must be fast and safe for concurrent use.
type Authorizer interface {
	Decide(principal string, op Operation, dataset string) Decision
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

// authorize returns PermissionDenied, naming the rule, when principal may not.
func (p *Proxy) authorize(principal string, op Operation, dataset string) error {
	d := p.cfg.Authorizer.Decide(principal, op, dataset)
	if d.Allow {
		return nil
	}
	p.log.Info("denied", "principal", principal, "operation", op, "resource_type", ResourceType, "dataset", dataset, "rule", d.Rule)
	name := dataset
	if name == "" {
		name = "(a ticket this proxy did not issue)"
	}
	return status.Error(codes.PermissionDenied, fmt.Sprintf("pipemesh: %s may not %s %s %q: %s", principal, op, ResourceType, name, d.Rule))
}

var (
	_ Authorizer = AllowAll{}
	_ Authorizer = AuthorizerFunc(nil)
)
