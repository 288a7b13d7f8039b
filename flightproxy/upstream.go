package flightproxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Upstream is one Flight service behind the proxy.
type Upstream struct {
	// Name identifies the route in tickets, logs and the errors clients
	// see. Default: "default" for the route without PathPrefix, else the
	// PathPrefix (never Target, which clients must not learn).
	Name string
	// Target is the service's Flight location: grpc://host:port,
	// grpc+tcp://host:port, grpc+tls://host:port, grpc+unix:///path, or a
	// bare host:port (plain TCP).
	Target string
	// PathPrefix routes the datasets whose descriptor path starts with it,
	// on whole path elements ("sales" matches sales and sales/2024, not
	// salesforce). Empty: the default route, which also receives CMD
	// descriptors (Flight SQL), tickets the proxy did not issue, Handshake,
	// ListActions and DoAction.
	PathPrefix string
}

// dialTarget turns a Flight location URI into a gRPC target and whether it
// wants TLS.
func dialTarget(loc string) (target string, useTLS bool, err error) {
	if !strings.Contains(loc, "://") {
		if _, _, err := net.SplitHostPort(loc); err != nil {
			return "", false, fmt.Errorf("flight location %q: want grpc://host:port, grpc+tls://host:port or host:port", loc)
		}
		return loc, false, nil
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", false, fmt.Errorf("flight location %q: %w", loc, err)
	}
	switch u.Scheme {
	case "grpc", "grpc+tcp":
		return u.Host, false, nil
	case "grpc+tls":
		return u.Host, true, nil
	case "grpc+unix":
		return "unix://" + u.Path, false, nil
	}
	return "", false, fmt.Errorf("flight location %q: scheme %q is not a gRPC Flight location (grpc, grpc+tcp, grpc+tls, grpc+unix)", loc, u.Scheme)
}

// isFlightScheme tells whether a location URI is a gRPC Flight service the
// proxy can stand in for.
func isFlightScheme(loc string) bool {
	s, _, ok := strings.Cut(loc, "://")
	if !ok {
		return false
	}
	switch strings.ToLower(s) {
	case "grpc", "grpc+tcp", "grpc+tls", "grpc+unix":
		return true
	}
	return false
}

// route is one configured upstream and its connection.
type route struct {
	Upstream
	prefix string // PathPrefix without surrounding slashes
	target string // gRPC target of Target, for comparing locations
	conn   *grpc.ClientConn
}

// matches reports whether dataset name lies under the route's prefix.
func (r *route) matches(name string) bool {
	if r.prefix == "" {
		return true
	}
	return name == r.prefix || strings.HasPrefix(name, r.prefix+"/")
}

// router picks the upstream for a dataset and keeps the connections the
// proxy dials, the configured ones and the locations upstreams name.
type router struct {
	routes   []*route // longest prefix first; the default is last
	byName   map[string]*route
	dialOpts []grpc.DialOption

	mu    sync.Mutex
	extra map[string]*grpc.ClientConn // by location URI
}

func newRouter(ups []Upstream, dialOpts []grpc.DialOption) (*router, error) {
	if len(ups) == 0 {
		return nil, fmt.Errorf("flightproxy: no upstream Flight service; set --flight-upstream grpc://HOST:PORT")
	}
	defaults := 0
	for _, u := range ups {
		if strings.Trim(u.PathPrefix, "/") == "" {
			defaults++
		}
	}
	if defaults != 1 {
		return nil, fmt.Errorf("flightproxy: %d upstreams without a path prefix; exactly one must be the default route", defaults)
	}
	r := &router{byName: map[string]*route{}, dialOpts: dialOpts, extra: map[string]*grpc.ClientConn{}}
	for _, u := range ups {
		rt := &route{Upstream: u, prefix: strings.Trim(u.PathPrefix, "/")}
		if rt.Name == "" {
			// Not the target: the name reaches clients in errors, and
			// upstream addresses must not.
			rt.Name = "default"
			if rt.prefix != "" {
				rt.Name = rt.prefix
			}
		}
		u.Name = rt.Name
		if _, dup := r.byName[u.Name]; dup {
			r.close()
			return nil, fmt.Errorf("flightproxy: two upstreams named %q; give each a distinct name", u.Name)
		}
		conn, target, err := r.dial(u.Target)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("flightproxy: upstream %q: %w", u.Name, err)
		}
		rt.conn, rt.target = conn, target
		r.byName[u.Name] = rt
		r.routes = append(r.routes, rt)
	}
	sort.SliceStable(r.routes, func(i, j int) bool { return len(r.routes[i].prefix) > len(r.routes[j].prefix) })
	return r, nil
}

func (r *router) dial(loc string) (*grpc.ClientConn, string, error) {
	target, useTLS, err := dialTarget(loc)
	if err != nil {
		return nil, "", err
	}
	creds := insecure.NewCredentials()
	if useTLS {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, r.dialOpts...)...)
	if err != nil {
		return nil, "", err
	}
	return conn, target, nil
}

// forDataset is the route of a dataset name ("" for commands: the default).
func (r *router) forDataset(name string) *route {
	for _, rt := range r.routes {
		if name != "" && rt.matches(name) {
			return rt
		}
	}
	return r.routes[len(r.routes)-1]
}

// defaultRoute is the route without a prefix.
func (r *router) defaultRoute() *route { return r.routes[len(r.routes)-1] }

// connFor returns the connection for a ticket: the route's own, or one to
// the location the upstream named (dialled once, then kept).
func (r *router) connFor(rt *route, location string) (*grpc.ClientConn, error) {
	if location == "" {
		return rt.conn, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.extra[location]; ok {
		return c, nil
	}
	c, _, err := r.dial(location)
	if err != nil {
		return nil, err
	}
	r.extra[location] = c
	return c, nil
}

// sameTarget reports whether location names the route's own target.
func (rt *route) sameTarget(location string) bool {
	t, _, err := dialTarget(location)
	return err == nil && t == rt.target
}

func (r *router) close() {
	for _, rt := range r.byName {
		if rt.conn != nil {
			_ = rt.conn.Close()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.extra {
		_ = c.Close()
	}
}
