package lineage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Config configures a Graph.
type Config struct {
	// DataDir holds the graph's file (lineage.db). Empty: the graph lives
	// in memory only and is lost on restart.
	DataDir string
	// Retention ages out edges not seen for this long, and then nodes left
	// with no edge. Default 7 days.
	Retention time.Duration
	// RateWindow is the span a current rate is averaged over. Default 30s.
	RateWindow time.Duration
	// PersistEvery is how often changes are written to the file and
	// retention is applied. Default 5s.
	PersistEvery time.Duration
	// MaxNodes and MaxEdges cap the graph: names come from clients, so a
	// client inventing topics, datasets or job names could otherwise grow
	// it for the whole retention window. At a cap, observations that would
	// add a node or an edge are dropped (counted, logged); what the graph
	// has keeps counting. Defaults DefaultMaxNodes and DefaultMaxEdges.
	MaxNodes int
	MaxEdges int
	// Logger receives store errors. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock; tests replace it. Default time.Now.
	Now func() time.Time
}

// Defaults for Config fields left zero.
const (
	DefaultRetention    = 7 * 24 * time.Hour
	DefaultRateWindow   = 30 * time.Second
	DefaultPersistEvery = 5 * time.Second
	// An edge holds up to maxSamples rate samples (about 3 KiB at most),
	// so the default caps keep the graph within a few hundred MiB.
	DefaultMaxNodes = 50_000
	DefaultMaxEdges = 50_000
	// maxAttrValues bounds each node's list of principals, client ids,
	// software and hosts, so a node's size stays bounded.
	maxAttrValues = 32
	// maxSamples bounds an edge's rate samples (one per flush).
	maxSamples = 128
	// maxStatements bounds the statements a node keeps (the most recent
	// distinct ones).
	maxStatements = 16
	// MaxStatementBytes bounds the text of each statement a node keeps;
	// longer ones are cut (ClipStatement).
	MaxStatementBytes = 4096
	// MaxNameBytes bounds a node's name; longer ones are cut (ClipName).
	// Names come from clients (a Flight path or job header may be many
	// KiB), and the store's keys hold at most 32 KiB.
	MaxNameBytes = 1024
)

// Node is a node of the graph as the API returns it.
type Node struct {
	ID         string    `json:"id"`
	Type       NodeType  `json:"type"`
	Name       string    `json:"name"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
	Principals []string  `json:"principals,omitempty"`
	ClientIDs  []string  `json:"client_ids,omitempty"`
	Software   []string  `json:"client_software,omitempty"`
	Hosts      []string  `json:"hosts,omitempty"`
	// Queries are the most recent distinct statements (Flight SQL text) a
	// job ran, newest first.
	Queries []Statement `json:"queries,omitempty"`
	// Current rates through the node, from its edges (filled by queries).
	BytesInPerSecond    float64 `json:"bytes_in_per_second"`
	BytesOutPerSecond   float64 `json:"bytes_out_per_second"`
	RecordsInPerSecond  float64 `json:"records_in_per_second"`
	RecordsOutPerSecond float64 `json:"records_out_per_second"`
}

// Edge is an edge of the graph as the API returns it: totals since first
// seen, and current rates over the rate window.
type Edge struct {
	From             string    `json:"from"`
	To               string    `json:"to"`
	Type             EdgeType  `json:"type"`
	Bytes            int64     `json:"bytes"`
	Records          int64     `json:"records"`
	Batches          int64     `json:"batches"`
	Requests         int64     `json:"requests"`
	Errors           int64     `json:"errors"`
	FirstSeen        time.Time `json:"first_seen"`
	LastSeen         time.Time `json:"last_seen"`
	BytesPerSecond   float64   `json:"bytes_per_second"`
	RecordsPerSecond float64   `json:"records_per_second"`
}

type edgeID struct {
	from, to string
	typ      EdgeType
}

type sample struct {
	at             time.Time
	bytes, records int64
}

type edge struct {
	Edge
	samples []sample
}

// Graph is the lineage graph. It is safe for concurrent use.
type Graph struct {
	cfg   Config
	log   *slog.Logger
	store *store

	mu         sync.RWMutex
	nodes      map[string]*Node
	edges      map[edgeID]*edge
	dirtyNodes map[string]bool
	dirtyEdges map[edgeID]bool
	goneNodes  map[string]bool
	goneEdges  map[edgeID]bool
	// dropped counts observations refused at the size caps; logged is
	// what Run last reported.
	dropped, logged int64
}

var _ Observer = (*Graph)(nil)

// Open returns a graph, loading what cfg.DataDir holds.
func Open(cfg Config) (*Graph, error) {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = DefaultRateWindow
	}
	if cfg.PersistEvery <= 0 {
		cfg.PersistEvery = DefaultPersistEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxNodes <= 0 {
		cfg.MaxNodes = DefaultMaxNodes
	}
	if cfg.MaxEdges <= 0 {
		cfg.MaxEdges = DefaultMaxEdges
	}
	g := &Graph{
		cfg: cfg, log: cfg.Logger.With("component", "lineage"),
		nodes: make(map[string]*Node), edges: make(map[edgeID]*edge),
		dirtyNodes: make(map[string]bool), dirtyEdges: make(map[edgeID]bool),
		goneNodes: make(map[string]bool), goneEdges: make(map[edgeID]bool),
	}
	if cfg.DataDir != "" {
		s, err := openStore(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		g.store = s
		if err := s.load(g.nodes, g.edges); err != nil {
			s.close()
			return nil, err
		}
		g.expire(cfg.Now())
	}
	return g, nil
}

// Observe adds a batch of observations to the graph.
func (g *Graph) Observe(obs []Observation) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range obs {
		o := &obs[i]
		if o.From.Name == "" || (o.To.Name == "" && o.To != NodeRef{}) {
			continue
		}
		if len(o.From.Name) > MaxNameBytes || len(o.To.Name) > MaxNameBytes {
			c := *o // the caller's batch stays as it was
			c.From.Name, c.To.Name = ClipName(c.From.Name), ClipName(c.To.Name)
			o = &c
		}
		if !g.room(o) {
			g.dropped++
			continue
		}
		at := o.At
		if at.IsZero() {
			at = g.cfg.Now()
		}
		from := g.touchNode(o.From, at)
		if o.To == (NodeRef{}) {
			addClient(from, o.Client)
			addStatement(from, o.Statement, at)
			continue
		}
		to := g.touchNode(o.To, at)
		switch {
		case o.From.Type == Application || o.From.Type == Job:
			addClient(from, o.Client)
			addStatement(from, o.Statement, at)
		case o.To.Type == Application || o.To.Type == Group || o.To.Type == Job:
			addClient(to, o.Client)
			addStatement(to, o.Statement, at)
		}
		id := edgeID{from.ID, to.ID, o.Type}
		e := g.edges[id]
		if e == nil {
			e = &edge{Edge: Edge{From: from.ID, To: to.ID, Type: o.Type, FirstSeen: at}}
			g.edges[id] = e
			delete(g.goneEdges, id)
		}
		e.Bytes += o.Bytes
		e.Records += o.Records
		e.Batches += o.Batches
		e.Requests += o.Requests
		e.Errors += o.Errors
		if at.After(e.LastSeen) {
			e.LastSeen = at
		}
		if len(e.samples) == maxSamples {
			e.samples = append(e.samples[:0], e.samples[1:]...)
		}
		e.samples = append(e.samples, sample{at, o.Bytes, o.Records})
		g.dirtyEdges[id] = true
	}
}

// room reports whether the nodes and the edge o would add fit under the
// caps. Called with g.mu held.
func (g *Graph) room(o *Observation) bool {
	fromID := o.From.ID()
	newNodes := 0
	if g.nodes[fromID] == nil {
		newNodes++
	}
	if o.To != (NodeRef{}) {
		toID := o.To.ID()
		if g.nodes[toID] == nil && toID != fromID {
			newNodes++
		}
		if g.edges[edgeID{fromID, toID, o.Type}] == nil && len(g.edges) >= g.cfg.MaxEdges {
			return false
		}
	}
	return len(g.nodes)+newNodes <= g.cfg.MaxNodes
}

// Dropped is how many observations the graph refused at its size caps
// since it was opened.
func (g *Graph) Dropped() int64 {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.dropped
}

func (g *Graph) touchNode(ref NodeRef, at time.Time) *Node {
	id := ref.ID()
	n := g.nodes[id]
	if n == nil {
		n = &Node{ID: id, Type: ref.Type, Name: ref.Name, FirstSeen: at}
		g.nodes[id] = n
		delete(g.goneNodes, id)
	}
	if at.After(n.LastSeen) {
		n.LastSeen = at
	}
	g.dirtyNodes[id] = true
	return n
}

func addClient(n *Node, c Client) {
	n.Principals = addValue(n.Principals, c.Principal)
	n.ClientIDs = addValue(n.ClientIDs, c.ClientID)
	n.Software = addValue(n.Software, c.Software)
	n.Hosts = addValue(n.Hosts, c.Host)
}

// addValue inserts v in the sorted list. It never writes into the old
// list's array: snapshots share it and are encoded outside the lock.
func addValue(list []string, v string) []string {
	if v == "" || len(list) >= maxAttrValues {
		return list
	}
	i, found := slices.BinarySearch(list, v)
	if found {
		return list
	}
	return slices.Insert(slices.Clip(list), i, v)
}

// addStatement puts st first in n's statements (counting a repeat), and
// drops the least recent beyond maxStatements. Like addValue it builds a
// new slice.
func addStatement(n *Node, st Statement, at time.Time) {
	if st.Text == "" {
		return
	}
	st.Text = ClipStatement(st.Text)
	if st.Count <= 0 {
		st.Count = 1
	}
	if st.LastSeen.IsZero() {
		st.LastSeen = at
	}
	out := make([]Statement, 0, min(len(n.Queries)+1, maxStatements))
	out = append(out, st)
	for _, old := range n.Queries {
		if old.Text == st.Text {
			out[0].Count += old.Count
			if out[0].Command == "" {
				out[0].Command = old.Command
			}
			if old.LastSeen.After(out[0].LastSeen) {
				out[0].LastSeen = old.LastSeen
			}
			continue
		}
		if len(out) < maxStatements {
			out = append(out, old)
		}
	}
	n.Queries = out
}

// ClipStatement cuts a statement's text to at most MaxStatementBytes on a
// rune boundary, marking the cut with "…", as a node keeps it.
func ClipStatement(s string) string { return clip(s, MaxStatementBytes) }

// ClipName cuts a node name to at most MaxNameBytes the same way, as the
// graph keeps it.
func ClipName(s string) string { return clip(s, MaxNameBytes) }

func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// rate is an edge's bytes and records per second over the rate window.
func (g *Graph) rate(e *edge, now time.Time) (bps, rps float64) {
	start := now.Add(-g.cfg.RateWindow)
	var b, r int64
	for i := len(e.samples) - 1; i >= 0 && e.samples[i].at.After(start); i-- {
		b += e.samples[i].bytes
		r += e.samples[i].records
	}
	if b == 0 && r == 0 {
		return 0, 0
	}
	// A young edge is averaged over its life, not the whole window.
	span := min(g.cfg.RateWindow, now.Sub(e.FirstSeen))
	span = max(span, time.Second)
	return float64(b) / span.Seconds(), float64(r) / span.Seconds()
}

// Query selects part of the graph.
type Query struct {
	// Node, when set, keeps only nodes within Depth edges of it (either
	// direction).
	Node  string
	Depth int
	// Since, when positive, keeps only edges seen within it, and the
	// nodes they join.
	Since time.Duration
}

// View is a selection of the graph, as GET /api/v1/lineage returns it.
type View struct {
	GeneratedAt time.Time `json:"generated_at"`
	Nodes       []Node    `json:"nodes"`
	Edges       []Edge    `json:"edges"`
}

// ErrUnknownNode is returned for a query or lookup of a node not in the graph.
var ErrUnknownNode = errors.New("lineage: no such node")

// Snapshot returns the part of the graph q selects, with current rates.
func (g *Graph) Snapshot(q Query) (View, error) {
	now := g.cfg.Now()
	g.mu.RLock()
	defer g.mu.RUnlock()
	v := View{GeneratedAt: now, Nodes: []Node{}, Edges: []Edge{}}
	var cutoff time.Time
	if q.Since > 0 {
		cutoff = now.Add(-q.Since)
	}
	var edges []*edge
	for _, e := range g.edges {
		if e.LastSeen.Before(cutoff) {
			continue
		}
		edges = append(edges, e)
	}
	keep := map[string]bool{}
	if q.Node != "" {
		if g.nodes[q.Node] == nil {
			return v, fmt.Errorf("%w: %q", ErrUnknownNode, q.Node)
		}
		keep[q.Node] = true
		frontier := []string{q.Node}
		for d := 0; d < q.Depth && len(frontier) > 0; d++ {
			var next []string
			for _, e := range edges {
				for _, pair := range [2][2]string{{e.From, e.To}, {e.To, e.From}} {
					if slices.Contains(frontier, pair[0]) && !keep[pair[1]] {
						keep[pair[1]] = true
						next = append(next, pair[1])
					}
				}
			}
			frontier = next
		}
	} else {
		for _, e := range edges {
			keep[e.From], keep[e.To] = true, true
		}
		if q.Since <= 0 {
			for id := range g.nodes {
				keep[id] = true
			}
		}
	}
	rates := map[string]*Node{}
	for id := range keep {
		n := *g.nodes[id]
		n.BytesInPerSecond, n.BytesOutPerSecond, n.RecordsInPerSecond, n.RecordsOutPerSecond = 0, 0, 0, 0
		v.Nodes = append(v.Nodes, n)
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	for i := range v.Nodes {
		rates[v.Nodes[i].ID] = &v.Nodes[i]
	}
	for _, e := range edges {
		if !keep[e.From] || !keep[e.To] {
			continue
		}
		out := e.Edge
		out.BytesPerSecond, out.RecordsPerSecond = g.rate(e, now)
		v.Edges = append(v.Edges, out)
		rates[e.From].BytesOutPerSecond += out.BytesPerSecond
		rates[e.From].RecordsOutPerSecond += out.RecordsPerSecond
		rates[e.To].BytesInPerSecond += out.BytesPerSecond
		rates[e.To].RecordsInPerSecond += out.RecordsPerSecond
	}
	sort.Slice(v.Edges, func(i, j int) bool {
		a, b := v.Edges[i], v.Edges[j]
		return a.From+"\x00"+a.To+"\x00"+string(a.Type) < b.From+"\x00"+b.To+"\x00"+string(b.Type)
	})
	return v, nil
}

// NodeDetail is one node with every edge into or out of it, as
// GET /api/v1/lineage/nodes/{id} returns it.
type NodeDetail struct {
	Node Node   `json:"node"`
	In   []Edge `json:"in"`
	Out  []Edge `json:"out"`
}

// Node returns the node with id and its edges.
func (g *Graph) Node(id string) (NodeDetail, error) {
	v, err := g.Snapshot(Query{Node: id, Depth: 1})
	if err != nil {
		return NodeDetail{}, err
	}
	d := NodeDetail{In: []Edge{}, Out: []Edge{}}
	for _, n := range v.Nodes {
		if n.ID == id {
			d.Node = n
		}
	}
	for _, e := range v.Edges {
		switch id {
		case e.To:
			d.In = append(d.In, e)
		case e.From:
			d.Out = append(d.Out, e)
		}
	}
	return d, nil
}

// Run persists changes and applies retention every PersistEvery until ctx
// ends. Close saves the rest.
func (g *Graph) Run(ctx context.Context) {
	t := time.NewTicker(g.cfg.PersistEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.mu.Lock()
			dropped := g.dropped - g.logged
			g.logged = g.dropped
			g.mu.Unlock()
			if dropped > 0 {
				g.log.Warn("lineage graph full: observations of new nodes and edges dropped; they are missing from the graph until retention frees room",
					"dropped", dropped, "max_nodes", g.cfg.MaxNodes, "max_edges", g.cfg.MaxEdges, "retention", g.cfg.Retention)
			}
			g.expire(g.cfg.Now())
			if err := g.Persist(); err != nil {
				g.log.Error("saving the lineage graph failed; will retry", "dir", g.cfg.DataDir, "err", err)
			}
		}
	}
}

// expire removes edges not seen within the retention window, then nodes
// with no edge left that were not seen within it either.
func (g *Graph) expire(now time.Time) {
	cutoff := now.Add(-g.cfg.Retention)
	g.mu.Lock()
	defer g.mu.Unlock()
	linked := map[string]bool{}
	for id, e := range g.edges {
		if e.LastSeen.Before(cutoff) {
			delete(g.edges, id)
			delete(g.dirtyEdges, id)
			g.goneEdges[id] = true
			continue
		}
		linked[e.From], linked[e.To] = true, true
	}
	for id, n := range g.nodes {
		if !linked[id] && n.LastSeen.Before(cutoff) {
			delete(g.nodes, id)
			delete(g.dirtyNodes, id)
			g.goneNodes[id] = true
		}
	}
}

// Persist writes what changed since the last call to the file.
func (g *Graph) Persist() error {
	if g.store == nil {
		return nil
	}
	g.mu.Lock()
	nodes := make([]Node, 0, len(g.dirtyNodes))
	for id := range g.dirtyNodes {
		nodes = append(nodes, *g.nodes[id])
	}
	edges := make([]Edge, 0, len(g.dirtyEdges))
	for id := range g.dirtyEdges {
		edges = append(edges, g.edges[id].Edge)
	}
	goneNodes := make([]string, 0, len(g.goneNodes))
	for id := range g.goneNodes {
		goneNodes = append(goneNodes, id)
	}
	goneEdges := make([]edgeID, 0, len(g.goneEdges))
	for id := range g.goneEdges {
		goneEdges = append(goneEdges, id)
	}
	clear(g.dirtyNodes)
	clear(g.dirtyEdges)
	clear(g.goneNodes)
	clear(g.goneEdges)
	g.mu.Unlock()
	if err := g.store.save(nodes, edges, goneNodes, goneEdges); err != nil {
		// Put them back so the next call retries.
		g.mu.Lock()
		for _, n := range nodes {
			if g.nodes[n.ID] != nil {
				g.dirtyNodes[n.ID] = true
			}
		}
		for _, e := range edges {
			id := edgeID{e.From, e.To, e.Type}
			if g.edges[id] != nil {
				g.dirtyEdges[id] = true
			}
		}
		for _, id := range goneNodes {
			g.goneNodes[id] = true
		}
		for _, id := range goneEdges {
			g.goneEdges[id] = true
		}
		g.mu.Unlock()
		return err
	}
	return nil
}

// Close persists what is pending and closes the file.
func (g *Graph) Close() error {
	if g.store == nil {
		return nil
	}
	err := g.Persist()
	return errors.Join(err, g.store.close())
}

// ParseNodeID splits a node id into its type and name.
func ParseNodeID(id string) (NodeRef, bool) {
	typ, name, ok := strings.Cut(id, ":")
	if !ok || name == "" {
		return NodeRef{}, false
	}
	switch NodeType(typ) {
	case Application, Topic, Group, FlightDataset, Job:
		return NodeRef{NodeType(typ), name}, true
	}
	return NodeRef{}, false
}
