package kafkaproxy

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// maxBrokers bounds the listeners one proxy binds, so a broker that
// invents node ids cannot exhaust the proxy's ports and file descriptors.
const maxBrokers = 1024

// broker is one upstream broker and the proxy listener that stands for it.
type broker struct {
	id       int32
	upstream string // host:port of the real broker
	ln       net.Listener
	port     int32 // advertised port
}

// brokerMap maps node ids to upstream addresses and proxy listeners. A node
// keeps its listener for the proxy's lifetime: brokers come back, and a
// client that cached the address must find the same port.
type brokerMap struct {
	p    *Proxy
	mu   sync.Mutex
	byID map[int32]*broker
}

func newBrokerMap(p *Proxy) *brokerMap { return &brokerMap{p: p, byID: make(map[int32]*broker)} }

// advertise records that node id lives at host:port upstream, makes sure it
// has a listener, and returns the address clients are to be told instead.
// The listener is bound before this returns, so a client that reads the
// rewritten response can connect at once.
func (m *brokerMap) advertise(id int32, host string, port int32) (string, int32, error) {
	up := net.JoinHostPort(host, strconv.Itoa(int(port)))
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.byID[id]; ok {
		if b.upstream != up {
			m.p.log.Info("broker moved upstream; new connections follow it", "node_id", id, "from", b.upstream, "to", up)
			b.upstream = up
		}
		return m.p.cfg.AdvertiseHost, b.port, nil
	}
	if err := m.p.ctx.Err(); err != nil {
		return "", 0, fmt.Errorf("kafkaproxy: shutting down, not listening for broker %d: %w", id, err)
	}
	if len(m.byID) >= maxBrokers {
		return "", 0, fmt.Errorf("kafkaproxy: broker %d at %s would be listener number %d, above the %d the proxy binds; is the upstream sending bogus node ids?", id, up, len(m.byID)+1, maxBrokers)
	}
	if id < 0 {
		return "", 0, fmt.Errorf("kafkaproxy: broker with negative node id %d at %s", id, up)
	}
	bindPort := 0
	if base := m.p.cfg.BrokerPortBase; base > 0 {
		bindPort = base + int(id)
		if bindPort > 65535 {
			return "", 0, fmt.Errorf("kafkaproxy: broker %d maps to port %d, above 65535; lower --broker-port-base", id, bindPort)
		}
	}
	host0, _, _ := net.SplitHostPort(m.p.cfg.Listen)
	addr := net.JoinHostPort(host0, strconv.Itoa(bindPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", 0, fmt.Errorf("kafkaproxy: cannot listen for broker %d on %s: %w; free the port or change --broker-port-base", id, addr, err)
	}
	b := &broker{id: id, upstream: up, ln: ln, port: int32(ln.Addr().(*net.TCPAddr).Port)}
	m.byID[id] = b
	m.p.m.brokers.Set(float64(len(m.byID)))
	m.p.log.Info("listening for broker", "node_id", id, "listen", ln.Addr().String(),
		"advertised", net.JoinHostPort(m.p.cfg.AdvertiseHost, strconv.Itoa(int(b.port))), "upstream", up)
	m.p.wg.Add(1)
	go func() { defer m.p.wg.Done(); m.p.acceptLoop(ln, id) }()
	return m.p.cfg.AdvertiseHost, b.port, nil
}

// upstream returns the current upstream address of node id.
func (m *brokerMap) upstream(id int32) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.byID[id]
	if !ok {
		return "", false
	}
	return b.upstream, true
}

// advertised returns what clients are told, by node id.
func (m *brokerMap) advertised() map[int32]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int32]string, len(m.byID))
	for id, b := range m.byID {
		out[id] = net.JoinHostPort(m.p.cfg.AdvertiseHost, strconv.Itoa(int(b.port)))
	}
	return out
}

// upstreamAddrs returns every upstream broker address the proxy knows.
func (m *brokerMap) upstreamAddrs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.byID))
	for _, b := range m.byID {
		out = append(out, b.upstream)
	}
	return out
}

func (m *brokerMap) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.byID {
		b.ln.Close()
	}
}
