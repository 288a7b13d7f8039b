package flightproxy

import (
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipemesh/pipemesh/internal/arrowipc"
)

// Compression names the IPC body compression of a stream toward clients.
type Compression string

// Compressions the proxy re-encodes to. Passthrough, the default, forwards
// streams as they are.
const (
	Passthrough Compression = ""
	LZ4Frame    Compression = "lz4_frame"
	ZSTD        Compression = "zstd"
)

// ParseCompression reads a compression name as config files write it.
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "", "none", "passthrough":
		return Passthrough, nil
	case "lz4", "lz4_frame":
		return LZ4Frame, nil
	case "zstd":
		return ZSTD, nil
	}
	return "", fmt.Errorf("compression %q: want none, lz4 or zstd", s)
}

// CompressionRules picks the compression of DoGet streams toward clients
// per dataset. The policy package implements it; nil passes every stream
// through.
type CompressionRules interface {
	FlightCompression(dataset string) Compression
}

// CompressionFunc adapts a function to CompressionRules.
type CompressionFunc func(dataset string) Compression

// FlightCompression calls f.
func (f CompressionFunc) FlightCompression(dataset string) Compression { return f(dataset) }

// recompress reads the upstream's stream as record batches and writes them
// to the client with body compression c: the one path on which the proxy
// decodes bodies, and only because a rule asks for it. Batches already in
// c are re-encoded all the same (arrow-go's reader decompresses on read).
func (c *call) recompress(cs grpc.ClientStream, comp Compression, e *edge, rate *byteRate) error {
	if md, err := cs.Header(); err == nil {
		c.sendHeader(md)
	}
	in := &upstreamData{cs: cs}
	r, err := flight.NewRecordReader(in)
	if err != nil {
		c.setTrailer(cs.Trailer())
		if errors.Is(err, io.EOF) {
			return nil // an empty stream: nothing to re-encode
		}
		if in.err != nil {
			return in.err // the upstream's status, as it is
		}
		return status.Errorf(codes.Internal, "pipemesh: re-encoding the stream: reading the upstream's schema: %v", err)
	}
	defer r.Release()
	opts := []ipc.Option{ipc.WithSchema(r.Schema())}
	switch comp {
	case LZ4Frame:
		opts = append(opts, ipc.WithLZ4())
	case ZSTD:
		opts = append(opts, ipc.WithZstd())
	}
	out := &clientData{c: c, e: e, rate: rate}
	w := flight.NewRecordWriter(out, opts...)
	for r.Next() {
		if err := w.WriteWithAppMetadata(r.RecordBatch(), r.LatestAppMetadata()); err != nil {
			return out.failed(err)
		}
	}
	c.setTrailer(cs.Trailer())
	if in.err != nil && !errors.Is(in.err, io.EOF) {
		return in.err
	}
	if err := r.Err(); err != nil && !errors.Is(err, io.EOF) {
		return status.Errorf(codes.Internal, "pipemesh: re-encoding the stream: %v", err)
	}
	if err := w.Close(); err != nil {
		return out.failed(err)
	}
	return nil
}

// upstreamData reads FlightData messages from the upstream, keeping the
// call's final error.
type upstreamData struct {
	cs  grpc.ClientStream
	err error
}

func (u *upstreamData) Recv() (*flight.FlightData, error) {
	var fd flight.FlightData
	if err := u.cs.RecvMsg(&fd); err != nil {
		u.err = err
		return nil, err
	}
	return &fd, nil
}

// clientData sends re-encoded messages to the client, counting them.
type clientData struct {
	c    *call
	e    *edge
	rate *byteRate
	err  error
}

func (o *clientData) Send(fd *flight.FlightData) error {
	o.e.progress()
	n := len(fd.DataHeader) + len(fd.DataBody)
	if err := o.rate.wait(o.c.ss.Context(), n); err != nil {
		o.err = status.Error(codes.Canceled, err.Error())
		return o.err
	}
	if err := o.c.ss.SendMsg(fd); err != nil {
		o.err = err
		return err
	}
	o.e.obs.Bytes += int64(n)
	o.e.bytes.Add(float64(n))
	if h, err := arrowipc.ParseHeader(fd.DataHeader); err == nil && h.Kind == arrowipc.KindRecordBatch {
		o.e.obs.Batches++
		o.e.obs.Rows += h.Rows
		o.e.batches.Inc()
		o.e.rows.Add(float64(h.Rows))
	}
	return nil
}

// failed returns the client's error when sending failed, else err wrapped.
func (o *clientData) failed(err error) error {
	if o.err != nil {
		return o.err
	}
	return status.Errorf(codes.Internal, "pipemesh: re-encoding the stream: %v", err)
}
