// Package lineage holds the lineage graph: which applications produce to
// which topics, which consumer groups and jobs read them, and which datasets
// jobs write, with bytes, records and rates on every edge. Data planes (the
// Kafka proxy, the Flight proxy) feed it aggregated observations through
// Observe; it keeps the graph in memory, persists it to one local file,
// serves it over HTTP (JSON, OpenLineage, and the web view) and ages out
// edges past a retention window. It knows no wire protocol.
package lineage

import "time"

// NodeType is what a node stands for.
type NodeType string

// Node types.
const (
	// Application is a client program, known by its principal and client id.
	Application NodeType = "application"
	// Topic is a Kafka topic.
	Topic NodeType = "topic"
	// Group is a Kafka consumer group.
	Group NodeType = "group"
	// FlightDataset is a dataset served over Arrow Flight.
	FlightDataset NodeType = "flight_dataset"
	// Job is a compute job (Spark and the like) reading or writing datasets.
	Job NodeType = "job"
)

// EdgeType is how data moves along an edge.
type EdgeType string

// Edge types. Data flows from the edge's From node to its To node.
const (
	// Produces: application to topic.
	Produces EdgeType = "produces"
	// Consumes: topic to consumer group (or to an application that
	// consumes without a group).
	Consumes EdgeType = "consumes"
	// Reads: dataset to job.
	Reads EdgeType = "reads"
	// Writes: job to dataset.
	Writes EdgeType = "writes"
)

// NodeRef names a node by type and name.
type NodeRef struct {
	Type NodeType
	Name string
}

// ID is the node's id in the graph and the API: "type:name".
func (n NodeRef) ID() string { return string(n.Type) + ":" + n.Name }

// Client describes the program behind an observation: who it authenticated
// as, the client id it sent, and its software (KIP-511 name/version).
type Client struct {
	Principal string
	ClientID  string
	Software  string
	// Host is the client's source address (host only).
	Host string
}

// Observation is what a data plane saw on one edge since its last flush:
// counter deltas, never one event per request.
type Observation struct {
	From, To NodeRef
	Type     EdgeType
	Bytes    int64
	Records  int64
	Batches  int64
	Requests int64
	Errors   int64
	// At is when the edge was last seen active.
	At time.Time
	// Client is the program at the application, group or job end.
	Client Client
}

// Observer takes batches of observations. Graph implements it; data planes
// depend only on this interface.
type Observer interface {
	Observe(obs []Observation)
}
