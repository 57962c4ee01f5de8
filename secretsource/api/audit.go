package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// The audit log: one JSON line per write through the admin API (PUT,
// DELETE, POST), successful or refused: when, who (the subject of the
// client certificate on the remote listener, "local" on the loopback one),
// what (the verb, the path, the resource), and the answer's status. Never
// the payload: a body may hold secret material, and a token issued is a
// credential.

// AuditEvent is one line of the audit log.
type AuditEvent struct {
	Time     time.Time `json:"time"`
	Who      string    `json:"who"`
	Verb     string    `json:"verb"`
	Path     string    `json:"path"`
	Resource string    `json:"resource,omitempty"`
	Status   int       `json:"status"`
}

// auditLog writes events as JSON lines, one at a time.
type auditLog struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newAuditLog(w io.Writer) *auditLog {
	if w == nil {
		return nil
	}
	return &auditLog{enc: json.NewEncoder(w)}
}

func (l *auditLog) write(e AuditEvent) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.enc.Encode(e)
}

// auditKey carries a request's *AuditEvent, for a handler to say which
// resource it touched when the path does not (the token endpoint).
type auditKey struct{}

// auditResource records the resource a write touched.
func auditResource(ctx context.Context, resource string) {
	if e, ok := ctx.Value(auditKey{}).(*AuditEvent); ok {
		e.Resource = resource
	}
}

// who names the client of r: its certificate's subject, or "local".
func who(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0].Subject.String()
	}
	return "local"
}

// isWrite reports whether method changes something.
func isWrite(method string) bool {
	return method == http.MethodPut || method == http.MethodDelete || method == http.MethodPost
}
