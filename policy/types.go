package policy

import (
	"strings"
)

// Operation is a Kafka ACL operation.
type Operation uint8

// Operations, as in Kafka's AclOperation. OpAll matches every operation in a
// rule; it is never asked for.
const (
	OpRead Operation = iota
	OpWrite
	OpCreate
	OpDelete
	OpAlter
	OpDescribe
	OpDescribeConfigs
	OpAlterConfigs
	OpIdempotentWrite
	OpClusterAction
	OpAll
	numOps
)

var opNames = [numOps]string{
	OpRead: "READ", OpWrite: "WRITE", OpCreate: "CREATE", OpDelete: "DELETE", OpAlter: "ALTER",
	OpDescribe: "DESCRIBE", OpDescribeConfigs: "DESCRIBE_CONFIGS", OpAlterConfigs: "ALTER_CONFIGS",
	OpIdempotentWrite: "IDEMPOTENT_WRITE", OpClusterAction: "CLUSTER_ACTION", OpAll: "ALL",
}

// String returns the operation as Kafka writes it in ACLs (WRITE).
func (o Operation) String() string {
	if o < numOps {
		return opNames[o]
	}
	return "UNKNOWN"
}

// ParseOperation reads an operation name, in Kafka's enum form
// (IDEMPOTENT_WRITE) or kafka-acls.sh's (IdempotentWrite), any case.
func ParseOperation(s string) (Operation, bool) {
	k := normalize(s)
	for o, n := range opNames {
		if normalize(n) == k {
			return Operation(o), true
		}
	}
	return 0, false
}

// impliedBy lists, for each operation asked for, the operations whose allow
// rules grant it: itself, ALL, and Kafka's implications (READ, WRITE,
// DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS).
// Deny rules are not widened this way: denying READ does not deny DESCRIBE,
// as in Kafka.
var impliedBy = [numOps][]Operation{
	OpRead:            {OpRead, OpAll},
	OpWrite:           {OpWrite, OpAll},
	OpCreate:          {OpCreate, OpAll},
	OpDelete:          {OpDelete, OpAll},
	OpAlter:           {OpAlter, OpAll},
	OpDescribe:        {OpDescribe, OpRead, OpWrite, OpDelete, OpAlter, OpAll},
	OpDescribeConfigs: {OpDescribeConfigs, OpAlterConfigs, OpAll},
	OpAlterConfigs:    {OpAlterConfigs, OpAll},
	OpIdempotentWrite: {OpIdempotentWrite, OpAll},
	OpClusterAction:   {OpClusterAction, OpAll},
	OpAll:             {OpAll},
}

// ResourceType is the kind of resource a rule names.
type ResourceType uint8

// Resource types, as in Kafka's ResourceType.
const (
	ResTopic ResourceType = iota
	ResGroup
	ResTransactionalID
	ResCluster
	// ResFlightDataset is an Arrow Flight dataset: a descriptor path joined
	// with "/" (sales/2024), or a command kind (sql:CommandStatementQuery).
	// Not a Kafka type: it lets one policy file cover the Flight proxy too.
	ResFlightDataset
	// ResFlightAction is an Arrow Flight DoAction type (BeginTransaction,
	// or a service's own), for the actions the proxy cannot tie to a
	// dataset. The one operation asked for is WRITE: an action may change
	// state on the service, and Flight does not say which ones do not.
	ResFlightAction
	numResourceTypes
)

var resNames = [numResourceTypes]string{
	ResTopic: "topic", ResGroup: "group", ResTransactionalID: "transactional_id", ResCluster: "cluster",
	ResFlightDataset: "flight_dataset", ResFlightAction: "flight_action",
}

// String returns the resource type as the policy file writes it (topic).
func (r ResourceType) String() string {
	if r < numResourceTypes {
		return resNames[r]
	}
	return "unknown"
}

// ParseResourceType reads a resource type: topic, group, transactional_id
// (or TransactionalId), cluster, flight_dataset (or FlightDataset),
// flight_action (or FlightAction); any case.
func ParseResourceType(s string) (ResourceType, bool) {
	k := normalize(s)
	for r, n := range resNames {
		if normalize(n) == k {
			return ResourceType(r), true
		}
	}
	return 0, false
}

// ClusterName is the one name of the cluster resource, as in Kafka.
const ClusterName = "kafka-cluster"

// Wildcard is the literal resource name, and the principal name after
// "User:", that matches every name.
const Wildcard = "*"

// Anonymous is the principal of a connection that has not authenticated,
// as Kafka names it.
const Anonymous = "User:ANONYMOUS"

// PatternType is how a rule's name matches resource names.
type PatternType uint8

// Pattern types (KIP-290). A literal "*" matches every name.
const (
	PatternLiteral PatternType = iota
	PatternPrefixed
)

// String returns the pattern type as the policy file writes it.
func (p PatternType) String() string {
	if p == PatternPrefixed {
		return "prefixed"
	}
	return "literal"
}

// Permission is allow or deny.
type Permission uint8

// Permissions.
const (
	Allow Permission = iota
	Deny
)

// String returns allow or deny.
func (p Permission) String() string {
	if p == Deny {
		return "deny"
	}
	return "allow"
}

// Mode says whether denials are enforced or only logged and counted.
type Mode uint8

// Modes. ModeInherit, on a rule, takes the policy's mode.
const (
	ModeInherit Mode = iota
	ModeEnforce
	ModeAudit
)

// String returns enforce, audit, or inherit.
func (m Mode) String() string {
	switch m {
	case ModeEnforce:
		return "enforce"
	case ModeAudit:
		return "audit"
	}
	return "inherit"
}

// normalize folds case and drops underscores and dashes, so that
// IDEMPOTENT_WRITE, IdempotentWrite and idempotent-write compare equal.
func normalize(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.NewReplacer("_", "", "-", "").Replace(s)
}
