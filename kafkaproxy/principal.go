package kafkaproxy

// principal is the identity quotas and rules are matched against, in
// Kafka's "Type:name" form. Until the identity stage (SASL, mTLS) lands,
// every connection is User:ANONYMOUS, as on a Kafka listener without
// authentication; that stage will set it per connection.
func (c *conn) principal() string { return "User:ANONYMOUS" }
