//go:build unix

package flightproxy

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// socketPair returns two connected Unix stream sockets: kernel-buffered,
// and writev-capable for the relay.
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, nil, err
	}
	a, err := fileConn(fds[0], "relay")
	if err != nil {
		_ = syscall.Close(fds[1])
		return nil, nil, err
	}
	b, err := fileConn(fds[1], "grpc")
	if err != nil {
		_ = a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

func fileConn(fd int, name string) (net.Conn, error) {
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return nil, fmt.Errorf("socket pair %s end: %w", name, err)
	}
	return c, nil
}
