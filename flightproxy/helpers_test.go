package flightproxy

import (
	pb "github.com/apache/arrow-go/v18/arrow/flight/gen/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

type pbCommandStatementQuery = pb.CommandStatementQuery

// anypbNew packs m as Flight SQL clients do and marshals the Any.
func anypbNew(m proto.Message) ([]byte, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(a)
}

func ipcWithTestSchema() ipc.Option { return ipc.WithSchema(testSchema) }
