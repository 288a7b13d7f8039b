package kafkaproxy

// anonymous is the principal of a connection that has not authenticated,
// spelled as Kafka's ACLs spell it.
const anonymous = "User:ANONYMOUS"

// principal is who the client on this connection authenticated as. Until
// SASL and mTLS identity land (issue 6) every connection is anonymous; this
// accessor is the one place that will change.
func (c *conn) principal() string { return anonymous }
