package devbroker

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/pipemesh/pipemesh/protocol"
)

// guardListener hands kfake connections that close, as a Kafka broker does,
// when a client sends an API key kmsg does not know. kfake itself
// dereferences nil on such a key and takes the whole process down, which for
// `pipemesh demo` would mean one odd client ends the demo; the proxy passes
// unknown keys through, so they do reach the broker.
type guardListener struct{ net.Listener }

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &guardConn{Conn: c, r: protocol.NewReader(c, 0, 64<<10)}, nil
}

// guardConn reads whole frames, checks each one's API key, and hands them on
// unchanged.
type guardConn struct {
	net.Conn
	r       *protocol.Reader
	pending []byte
}

func (g *guardConn) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		body, err := g.r.Next()
		if err != nil {
			return 0, err
		}
		if len(body) >= 2 {
			key := int16(binary.BigEndian.Uint16(body))
			if _, ok := protocol.MaxVersion(key); !ok {
				g.Conn.Close()
				return 0, fmt.Errorf("devbroker: client sent unknown API key %d; closing the connection as a Kafka broker does", key)
			}
		}
		g.pending = g.r.Frame()
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}
