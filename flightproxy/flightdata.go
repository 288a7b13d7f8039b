package flightproxy

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/mem"
)

// Field numbers of FlightData in Flight.proto.
const (
	fdDescriptor  = 1
	fdDataHeader  = 2
	fdAppMetadata = 3
	fdDataBody    = 1000
)

// flightDataView is what the proxy reads of one FlightData frame: the
// descriptor and the IPC header as slices (into the frame when contiguous,
// else copied into scratch), and the body's length. The body itself is
// skipped, never read.
type flightDataView struct {
	descriptor []byte
	header     []byte
	bodyLen    int
}

var errBadFlightData = errors.New("malformed FlightData message")

// cursor walks a BufferSlice as one byte sequence without joining it.
type cursor struct {
	bufs mem.BufferSlice
	i    int    // index of the next buffer
	cur  []byte // rest of the current buffer
}

func (c *cursor) next() bool {
	for len(c.cur) == 0 {
		if c.i >= len(c.bufs) {
			return false
		}
		c.cur = c.bufs[c.i].ReadOnlyData()
		c.i++
	}
	return true
}

func (c *cursor) done() bool { return !c.next() }

func (c *cursor) varint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if !c.next() {
			return 0, fmt.Errorf("%w: truncated varint", errBadFlightData)
		}
		b := c.cur[0]
		c.cur = c.cur[1:]
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: varint over 64 bits", errBadFlightData)
}

func (c *cursor) skip(n int) error {
	for n > 0 {
		if !c.next() {
			return fmt.Errorf("%w: field runs past the end", errBadFlightData)
		}
		k := min(n, len(c.cur))
		c.cur = c.cur[k:]
		n -= k
	}
	return nil
}

// bytes returns the next n bytes: a slice of the buffer when they lie in
// one, else a copy appended to scratch.
func (c *cursor) bytes(n int, scratch *[]byte) ([]byte, error) {
	if !c.next() && n > 0 {
		return nil, fmt.Errorf("%w: field runs past the end", errBadFlightData)
	}
	if n <= len(c.cur) {
		b := c.cur[:n:n]
		c.cur = c.cur[n:]
		return b, nil
	}
	start := len(*scratch)
	for n > 0 {
		if !c.next() {
			return nil, fmt.Errorf("%w: field runs past the end", errBadFlightData)
		}
		k := min(n, len(c.cur))
		*scratch = append(*scratch, c.cur[:k]...)
		c.cur = c.cur[k:]
		n -= k
	}
	return (*scratch)[start:], nil
}

// parseFlightData reads the fields the proxy needs from a FlightData frame.
// scratch is reused for fields that straddle buffers; results may alias it.
func parseFlightData(data mem.BufferSlice, scratch *[]byte) (flightDataView, error) {
	var v flightDataView
	c := cursor{bufs: data}
	*scratch = (*scratch)[:0]
	for !c.done() {
		tag, err := c.varint()
		if err != nil {
			return v, err
		}
		num, typ := tag>>3, tag&7
		switch typ {
		case 0: // varint: no FlightData field has one, skip it for forward compatibility
			if _, err := c.varint(); err != nil {
				return v, err
			}
			continue
		case 1:
			if err := c.skip(8); err != nil {
				return v, err
			}
			continue
		case 5:
			if err := c.skip(4); err != nil {
				return v, err
			}
			continue
		case 2:
		default:
			return v, fmt.Errorf("%w: wire type %d of field %d", errBadFlightData, typ, num)
		}
		n, err := c.varint()
		if err != nil {
			return v, err
		}
		if n > uint64(data.Len()) {
			return v, fmt.Errorf("%w: field %d of %d bytes in a %d-byte message", errBadFlightData, num, n, data.Len())
		}
		switch num {
		case fdDescriptor:
			v.descriptor, err = c.bytes(int(n), scratch)
		case fdDataHeader:
			v.header, err = c.bytes(int(n), scratch)
		case fdDataBody:
			v.bodyLen = int(n)
			err = c.skip(int(n))
		default:
			err = c.skip(int(n))
		}
		if err != nil {
			return v, err
		}
	}
	return v, nil
}
