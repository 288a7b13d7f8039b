//go:build !unix

package flightproxy

import "net"

// socketPair falls back to an in-memory pipe where Unix sockets are missing.
func socketPair() (net.Conn, net.Conn, error) {
	a, b := net.Pipe()
	return a, b, nil
}
