package flightproxy

import (
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow/flight"
	pb "github.com/apache/arrow-go/v18/arrow/flight/gen/flight"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// flightSQLPrefix starts the type URL of every Flight SQL command packed in
// a descriptor's cmd or an action's body (google.protobuf.Any).
const flightSQLPrefix = "type.googleapis.com/arrow.flight.protocol.sql."

// command is what the proxy reads of a CMD descriptor or an action body:
// the command's kind (for metrics: bounded, never the SQL itself) and the
// SQL text when the command carries one (for lineage and the audit log).
type command struct {
	kind string
	sql  string
}

// maxTextCommand bounds the SQL text kept from a plain-text command.
const maxTextCommand = 64 << 10

// parseCommand reads a CMD descriptor's bytes. Flight SQL commands are
// packed protobufs; Dremio-style services (and the Spark Flight sources
// that talk to them) send the SQL itself as the command, which is kept as
// "cmd:text". Anything else is an opaque "cmd".
func parseCommand(cmd []byte) command {
	var a anypb.Any
	if err := proto.Unmarshal(cmd, &a); err != nil || a.TypeUrl == "" {
		if len(cmd) > 0 && len(cmd) <= maxTextCommand && isText(cmd) {
			return command{kind: "cmd:text", sql: string(cmd)}
		}
		return command{kind: "cmd"}
	}
	name, ok := strings.CutPrefix(a.TypeUrl, flightSQLPrefix)
	if !ok {
		return command{kind: "cmd"}
	}
	c := command{kind: "sql:" + name}
	var sql interface{ GetQuery() string }
	switch name {
	case "CommandStatementQuery":
		sql = &pb.CommandStatementQuery{}
	case "CommandStatementUpdate":
		sql = &pb.CommandStatementUpdate{}
	case "ActionCreatePreparedStatementRequest":
		sql = &pb.ActionCreatePreparedStatementRequest{}
	case "CommandStatementIngest":
		var ing pb.CommandStatementIngest
		if proto.Unmarshal(a.Value, &ing) == nil {
			c.sql = "INGEST INTO " + ing.GetTable()
		}
		return c
	default:
		return c
	}
	if proto.Unmarshal(a.Value, sql.(proto.Message)) == nil {
		c.sql = sql.GetQuery()
	}
	return c
}

// describe names the dataset a descriptor refers to: the path joined with
// "/", or the command's kind.
func describe(d *flight.FlightDescriptor) (dataset string, c command) {
	if d.GetType() == flight.DescriptorPATH {
		return strings.Join(d.GetPath(), "/"), command{}
	}
	c = parseCommand(d.GetCmd())
	return c.kind, c
}

// isText reports whether b is UTF-8 without control characters other than
// whitespace, as SQL text is.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}
