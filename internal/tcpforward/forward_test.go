package tcpforward

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// payload is n pseudo-random bytes, different for each seed.
func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// startForwarder serves f on a loopback port until the test ends and
// returns the port's address and Serve's result.
func startForwarder(t *testing.T, f *Forwarder) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return ln.Addr().String(), done
}

// TestForwarderMovesBytesBothWays: the client and the upstream each send a
// different 3 MiB stream at the same time, then half-close; each receives
// the other's stream byte for byte and then EOF, over several connections
// at once, with splice and with a small user-space buffer.
func TestForwarderMovesBytesBothWays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		buffer int
	}{{"splice", 0}, {"buffer 4KiB", 4 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			up, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer up.Close()
			const conns, size = 3, 3 << 20

			// The upstream: for each connection, send down[i] and read up
			// to EOF at the same time, and report what it read.
			type got struct {
				idx  int
				data []byte
				err  error
			}
			upstreamGot := make(chan got, conns)
			go func() {
				for {
					c, err := up.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						var hdr [1]byte // the client's first byte names its connection
						if _, err := io.ReadFull(c, hdr[:]); err != nil {
							upstreamGot <- got{err: err}
							return
						}
						i := int(hdr[0])
						var wg sync.WaitGroup
						wg.Go(func() {
							_, _ = c.Write(payload(size, uint64(100+i)))
							_ = c.(*net.TCPConn).CloseWrite()
						})
						b, err := io.ReadAll(c)
						wg.Wait()
						upstreamGot <- got{idx: i, data: b, err: err}
					}()
				}
			}()

			addr, _ := startForwarder(t, &Forwarder{Upstream: up.Addr().String(), Buffer: tc.buffer})
			clientGot := make([][]byte, conns)
			var wg sync.WaitGroup
			for i := range conns {
				wg.Go(func() {
					c, err := net.Dial("tcp", addr)
					if !assert.NoError(t, err) {
						return
					}
					defer c.Close()
					var send sync.WaitGroup
					send.Go(func() {
						_, err := c.Write(append([]byte{byte(i)}, payload(size, uint64(i))...))
						assert.NoError(t, err)
						assert.NoError(t, c.(*net.TCPConn).CloseWrite())
					})
					b, err := io.ReadAll(c)
					assert.NoError(t, err)
					send.Wait()
					clientGot[i] = b
				})
			}
			wg.Wait()
			for i := range conns {
				assert.True(t, bytes.Equal(payload(size, uint64(100+i)), clientGot[i]),
					"connection %d: the client got %d bytes, not the upstream's stream", i, len(clientGot[i]))
			}
			for range conns {
				g := <-upstreamGot
				require.NoError(t, g.err)
				assert.True(t, bytes.Equal(payload(size, uint64(g.idx)), g.data),
					"connection %d: the upstream got %d bytes, not the client's stream", g.idx, len(g.data))
			}
		})
	}
}

// TestForwarderClosesTheClientWhenTheUpstreamIsDown: a connection whose
// upstream refuses is closed at once, and the forwarder keeps serving.
func TestForwarderClosesTheClientWhenTheUpstreamIsDown(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := dead.Addr().String()
	dead.Close()
	addr, _ := startForwarder(t, &Forwarder{Upstream: deadAddr})
	for range 2 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, err := c.Read(make([]byte, 1))
		assert.Zero(t, n)
		assert.ErrorIs(t, err, io.EOF)
		c.Close()
	}
}

// TestForwarderServeEndsWithItsContext: cancelling the context ends Serve
// with nil and closes connections still open.
func TestForwarderServeEndsWithItsContext(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent, until the test ends
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Forwarder{Upstream: up.Addr().String()}).Serve(ctx, ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Read(make([]byte, 1))
	assert.Error(t, err, "the client connection is closed")
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "closed, not timed out: %v", err)
}
