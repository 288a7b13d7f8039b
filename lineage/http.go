package lineage

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Mux is where the graph's handlers are mounted (http.ServeMux, the admin
// server).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// maxQueryDepth bounds ?depth= so one request cannot walk without end.
const maxQueryDepth = 20

// Register mounts the lineage API on mux:
//
//	GET /api/v1/lineage?node=ID&depth=N&since=DURATION  the graph (or part of it)
//	GET /api/v1/lineage/nodes/{id}                      one node and its edges
func (g *Graph) Register(mux Mux) {
	mux.Handle("GET /api/v1/lineage", http.HandlerFunc(g.serveGraph))
	mux.Handle("GET /api/v1/lineage/nodes/{id...}", http.HandlerFunc(g.serveNode))
}

// ParseQuery reads node, depth and since from URL values; errors name the
// parameter and what it takes.
func ParseQuery(get func(string) string) (Query, error) {
	q := Query{Node: get("node"), Depth: 2}
	if s := get("depth"); s != "" {
		d, err := strconv.Atoi(s)
		if err != nil || d < 0 || d > maxQueryDepth {
			return q, fmt.Errorf("depth=%q: want a whole number from 0 to %d", s, maxQueryDepth)
		}
		q.Depth = d
	}
	if s := get("since"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return q, fmt.Errorf("since=%q: want a positive duration such as 5m, 1h or 24h", s)
		}
		q.Since = d
	}
	return q, nil
}

func (g *Graph) serveGraph(w http.ResponseWriter, r *http.Request) {
	q, err := ParseQuery(r.URL.Query().Get)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	v, err := g.Snapshot(q)
	if err != nil {
		httpError(w, statusOf(err), err)
		return
	}
	writeJSON(w, v)
}

func (g *Graph) serveNode(w http.ResponseWriter, r *http.Request) {
	d, err := g.Node(r.PathValue("id"))
	if err != nil {
		httpError(w, statusOf(err), err)
		return
	}
	writeJSON(w, d)
}

func statusOf(err error) int {
	if errors.Is(err, ErrUnknownNode) {
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
