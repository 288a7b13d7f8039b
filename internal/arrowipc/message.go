// Package arrowipc reads the headers of Arrow IPC messages (the flatbuffer
// Message of format/Message.fbs) without touching their bodies, and writes
// and reads the encapsulated message framing of the IPC streaming format.
// The Flight proxy counts batches and rows with it; the built-in Flight
// server stores and replays streams with it, never decoding a column.
//
// Every read is bounds-checked: a malformed header is an error, never a panic.
package arrowipc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind is the type of an IPC message (MessageHeader in Message.fbs).
type Kind uint8

// The message kinds of the Arrow columnar format.
const (
	KindNone            Kind = 0
	KindSchema          Kind = 1
	KindDictionaryBatch Kind = 2
	KindRecordBatch     Kind = 3
	KindTensor          Kind = 4
	KindSparseTensor    Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindSchema:
		return "schema"
	case KindDictionaryBatch:
		return "dictionary batch"
	case KindRecordBatch:
		return "record batch"
	case KindTensor:
		return "tensor"
	case KindSparseTensor:
		return "sparse tensor"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// Codec is the body compression of a batch (BodyCompression in Message.fbs).
type Codec int8

// Body compression codecs. CodecNone means the batch carries no
// BodyCompression table.
const (
	CodecNone     Codec = -1
	CodecLZ4Frame Codec = 0
	CodecZSTD     Codec = 1
)

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecLZ4Frame:
		return "lz4_frame"
	case CodecZSTD:
		return "zstd"
	}
	return fmt.Sprintf("codec %d", int8(c))
}

// Header is what a stage needs from one IPC message header.
type Header struct {
	Kind Kind
	// BodyLength is the length the header announces for the body.
	BodyLength int64
	// Rows is the length of a record batch (or of a dictionary batch's
	// values); 0 for other kinds.
	Rows int64
	// Codec is the body compression of a record or dictionary batch.
	Codec Codec
}

// ErrMalformed is wrapped by every error about a header that does not parse.
var ErrMalformed = errors.New("malformed Arrow IPC message header")

// Field indexes of the tables read here (their order in Message.fbs).
const (
	msgHeaderType = 1
	msgHeader     = 2
	msgBodyLength = 3

	batchLength      = 0
	batchCompression = 3

	dictData = 1

	compressionCodec = 0
)

// ParseHeader reads the flatbuffer Message in b (a Flight data_header, or
// the metadata of an encapsulated message without its prefix).
func ParseHeader(b []byte) (Header, error) {
	h := Header{Codec: CodecNone}
	root, err := rootTable(b)
	if err != nil {
		return h, err
	}
	kind, err := root.uint8Field(msgHeaderType)
	if err != nil {
		return h, err
	}
	h.Kind = Kind(kind)
	if h.BodyLength, err = root.int64Field(msgBodyLength); err != nil {
		return h, err
	}
	if h.BodyLength < 0 {
		return h, fmt.Errorf("%w: negative body length %d", ErrMalformed, h.BodyLength)
	}
	var batch table
	var ok bool
	switch h.Kind {
	case KindRecordBatch:
		if batch, ok, err = root.tableField(msgHeader); err != nil || !ok {
			return h, orMissing(err, "record batch")
		}
	case KindDictionaryBatch:
		dict, ok, err := root.tableField(msgHeader)
		if err != nil || !ok {
			return h, orMissing(err, "dictionary batch")
		}
		if batch, ok, err = dict.tableField(dictData); err != nil || !ok {
			return h, orMissing(err, "dictionary batch data")
		}
	default:
		return h, nil
	}
	if h.Rows, err = batch.int64Field(batchLength); err != nil {
		return h, err
	}
	if h.Rows < 0 {
		return h, fmt.Errorf("%w: negative batch length %d", ErrMalformed, h.Rows)
	}
	comp, ok, err := batch.tableField(batchCompression)
	if err != nil {
		return h, err
	}
	if ok {
		c, err := comp.uint8Field(compressionCodec)
		if err != nil {
			return h, err
		}
		h.Codec = Codec(int8(c))
	}
	return h, nil
}

func orMissing(err error, what string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s header missing", ErrMalformed, what)
}

// table is a flatbuffer table: the buffer and the table's position.
type table struct {
	b      []byte
	pos    int
	vtable int
	vsize  int
}

func rootTable(b []byte) (table, error) {
	if len(b) < 4 {
		return table{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	return tableAt(b, int(binary.LittleEndian.Uint32(b)))
}

func tableAt(b []byte, pos int) (table, error) {
	if pos < 0 || pos > len(b)-4 {
		return table{}, fmt.Errorf("%w: table offset %d outside %d bytes", ErrMalformed, pos, len(b))
	}
	vt := pos - int(int32(binary.LittleEndian.Uint32(b[pos:])))
	if vt < 0 || vt > len(b)-4 {
		return table{}, fmt.Errorf("%w: vtable offset %d outside %d bytes", ErrMalformed, vt, len(b))
	}
	vsize := int(binary.LittleEndian.Uint16(b[vt:]))
	if vsize < 4 || vsize%2 != 0 || vt+vsize > len(b) {
		return table{}, fmt.Errorf("%w: vtable size %d", ErrMalformed, vsize)
	}
	return table{b: b, pos: pos, vtable: vt, vsize: vsize}, nil
}

// field returns the absolute position of field i and whether it is
// present, checking that size bytes fit.
func (t table) field(i, size int) (int, bool, error) {
	slot := 4 + 2*i
	if slot+2 > t.vsize {
		return 0, false, nil
	}
	off := int(binary.LittleEndian.Uint16(t.b[t.vtable+slot:]))
	if off == 0 {
		return 0, false, nil
	}
	p := t.pos + off
	if p+size > len(t.b) {
		return 0, false, fmt.Errorf("%w: field %d at %d outside %d bytes", ErrMalformed, i, p, len(t.b))
	}
	return p, true, nil
}

func (t table) uint8Field(i int) (uint8, error) {
	p, ok, err := t.field(i, 1)
	if err != nil || !ok {
		return 0, err
	}
	return t.b[p], nil
}

func (t table) int64Field(i int) (int64, error) {
	p, ok, err := t.field(i, 8)
	if err != nil || !ok {
		return 0, err
	}
	return int64(binary.LittleEndian.Uint64(t.b[p:])), nil
}

func (t table) tableField(i int) (table, bool, error) {
	p, ok, err := t.field(i, 4)
	if err != nil || !ok {
		return table{}, false, err
	}
	sub, err := tableAt(t.b, p+int(binary.LittleEndian.Uint32(t.b[p:])))
	return sub, err == nil, err
}
