package flightproxy

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// frame is one gRPC message held as the bytes that arrived, never decoded
// as a whole. The proxy receives a FlightData (or a Result, a PutResult)
// into a frame and sends the same buffers on: gRPC's buffer pool slices go
// from one HTTP/2 connection to the other without a protobuf round trip.
type frame struct {
	data mem.BufferSlice
}

// free releases the buffers of a frame that will not be sent.
func (f *frame) free() {
	f.data.Free()
	f.data = nil
}

// codec is the proxy's gRPC codec, on both its server and its upstream
// connections. Frames pass as raw bytes, taking a reference on receive and
// handing it to gRPC on send (no copy; gRPC frees the buffers once
// written). Other values are protobuf messages, which the proxy decodes
// only where a stage must read or rewrite them (FlightInfo locations,
// descriptors of unary calls).
//
// It implements CodecV2: the older Codec interface hands over a []byte,
// which forces gRPC to copy every message into one contiguous slice.
type codec struct{}

// Name is "proto": on the wire the proxy speaks plain protobuf gRPC.
func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *frame:
		out := m.data
		m.data = nil // ownership passes to gRPC
		return out, nil
	case proto.Message:
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return nil, fmt.Errorf("flightproxy: cannot marshal %T", v)
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *frame:
		data.Ref()
		m.data = data
		return nil
	case proto.Message:
		if len(data) == 1 {
			return proto.Unmarshal(data[0].ReadOnlyData(), m)
		}
		return proto.Unmarshal(data.Materialize(), m)
	}
	return fmt.Errorf("flightproxy: cannot unmarshal into %T", v)
}

var _ encoding.CodecV2 = codec{}
