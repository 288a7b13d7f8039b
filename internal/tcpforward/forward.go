// Package tcpforward is a plain layer-4 TCP forwarder: every connection it
// accepts is joined to a new connection to one upstream address and bytes
// are moved both ways untouched. It is the reference `pipemesh bench flight
// --baseline tcp` compares the Flight proxy with: what a second TCP hop
// costs when nothing looks at the bytes.
package tcpforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Forwarder joins accepted connections to Upstream.
type Forwarder struct {
	// Upstream is the host:port every accepted connection is forwarded to.
	Upstream string
	// Buffer, when positive, makes each direction copy through a user-space
	// buffer of this many bytes with read and write. Zero lets Go move bytes
	// between the two TCP sockets with splice(2) on Linux (through a kernel
	// pipe, never through user memory).
	Buffer int
	// Logger gets a warning when the upstream cannot be reached; nil logs
	// nothing.
	Logger *slog.Logger
}

// dialTimeout bounds the dial to the upstream for one connection.
const dialTimeout = 10 * time.Second

// Serve accepts connections on ln and forwards each until ctx ends; then it
// closes ln and every open connection and returns nil. It returns the
// accept error if ln fails otherwise.
func (f *Forwarder) Serve(ctx context.Context, ln net.Listener) error {
	log := f.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		mu    sync.Mutex
		open  = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
		done  = make(chan struct{})
		track = func(c net.Conn, add bool) {
			mu.Lock()
			defer mu.Unlock()
			if add {
				open[c] = struct{}{}
			} else {
				delete(open, c)
			}
		}
	)
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
	}()
	defer func() {
		close(done)
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("tcpforward: accepting on %s: %w", ln.Addr(), err)
		}
		track(c, true)
		wg.Go(func() {
			defer track(c, false)
			defer c.Close()
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			var d net.Dialer
			up, err := d.DialContext(dctx, "tcp", f.Upstream)
			cancel()
			if err != nil {
				log.Warn("tcpforward: upstream unreachable, closing the client connection; is the upstream running?",
					"upstream", f.Upstream, "client", c.RemoteAddr().String(), "err", err)
				return
			}
			track(up, true)
			defer track(up, false)
			defer up.Close()
			f.join(c, up)
		})
	}
}

// join moves bytes both ways between a and b until both directions have
// ended. A direction ends at EOF, which is passed on as a half close so the
// other direction can still finish; an error ends both.
func (f *Forwarder) join(a, b net.Conn) {
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		err := f.copy(dst, src)
		if err != nil {
			// A reset or a failed write: the other direction cannot finish
			// cleanly either.
			a.Close()
			b.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Go(func() { pipe(b, a) })
	pipe(a, b)
	wg.Wait()
}

// copy moves src to dst until EOF. With no Buffer it is io.Copy, which
// for two *net.TCPConn ends in (*TCPConn).ReadFrom and splice(2).
func (f *Forwarder) copy(dst, src net.Conn) error {
	if f.Buffer <= 0 {
		_, err := io.Copy(dst, src)
		return err
	}
	buf := make([]byte, f.Buffer)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
