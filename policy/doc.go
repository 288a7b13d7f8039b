// Package policy holds pipemesh's identities and authorization rules: the
// policy file (principals, Kafka-style ACL bindings, super users, mode), its
// parser with file:line:column errors, the compiled form that answers
// Decide without allocating, and the Store that hot-reloads it.
//
// The rules follow Kafka's ACL model (KIP-11, KIP-290 for prefixed
// patterns) so that an operator who knows kafka-acls.sh reads them at a
// glance: deny wins over allow, no matching allow means deny, READ, WRITE,
// DELETE and ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS,
// super users bypass every rule, and allow_if_no_acl mirrors the broker's
// allow.everyone.if.no.acl.found. The package knows nothing of the wire
// protocol; kafkaproxy maps each request onto Decide calls.
package policy
