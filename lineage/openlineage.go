package lineage

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"
)

// OpenLineage export. Every node that moves data (an application, a
// consumer group, a job) is an OpenLineage job with one long-running run:
// a streaming job in the spec's terms. The topics and datasets it reads are
// its inputs and those it writes its outputs, each with a statistics facet
// holding the bytes and records counted so far. See docs/lineage.md.
//
// Spec: https://openlineage.io/spec/2-0-2/OpenLineage.json (RunEvent), the
// JobTypeJobFacet, the Input/OutputStatistics dataset facets, and the
// naming spec for Kafka datasets (namespace kafka://{host}:{port}, name the
// topic).
const (
	olSchemaURL      = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
	olJobTypeURL     = "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet"
	olOutputStatsURL = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet"
	olInputStatsURL  = "https://openlineage.io/spec/facets/1-0-1/InputStatisticsInputDatasetFacet.json#/$defs/InputStatisticsInputDatasetFacet"
	// Producer is the URI OpenLineage events name as their producer.
	Producer = "https://github.com/pipemesh/pipemesh"
)

// Defaults for ExportConfig.
const (
	DefaultJobNamespace    = "pipemesh"
	DefaultPushEvery       = 30 * time.Second
	DefaultFlightNamespace = "flight://pipemesh"
)

// ExportConfig configures the OpenLineage export.
type ExportConfig struct {
	// Namespace is the job namespace. Default "pipemesh".
	Namespace string
	// KafkaNamespace is the dataset namespace of topics:
	// kafka://{bootstrap host}:{port}, the bootstrap address clients use.
	KafkaNamespace string
	// FlightNamespace is the dataset namespace of Flight datasets.
	// Default flight://pipemesh.
	FlightNamespace string
	// URL, when set, receives the events: one POST per event, as
	// Marquez's /api/v1/lineage and the OpenLineage HTTP transport expect.
	URL string
	// Every is how often to push. Default 30s.
	Every time.Duration
	// Client sends the pushes. Default: a client with a 10s timeout.
	Client *http.Client
	// Logger receives push failures. Default slog.Default().
	Logger *slog.Logger
}

// Exporter turns the graph into OpenLineage run events.
type Exporter struct {
	g        *Graph
	cfg      ExportConfig
	log      *slog.Logger
	lastPush time.Time
}

// NewExporter returns an exporter of g.
func NewExporter(g *Graph, cfg ExportConfig) *Exporter {
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultJobNamespace
	}
	if cfg.FlightNamespace == "" {
		cfg.FlightNamespace = DefaultFlightNamespace
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultPushEvery
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Exporter{g: g, cfg: cfg, log: cfg.Logger.With("component", "openlineage")}
}

// RunEvent is an OpenLineage RunEvent, with the fields pipemesh fills.
type RunEvent struct {
	EventType string     `json:"eventType"`
	EventTime time.Time  `json:"eventTime"`
	Producer  string     `json:"producer"`
	SchemaURL string     `json:"schemaURL"`
	Run       OLRun      `json:"run"`
	Job       OLJob      `json:"job"`
	Inputs    []OLInput  `json:"inputs"`
	Outputs   []OLOutput `json:"outputs"`
}

// OLRun is a RunEvent's run.
type OLRun struct {
	RunID  string         `json:"runId"`
	Facets map[string]any `json:"facets,omitempty"`
}

// OLJob is a RunEvent's job.
type OLJob struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Facets    map[string]any `json:"facets"`
}

// OLInput is an input dataset.
type OLInput struct {
	Namespace   string         `json:"namespace"`
	Name        string         `json:"name"`
	Facets      map[string]any `json:"facets,omitempty"`
	InputFacets map[string]any `json:"inputFacets,omitempty"`
}

// OLOutput is an output dataset.
type OLOutput struct {
	Namespace    string         `json:"namespace"`
	Name         string         `json:"name"`
	Facets       map[string]any `json:"facets,omitempty"`
	OutputFacets map[string]any `json:"outputFacets,omitempty"`
}

// olStatistics is the body of the input and output statistics facets.
type olStatistics struct {
	Producer  string `json:"_producer"`
	SchemaURL string `json:"_schemaURL"`
	RowCount  int64  `json:"rowCount"`
	Size      int64  `json:"size"`
}

// Events returns one RUNNING event per job in the part of the graph q
// selects, at now.
func (x *Exporter) Events(q Query) ([]RunEvent, error) {
	v, err := x.g.Snapshot(q)
	if err != nil {
		return nil, err
	}
	nodes := make(map[string]Node, len(v.Nodes))
	for _, n := range v.Nodes {
		nodes[n.ID] = n
	}
	events := map[string]*RunEvent{}
	event := func(n Node) *RunEvent {
		if ev := events[n.ID]; ev != nil {
			return ev
		}
		ev := &RunEvent{
			EventType: "RUNNING", EventTime: v.GeneratedAt, Producer: Producer, SchemaURL: olSchemaURL,
			Run: OLRun{RunID: runID(x.cfg.Namespace, n)},
			Job: OLJob{Namespace: x.cfg.Namespace, Name: n.ID, Facets: map[string]any{
				"jobType": map[string]any{
					"_producer": Producer, "_schemaURL": olJobTypeURL,
					"processingType": "STREAMING", "integration": "PIPEMESH", "jobType": jobType(n.Type),
				},
			}},
			Inputs: []OLInput{}, Outputs: []OLOutput{},
		}
		events[n.ID] = ev
		return ev
	}
	for _, e := range v.Edges {
		from, to := nodes[e.From], nodes[e.To]
		switch {
		case isJob(from.Type) && isDataset(to.Type):
			ns, name := x.dataset(to)
			ev := event(from)
			ev.Outputs = append(ev.Outputs, OLOutput{Namespace: ns, Name: name, OutputFacets: map[string]any{
				"outputStatistics": olStatistics{Producer, olOutputStatsURL, e.Records, e.Bytes},
			}})
		case isDataset(from.Type) && isJob(to.Type):
			ns, name := x.dataset(from)
			ev := event(to)
			ev.Inputs = append(ev.Inputs, OLInput{Namespace: ns, Name: name, InputFacets: map[string]any{
				"inputStatistics": olStatistics{Producer, olInputStatsURL, e.Records, e.Bytes},
			}})
		}
	}
	out := make([]RunEvent, 0, len(events))
	for _, ev := range events {
		out = append(out, *ev)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Job.Name < out[j].Job.Name })
	return out, nil
}

func isJob(t NodeType) bool     { return t == Application || t == Group || t == Job }
func isDataset(t NodeType) bool { return t == Topic || t == FlightDataset }

func jobType(t NodeType) string {
	switch t {
	case Application:
		return "KAFKA_CLIENT"
	case Group:
		return "KAFKA_CONSUMER_GROUP"
	}
	return "JOB"
}

func (x *Exporter) dataset(n Node) (namespace, name string) {
	if n.Type == Topic {
		return x.cfg.KafkaNamespace, n.Name
	}
	return x.cfg.FlightNamespace, n.Name
}

// runID is a stable UUID (version 5 layout, SHA-1) for the one run of a
// streaming job: the same across pushes and restarts, new if the job ages
// out and comes back.
func runID(namespace string, n Node) string {
	h := sha1.Sum([]byte(namespace + "\x00" + n.ID + "\x00" + n.FirstSeen.UTC().Format(time.RFC3339Nano)))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// Register mounts GET /api/v1/openlineage (the graph as run events; the same
// node, depth and since filters as /api/v1/lineage) on mux.
func (x *Exporter) Register(mux Mux) {
	mux.Handle("GET /api/v1/openlineage", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := ParseQuery(r.URL.Query().Get)
		if err != nil {
			httpError(w, http.StatusBadRequest, err)
			return
		}
		evs, err := x.Events(q)
		if err != nil {
			httpError(w, statusOf(err), err)
			return
		}
		writeJSON(w, evs)
	}))
}

// Run pushes to the configured URL every Every until ctx ends, then once
// more so the last counts go out.
func (x *Exporter) Run(ctx context.Context) {
	if x.cfg.URL == "" {
		return
	}
	t := time.NewTicker(x.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			x.push(final)
			cancel()
			return
		case <-t.C:
			x.push(ctx)
		}
	}
}

// push sends the events of jobs active since the last successful push. A
// failed push is not queued: the next one carries the totals anyway.
func (x *Exporter) push(ctx context.Context) {
	q := Query{}
	if !x.lastPush.IsZero() {
		q.Since = time.Since(x.lastPush) + time.Second
	}
	started := time.Now()
	evs, err := x.Events(q)
	if err != nil {
		x.log.Error("building OpenLineage events failed", "err", err)
		return
	}
	for _, ev := range evs {
		if err := x.post(ctx, ev); err != nil {
			x.log.Warn("pushing OpenLineage events failed; will retry at the next push", "url", x.cfg.URL, "job", ev.Job.Name, "err", err)
			return
		}
	}
	x.lastPush = started
}

// Push sends the current events now (tests, and operators via the API
// later).
func (x *Exporter) Push(ctx context.Context) { x.push(ctx) }

func (x *Exporter) post(ctx context.Context, ev RunEvent) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := x.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s: %s", x.cfg.URL, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
