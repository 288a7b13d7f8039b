package kafkaproxy

import "github.com/pipemesh/pipemesh/policy"

// anonymous is the principal of a connection that has not authenticated,
// spelled as Kafka's ACLs spell it.
const anonymous = policy.Anonymous

// principalName is who the client on this connection is, for the stages
// that label or limit by principal (telemetry, quotas): the SASL or
// certificate principal, else anonymous, as on a Kafka listener without
// authentication. Request goroutine only, like c.principal.
func (c *conn) principalName() string {
	if c.principal == "" {
		return anonymous
	}
	return c.principal
}
