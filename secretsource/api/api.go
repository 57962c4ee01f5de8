// Package api is meshsds' admin HTTP API over the durable store of
// secretsource/store, and the read-only status page beside it (/ui).
//
// It follows Kuma's REST API where the two overlap, so that kumactl works
// against it: the index at GET /, Kuma's paths, resource shapes, list
// envelope and paging, its error shape and its dataplane token request.
//
// Reads show one view of everything served: every source's resources
// (files, Kubernetes, the store), each with its origin (catalog.go). Writes
// go to the store, and only for resources no other source holds: those are
// read-only here (409). Once committed, the store's source publishes a fresh
// view, so an API write reaches connected data planes exactly like a file
// change does. Writes are admitted by meshconfig's admission policy against
// every secret meshsds knows, in the store or another source.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/store"
)

// DefaultMaxBodyBytes bounds a request body: a 1 MiB secret in base64 plus
// room for the envelope.
const DefaultMaxBodyBytes = 2 << 20

// Dataplanes lists the connected data planes for GET /dataplanes (the SDS
// server). It is called concurrently; the result is not kept.
type Dataplanes interface {
	Dataplanes() []sds.DataplaneStatus
}

// TokenIssuer signs dataplane tokens for POST /tokens/dataplane. It is
// called concurrently.
type TokenIssuer interface {
	Issue(c token.Claims, validFor time.Duration, now time.Time) (string, error)
}

// MeshStatus reports the live state of a mesh (its CA rotation phase, CA
// expiry warnings) for GET /meshes/{mesh} (the SDS serving state). It is
// called concurrently; nil means the mesh is not being served.
type MeshStatus interface {
	MeshStatus(mesh string) *sds.MeshStatus
}

// OtherSources looks into the sources other than the store (files,
// Kubernetes): their resources are listed and shown with the store's and
// cannot be written through the API, a Mesh PUT through the API is admitted
// against secrets the API does not own, and a Secret they use cannot be
// deleted. It is called concurrently (the reconciler's Others); the store
// must come after every other source in precedence.
type OtherSources interface {
	Secret(mesh, name string) ([]byte, bool)
	// Meshes returns every Mesh the other sources hold.
	Meshes() []*meshconfig.Mesh
	// Views returns the latest view of every other source, in precedence
	// order. The views must not be modified.
	Views() []secretsource.View
}

// Problems reports what the sources cannot use now (files that fail to
// decode, conflicts between sources), for the status page. It is called
// concurrently (the reconciler's Problems).
type Problems interface {
	Problems() []secretsource.Problem
}

// Provisioner generates the CA of a builtin backend before a Mesh using it
// is admitted (the store's Provisioner, or Kubernetes' in Kubernetes mode).
// It is called concurrently and must be idempotent.
type Provisioner interface {
	ProvisionBuiltinCA(ctx context.Context, mesh string, backend meshconfig.Backend) error
}

// Config configures the API.
type Config struct {
	Store      store.Store
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MaxBodyBytes bounds request bodies; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxSecretSize bounds decoded Secret payloads; 0 means meshconfig's
	// default.
	MaxSecretSize int
	// Dataplanes, Tokens and Others are optional; without them the
	// respective endpoints answer 501 and admission sees only the store.
	Dataplanes Dataplanes
	Tokens     TokenIssuer
	Others     OtherSources
	Status     MeshStatus
	// Provisioner generates builtin CAs; default a store.Provisioner on
	// Store.
	Provisioner Provisioner
	// Audit, when set, receives the audit log (see audit.go); writes to it
	// are serialised.
	Audit io.Writer
	// Index is what GET / says about this server (index.go).
	Index Index
	// ManagedGlobalSecrets are the global secrets meshsds keeps for itself
	// (name: what it is), which the API refuses to write or delete.
	ManagedGlobalSecrets map[string]string
	// Problems feeds the status page's list of source problems; optional.
	Problems Problems
	// Ready reports whether every source has synced, for the status page;
	// optional.
	Ready func() bool
}

// API serves the admin HTTP API.
type API struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store
	metrics *metrics

	audit *auditLog

	// writeMu serialises the check-then-write of in-use checks and Mesh
	// admission against the secrets they read.
	writeMu sync.Mutex
}

// New returns an API over cfg.Store.
func New(cfg Config) (*API, error) {
	if cfg.Store == nil {
		return nil, errors.New("admin API needs a store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxSecretSize <= 0 {
		cfg.MaxSecretSize = meshconfig.DefaultMaxSecretSize
	}
	if cfg.Provisioner == nil {
		cfg.Provisioner = &store.Provisioner{Store: cfg.Store, Logger: cfg.Logger, Now: cfg.Now}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &API{cfg: cfg, log: cfg.Logger, store: cfg.Store, metrics: m, audit: newAuditLog(cfg.Audit)}, nil
}

// Handler returns the HTTP handler of the admin API.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /meshes", a.listMeshes)
	mux.HandleFunc("GET /meshes/{mesh}", a.getMesh)
	mux.HandleFunc("PUT /meshes/{mesh}", a.putMesh)
	mux.HandleFunc("DELETE /meshes/{mesh}", a.deleteMesh)
	mux.HandleFunc("GET /secrets", a.listSecrets)
	mux.HandleFunc("GET /meshes/{mesh}/secrets", a.listSecrets)
	mux.HandleFunc("GET /meshes/{mesh}/secrets/{name}", a.getSecret)
	mux.HandleFunc("PUT /meshes/{mesh}/secrets/{name}", a.putSecret)
	mux.HandleFunc("DELETE /meshes/{mesh}/secrets/{name}", a.deleteSecret)
	// Kuma's path of global secrets is /globalsecrets (what kumactl
	// calls); its documentation says /global-secrets, which Kuma also
	// answers.
	for _, base := range []string{"/globalsecrets", "/global-secrets"} {
		mux.HandleFunc("GET "+base, a.listGlobalSecrets)
		mux.HandleFunc("GET "+base+"/{name}", a.getGlobalSecret)
		mux.HandleFunc("PUT "+base+"/{name}", a.putGlobalSecret)
		mux.HandleFunc("DELETE "+base+"/{name}", a.deleteGlobalSecret)
	}
	mux.HandleFunc("POST /tokens/dataplane", a.generateToken)
	mux.HandleFunc("GET /dataplanes", a.dataplanes)
	mux.HandleFunc("GET /ui", a.statusPage)
	// Other methods on known paths get Kuma's error shape, not the mux's
	// plain-text 405.
	for path, allow := range map[string]string{
		"/{$}": "GET", "/meshes": "GET", "/meshes/{mesh}": "GET, PUT, DELETE", "/secrets": "GET",
		"/meshes/{mesh}/secrets": "GET", "/meshes/{mesh}/secrets/{name}": "GET, PUT, DELETE",
		"/globalsecrets": "GET", "/globalsecrets/{name}": "GET, PUT, DELETE",
		"/global-secrets": "GET", "/global-secrets/{name}": "GET, PUT, DELETE",
		"/tokens/dataplane": "POST", "/dataplanes": "GET", "/ui": "GET",
	} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "Method not allowed", fmt.Sprintf("%s %s: allowed are %s", r.Method, r.URL.Path, allow), nil)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not found", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path), nil)
	})
	return a.instrument(mux)
}

// instrument counts requests by method and status code.
func (a *API) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		var event *AuditEvent
		if isWrite(r.Method) {
			event = &AuditEvent{Time: a.cfg.Now().UTC(), Who: who(r), Verb: r.Method, Path: r.URL.Path}
			r = r.WithContext(context.WithValue(r.Context(), auditKey{}, event))
		}
		next.ServeHTTP(rec, r)
		a.metrics.requests.WithLabelValues(r.Method, fmt.Sprint(rec.code)).Inc()
		// Paths and codes only: bodies may hold secret material.
		a.log.Debug("admin request", "method", r.Method, "path", r.URL.Path, "code", rec.code)
		if event != nil && a.audit != nil {
			event.Status = rec.code
			a.metrics.audit.WithLabelValues(r.Method).Inc()
			if err := a.audit.write(*event); err != nil {
				a.log.Error("writing the audit log", secretsource.LogErr, err)
			}
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// readBody reads a request body of at most MaxBodyBytes. A body announced
// larger is refused before any of it is read.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > a.cfg.MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "Request body too large",
			fmt.Sprintf("the body may be at most %d bytes", a.cfg.MaxBodyBytes), nil)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "Request body too large",
				fmt.Sprintf("the body may be at most %d bytes", a.cfg.MaxBodyBytes), nil)
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "Could not read the request body", err.Error(), nil)
		return nil, false
	}
	return body, true
}

// storeError answers a store failure.
func (a *API) storeError(w http.ResponseWriter, op string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "Could not retrieve a resource", "Not found", nil)
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "Conflict", "the resource was changed concurrently; retry", nil)
	default:
		a.log.Error("store failure", "op", op, secretsource.LogErr, err)
		writeError(w, http.StatusInternalServerError, "Internal error", "the store failed; see the server log", nil)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ErrorBody is Kuma's error shape (Kuma 2.x, which follows Kong's AIP-193:
// type, status, title, detail, invalid_parameters), with the fields of
// Kuma 1.x that kumactl still reads (details, causes) carrying the same.
type ErrorBody struct {
	Type              string             `json:"type"`
	Status            int                `json:"status"`
	Title             string             `json:"title"`
	Detail            string             `json:"detail"`
	InvalidParameters []InvalidParameter `json:"invalid_parameters,omitempty"`
	Details           string             `json:"details"`
	Causes            []Cause            `json:"causes,omitempty"`
}

// InvalidParameter is one broken rule of an ErrorBody (Kuma 2.x).
type InvalidParameter struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// Cause is one broken rule of an ErrorBody (Kuma 1.x).
type Cause struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// errorType is the type of every error, as Kuma answers it.
const errorType = "/std-errors"

func writeError(w http.ResponseWriter, code int, title, detail string, causes []Cause) {
	body := ErrorBody{Type: errorType, Status: code, Title: title, Detail: detail, Details: detail, Causes: causes}
	for _, c := range causes {
		body.InvalidParameters = append(body.InvalidParameters, InvalidParameter{Field: c.Field, Reason: c.Message})
	}
	writeJSON(w, code, body)
}

// invalid answers 400 with the causes of a validation error.
func invalid(w http.ResponseWriter, err error) {
	invalidRequest(w, "Could not process a resource", err)
}

// invalidRequest answers 400 titled title with the causes of a validation
// error.
func invalidRequest(w http.ResponseWriter, title string, err error) {
	var causes []Cause
	var ve *meshconfig.ValidationError
	var fe *meshconfig.FieldError
	switch {
	case errors.As(err, &ve):
		for _, c := range ve.Causes {
			causes = append(causes, Cause{Field: c.Field, Message: c.Message})
		}
	case errors.As(err, &fe):
		causes = []Cause{{Field: fe.Field, Message: fe.Message}}
	default:
		causes = []Cause{{Field: "", Message: err.Error()}}
	}
	writeError(w, http.StatusBadRequest, title, "Resource is not valid", causes)
}

// decodeOne decodes a YAML or JSON body holding exactly one resource whose
// type, mesh and name must match the URL. Missing name and mesh are taken
// from the URL.
func (a *API) decodeOne(body []byte, wantType, mesh, name string) (meshconfig.Object, error) {
	if err := oneDocument(body); err != nil {
		return meshconfig.Object{}, err
	}
	var head map[string]any
	if err := yaml.Unmarshal(body, &head); err != nil || head == nil {
		return meshconfig.Object{}, &meshconfig.FieldError{Message: "body must be one YAML or JSON object"}
	}
	var verr meshconfig.ValidationError
	if t, _ := head["type"].(string); t != wantType {
		verr.Add("type", fmt.Sprintf("must be %q for this endpoint", wantType))
	}
	if v, ok := head["name"]; !ok {
		head["name"] = name
	} else if s, _ := v.(string); s != name {
		verr.Add("name", "name from the URL has to be the same as in body")
	}
	if wantType == kindSecret {
		if v, ok := head["mesh"]; !ok {
			head["mesh"] = mesh
		} else if s, _ := v.(string); s != mesh {
			verr.Add("mesh", "mesh from the URL has to be the same as in body")
		}
	}
	if err := verr.ErrOrNil(); err != nil {
		return meshconfig.Object{}, err
	}
	js, err := json.Marshal(head)
	if err != nil {
		return meshconfig.Object{}, &meshconfig.FieldError{Message: "body must be one YAML or JSON object"}
	}
	objs, err := meshconfig.Decode(js, meshconfig.DecodeOptions{MaxSecretSize: a.cfg.MaxSecretSize})
	if err != nil {
		return meshconfig.Object{}, err
	}
	if len(objs) != 1 {
		return meshconfig.Object{}, &meshconfig.FieldError{Message: "body must hold exactly one resource"}
	}
	return objs[0], nil
}

// oneDocument refuses a body of more than one YAML document or JSON value:
// decoding only the first would drop the rest while answering success.
func oneDocument(body []byte) error {
	dec := yamlv3.NewDecoder(bytes.NewReader(body))
	docs := 0
	for {
		var n yamlv3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return &meshconfig.FieldError{Message: "body must be one YAML or JSON object: " + err.Error()}
		}
		if len(n.Content) > 0 && n.Content[0].Tag != "!!null" {
			docs++ // an empty document (a trailing ---) holds nothing
		}
	}
	if docs != 1 {
		return &meshconfig.FieldError{Message: fmt.Sprintf("body must hold exactly one resource, not %d", docs)}
	}
	return nil
}

// validPath checks the names in the URL.
func validPath(w http.ResponseWriter, fields ...[2]string) bool {
	var verr meshconfig.ValidationError
	for _, f := range fields {
		if fe := meshconfig.ValidateName(f[0], f[1]); fe != nil {
			verr.Causes = append(verr.Causes, *fe)
		}
	}
	if len(verr.Causes) > 0 {
		invalid(w, &verr)
		return false
	}
	return true
}
