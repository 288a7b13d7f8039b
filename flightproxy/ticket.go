package flightproxy

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// ticketMagic starts every ticket the proxy issues. Tickets are opaque to
// Flight clients, so the proxy may wrap the upstream's ticket with what it
// needs to serve the DoGet later: which upstream issued it, at which
// location (when the upstream pointed elsewhere than itself), and for
// which dataset (for authorization and metrics). The wrapper is sealed
// with AES-GCM: clients can neither forge it nor read upstream locations
// out of it.
var ticketMagic = []byte("PMT1")

// routedTicket is an upstream ticket and where it must go.
type routedTicket struct {
	route    string // name of the upstream route that issued it
	dataset  string // dataset name (or command kind) it reads
	location string // upstream location to dial; "" for the route's own target
	inner    []byte // the upstream's ticket, untouched
}

var errNotOurs = errors.New("not a pipemesh ticket")

// ticketSealer seals and opens tickets with a key derived from the
// configured ticket key. Safe for concurrent use.
type ticketSealer struct{ aead cipher.AEAD }

func newTicketSealer(key []byte) (*ticketSealer, error) {
	k := sha256.Sum256(append([]byte("pipemesh flight ticket:"), key...))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &ticketSealer{aead: aead}, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// wrap returns t sealed: magic, nonce, then the sealed fields.
func (s *ticketSealer) wrap(t routedTicket) []byte {
	plain := make([]byte, 0, len(t.route)+len(t.dataset)+len(t.location)+len(t.inner)+4*binary.MaxVarintLen32)
	plain = appendString(plain, t.route)
	plain = appendString(plain, t.dataset)
	plain = appendString(plain, t.location)
	plain = appendString(plain, string(t.inner))
	ns := s.aead.NonceSize()
	out := make([]byte, len(ticketMagic)+ns, len(ticketMagic)+ns+len(plain)+s.aead.Overhead())
	copy(out, ticketMagic)
	_, _ = rand.Read(out[len(ticketMagic):])
	return s.aead.Seal(out, out[len(ticketMagic):], plain, ticketMagic)
}

// unwrap opens a ticket sealed by wrap with the same key. It returns
// errNotOurs for a ticket that does not start with the magic (one the
// client got elsewhere) and another error for a damaged or forged one.
func (s *ticketSealer) unwrap(b []byte) (routedTicket, error) {
	var t routedTicket
	ns := s.aead.NonceSize()
	if len(b) < len(ticketMagic)+ns+s.aead.Overhead() || string(b[:len(ticketMagic)]) != string(ticketMagic) {
		return t, errNotOurs
	}
	rest, err := s.aead.Open(nil, b[len(ticketMagic):len(ticketMagic)+ns], b[len(ticketMagic)+ns:], ticketMagic)
	if err != nil {
		return t, errors.New("the ticket does not open: it was altered, or issued by a proxy with another ticket key")
	}
	var parts [4][]byte
	for i := range parts {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return t, fmt.Errorf("truncated ticket")
		}
		parts[i] = rest[k : k+int(n)]
		rest = rest[k+int(n):]
	}
	if len(rest) != 0 {
		return t, fmt.Errorf("%d stray bytes in ticket", len(rest))
	}
	t.route, t.dataset, t.location, t.inner = string(parts[0]), string(parts[1]), string(parts[2]), parts[3]
	return t, nil
}
