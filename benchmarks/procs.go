package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// embeddedBrokers is the size of the embedded upstream cluster.
const embeddedBrokers = 3

// child is a pipemesh process the harness started: the upstream broker or
// the proxy. Its output is kept (the tail) for error messages.
type child struct {
	role string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{} // closed once the process has been waited for
	err  error         // the Wait result, once done is closed
}

// startChild runs binary with args as the process for role.
func startChild(role, binary string, args []string, log *slog.Logger) (*child, error) {
	c := &child{role: role, out: &tailBuffer{max: 8 << 10}, done: make(chan struct{})}
	c.cmd = exec.Command(binary, args...)
	c.cmd.Stdout = c.out
	c.cmd.Stderr = c.out
	c.cmd.SysProcAttr = childProcAttr()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("benchmarks: starting the %s (%s %s): %w", role, binary, strings.Join(args, " "), err)
	}
	log.Debug("started", "role", role, "pid", c.cmd.Process.Pid, "args", strings.Join(args, " "))
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// pid is the process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the process has ended, and why.
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("benchmarks: the %s (pid %d) exited: %v; its last output:\n%s", c.role, c.pid(), c.err, c.out.String())
	default:
		return nil
	}
}

// stop ends the process: an interrupt first so it shuts down cleanly, a
// kill if it has not gone within a few seconds, and always a wait.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimRight(string(t.b), "\n")
}

// freePorts finds n consecutive free TCP ports on 127.0.0.1 and returns the
// first. Another process may take one before the child binds it; the caller
// retries then.
func freePorts(n int) (int, error) {
	var lastErr error
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("benchmarks: finding a free port: %w", err)
		}
		base := ln.Addr().(*net.TCPAddr).Port
		held := []net.Listener{ln}
		ok := base+n-1 <= 65535
		for i := 1; ok && i < n; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				lastErr, ok = err, false
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("benchmarks: no %d consecutive free ports on 127.0.0.1: %v", n, lastErr)
}

// embedded is the upstream broker and the proxy the harness runs itself.
type embedded struct {
	broker, proxy *child
	direct, addr  string // broker and proxy bootstrap addresses
}

// startEmbedded starts `pipemesh broker [--sink]` and `pipemesh serve` in
// front of it as child processes, and waits until both answer Kafka
// requests.
func startEmbedded(ctx context.Context, binary, target string, log *slog.Logger) (*embedded, error) {
	if binary == "" {
		return nil, errors.New("benchmarks: no pipemesh binary to start the broker and proxy with (RunOptions.Binary)")
	}
	e := &embedded{}
	var err error
	// A port found free may be taken before the child binds it: retry.
	for attempt := 0; attempt < 3; attempt++ {
		var base int
		if base, err = freePorts(embeddedBrokers); err != nil {
			return nil, err
		}
		e.direct = "127.0.0.1:" + strconv.Itoa(base)
		args := []string{"broker"}
		if target == "sink" {
			args = append(args, "--sink")
		}
		args = append(args, "--listen", e.direct, "--brokers", strconv.Itoa(embeddedBrokers))
		if e.broker, err = startChild(target+" broker", binary, args, log); err != nil {
			return nil, err
		}
		if err = waitKafka(ctx, e.broker, e.direct, embeddedBrokers); err == nil {
			break
		}
		e.broker.stop()
		e.broker = nil
	}
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 3; attempt++ {
		var port int
		if port, err = freePorts(1); err != nil {
			break
		}
		e.addr = "127.0.0.1:" + strconv.Itoa(port)
		args := []string{"serve", "--kafka-listen", e.addr, "--broker-port-base", "-1",
			"--kafka-upstream", e.direct, "--admin-listen", "127.0.0.1:0", "--log-level", "warn"}
		if e.proxy, err = startChild("proxy", binary, args, log); err != nil {
			break
		}
		if err = waitKafka(ctx, e.proxy, e.addr, embeddedBrokers); err == nil {
			return e, nil
		}
		e.proxy.stop()
		e.proxy = nil
	}
	e.close()
	return nil, err
}

// close stops the proxy, then the broker.
func (e *embedded) close() {
	if e.proxy != nil {
		e.proxy.stop()
	}
	if e.broker != nil {
		e.broker.stop()
	}
}

// readyTimeout bounds the wait for a child to answer Kafka requests.
const readyTimeout = 30 * time.Second

// waitKafka waits until addr answers a Metadata request listing brokers
// brokers, or c exits, or readyTimeout passes.
func waitKafka(ctx context.Context, c *child, addr string, brokers int) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		if err := c.exited(); err != nil {
			return err
		}
		n, err := brokerCount(ctx, addr)
		if err == nil && n >= brokers {
			return nil
		}
		lastErr = err
		if err == nil {
			lastErr = fmt.Errorf("metadata lists %d brokers, want %d", n, brokers)
		}
		select {
		case <-ctx.Done():
			if err := c.exited(); err != nil {
				return err
			}
			return fmt.Errorf("benchmarks: the %s at %s did not answer Kafka requests within %s: %v; its last output:\n%s",
				c.role, addr, readyTimeout, lastErr, c.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// brokerCount asks addr for cluster metadata and counts the brokers.
func brokerCount(ctx context.Context, addr string) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ClientID("pipemesh-bench"),
		kgo.RetryTimeout(time.Second), kgo.RequestRetries(0))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		return 0, err
	}
	return len(md.Brokers), nil
}
