package policy

import (
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"time"
)

// AuditEntry is one line of the audit log: a decision, who asked, from
// where, and for what. The Kafka and the Flight proxy write the same
// fields, so one file (or one log pipeline) reads both.
type AuditEntry struct {
	Time      time.Time `json:"time"`
	Result    string    `json:"result"`
	Principal string    `json:"principal"`
	ClientID  string    `json:"client_id,omitempty"` // Kafka
	Job       string    `json:"job,omitempty"`       // Flight, when it differs from the principal
	Source    string    `json:"source"`
	API       string    `json:"api"` // Kafka API key name or Flight method
	Operation string    `json:"operation"`
	Resource  string    `json:"resource_type"`
	Name      string    `json:"resource_name"`
	Reason    string    `json:"reason,omitempty"`
	Rule      string    `json:"rule,omitempty"`
}

// AuditLog writes AuditEntries as JSON lines to a writer. Without one,
// decisions other than plain allows go to a logger at warn level instead,
// so denials are never silent.
type AuditLog struct {
	mu  sync.Mutex
	w   io.Writer
	log *slog.Logger
}

// NewAuditLog returns an AuditLog writing to w (nil: denials to log).
func NewAuditLog(w io.Writer, log *slog.Logger) *AuditLog {
	return &AuditLog{w: w, log: log}
}

// Record writes e. allowed says the decision was a plain allow (not an
// audited would-deny); callers decide whether allows are recorded at all.
func (a *AuditLog) Record(e AuditEntry, allowed bool) {
	if a.w == nil {
		if allowed {
			return
		}
		a.log.Warn("policy "+e.Result, "principal", e.Principal, "client_id", e.ClientID, "job", e.Job, "source", e.Source,
			"api", e.API, "operation", e.Operation, "resource_type", e.Resource, "resource_name", e.Name,
			"reason", e.Reason, "rule", e.Rule)
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return // every field is a string or a time: cannot happen
	}
	b = append(b, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.w.Write(b); err != nil {
		a.log.Error("writing the audit log failed; decisions are still enforced", "err", err)
	}
}
