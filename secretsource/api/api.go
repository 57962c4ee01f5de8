// Package api is meshsds' admin HTTP API (Kuma's paths and error shape)
// over the durable store of secretsource/store.
//
// Writes go to the store; once committed, the store's source publishes a
// fresh view, so an API write reaches connected data planes exactly like a
// file change does. Writes are admitted by meshconfig's admission policy
// against every secret meshsds knows, in the store or another source.
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
	"strings"
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
// Kubernetes): a Mesh PUT through the API is admitted against secrets the
// API does not own, and a Secret they use cannot be deleted. It is called
// concurrently (the reconciler's Others).
type OtherSources interface {
	Secret(mesh, name string) ([]byte, bool)
	// Meshes returns every Mesh the other sources hold.
	Meshes() []*meshconfig.Mesh
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
	mux.HandleFunc("GET /meshes", a.listMeshes)
	mux.HandleFunc("GET /meshes/{mesh}", a.getMesh)
	mux.HandleFunc("PUT /meshes/{mesh}", a.putMesh)
	mux.HandleFunc("DELETE /meshes/{mesh}", a.deleteMesh)
	mux.HandleFunc("GET /secrets", a.listSecrets)
	mux.HandleFunc("GET /meshes/{mesh}/secrets", a.listSecrets)
	mux.HandleFunc("GET /meshes/{mesh}/secrets/{name}", a.getSecret)
	mux.HandleFunc("PUT /meshes/{mesh}/secrets/{name}", a.putSecret)
	mux.HandleFunc("DELETE /meshes/{mesh}/secrets/{name}", a.deleteSecret)
	mux.HandleFunc("POST /tokens/dataplane", a.generateToken)
	mux.HandleFunc("GET /dataplanes", a.dataplanes)
	// Other methods on known paths get Kuma's error shape, not the mux's
	// plain-text 405.
	for path, allow := range map[string]string{
		"/meshes": "GET", "/meshes/{mesh}": "GET, PUT, DELETE", "/secrets": "GET",
		"/meshes/{mesh}/secrets": "GET", "/meshes/{mesh}/secrets/{name}": "GET, PUT, DELETE",
		"/tokens/dataplane": "POST", "/dataplanes": "GET",
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

// listResponse is Kuma's list envelope.
type listResponse struct {
	Total int     `json:"total"`
	Items []any   `json:"items"`
	Next  *string `json:"next"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ErrorBody is Kuma's error shape.
type ErrorBody struct {
	Title   string  `json:"title"`
	Details string  `json:"details"`
	Causes  []Cause `json:"causes,omitempty"`
}

// Cause is one broken rule of an ErrorBody.
type Cause struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, code int, title, details string, causes []Cause) {
	writeJSON(w, code, ErrorBody{Title: title, Details: details, Causes: causes})
}

// invalid answers 400 with the causes of a validation error.
func invalid(w http.ResponseWriter, err error) {
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
	writeError(w, http.StatusBadRequest, "Could not process a resource", "Resource is not valid", causes)
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
	if wantType == meshconfig.KindSecret {
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

// meshView is a Mesh in Kuma's Universal JSON form.
type meshView struct {
	Type             string           `json:"type"`
	Name             string           `json:"name"`
	CreationTime     time.Time        `json:"creationTime"`
	ModificationTime time.Time        `json:"modificationTime"`
	MTLS             *meshconfig.MTLS `json:"mtls,omitempty"`
	// Status is what meshsds serves for the mesh now (GET of one mesh only).
	Status *sds.MeshStatus `json:"status,omitempty"`
}

// secretView is a Secret in Kuma's Universal JSON form.
type secretView struct {
	Type             string    `json:"type"`
	Mesh             string    `json:"mesh"`
	Name             string    `json:"name"`
	CreationTime     time.Time `json:"creationTime"`
	ModificationTime time.Time `json:"modificationTime"`
	Data             []byte    `json:"data"`
}

func viewOfMesh(rec store.Record) (meshView, error) {
	m, err := store.MeshFromRecord(rec)
	if err != nil {
		return meshView{}, err
	}
	return meshView{Type: meshconfig.KindMesh, Name: rec.Name, CreationTime: rec.CreatedAt, ModificationTime: rec.ModifiedAt, MTLS: m.MTLS}, nil
}

func viewOfSecret(rec store.Record) secretView {
	return secretView{Type: meshconfig.KindSecret, Mesh: rec.Mesh, Name: rec.Name, CreationTime: rec.CreatedAt, ModificationTime: rec.ModifiedAt, Data: rec.Data}
}

func (a *API) listMeshes(w http.ResponseWriter, r *http.Request) {
	recs, err := a.store.List(r.Context(), store.KindMesh, "")
	if err != nil {
		a.storeError(w, "list meshes", err)
		return
	}
	items := make([]any, 0, len(recs))
	for _, rec := range recs {
		v, err := viewOfMesh(rec)
		if err != nil {
			a.storeError(w, "list meshes", err)
			return
		}
		items = append(items, v)
	}
	writeJSON(w, http.StatusOK, listResponse{Total: len(items), Items: items})
}

func (a *API) getMesh(w http.ResponseWriter, r *http.Request) {
	mesh := r.PathValue("mesh")
	if !validPath(w, [2]string{"mesh", mesh}) {
		return
	}
	rec, err := a.store.Get(r.Context(), store.Key{Kind: store.KindMesh, Name: mesh})
	if err != nil {
		a.storeError(w, "get mesh", err)
		return
	}
	v, err := viewOfMesh(rec)
	if err != nil {
		a.storeError(w, "get mesh", err)
		return
	}
	if a.cfg.Status != nil {
		v.Status = a.cfg.Status.MeshStatus(mesh)
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *API) putMesh(w http.ResponseWriter, r *http.Request) {
	mesh := r.PathValue("mesh")
	if !validPath(w, [2]string{"name", mesh}) {
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	obj, err := a.decodeOne(body, meshconfig.KindMesh, "", mesh)
	if err != nil {
		invalid(w, err)
		return
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	// A builtin backend's CA is generated when the backend first appears.
	if obj.Mesh.MTLS != nil {
		for _, b := range obj.Mesh.MTLS.Backends {
			if b.Type == meshconfig.BackendBuiltin {
				if err := a.cfg.Provisioner.ProvisionBuiltinCA(r.Context(), mesh, b); err != nil {
					a.storeError(w, "generate builtin CA", err)
					return
				}
			}
		}
	}
	// The CA must resolve now, against every secret meshsds knows, so that
	// a broken Mesh is refused here rather than served as an error.
	secrets, err := a.secretsFor(r.Context(), obj.Mesh)
	if err != nil {
		a.storeError(w, "read secrets", err)
		return
	}
	lookup := func(mesh, name string) ([]byte, bool) {
		s, ok := secrets[meshconfig.SecretKey{Mesh: mesh, Name: name}]
		if !ok {
			return nil, false
		}
		return s.Data, true
	}
	if err := meshconfig.AdmitMesh(obj.Mesh, lookup, a.cfg.Now()); err != nil {
		invalid(w, err)
		return
	}
	data, err := json.Marshal(obj.Mesh)
	if err != nil {
		a.storeError(w, "encode mesh", err)
		return
	}
	rec, created, err := a.store.Put(r.Context(), store.Record{Key: store.Key{Kind: store.KindMesh, Name: mesh}, Data: data}, 0)
	if err != nil {
		a.storeError(w, "put mesh", err)
		return
	}
	a.log.Info("mesh written through the admin API", secretsource.LogMesh, mesh, "created", created)
	v, err := viewOfMesh(rec)
	if err != nil {
		a.storeError(w, "put mesh", err)
		return
	}
	writeJSON(w, createdOrOK(created), v)
}

func createdOrOK(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}

// secretsFor returns the secrets of m's mesh from the store, plus those its
// backends reference that only another source (files, Kubernetes) holds.
func (a *API) secretsFor(ctx context.Context, m *meshconfig.Mesh) (map[meshconfig.SecretKey]*meshconfig.Secret, error) {
	recs, err := a.store.List(ctx, store.KindSecret, m.Name)
	if err != nil {
		return nil, err
	}
	out := make(map[meshconfig.SecretKey]*meshconfig.Secret, len(recs))
	for _, rec := range recs {
		out[meshconfig.SecretKey{Mesh: m.Name, Name: rec.Name}] = &meshconfig.Secret{Mesh: m.Name, Name: rec.Name, Data: rec.Data}
	}
	if a.cfg.Others == nil {
		return out, nil
	}
	for _, ref := range m.SecretRefs() {
		key := meshconfig.SecretKey{Mesh: m.Name, Name: ref.Secret}
		if _, ok := out[key]; ok {
			continue
		}
		if data, ok := a.cfg.Others.Secret(m.Name, ref.Secret); ok {
			out[key] = &meshconfig.Secret{Mesh: m.Name, Name: ref.Secret, Data: data}
		}
	}
	return out, nil
}

func (a *API) deleteMesh(w http.ResponseWriter, r *http.Request) {
	mesh := r.PathValue("mesh")
	if !validPath(w, [2]string{"name", mesh}) {
		return
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	rec, err := a.store.Get(r.Context(), store.Key{Kind: store.KindMesh, Name: mesh})
	if err != nil {
		a.storeError(w, "delete mesh", err)
		return
	}
	if err := a.store.Delete(r.Context(), store.Key{Kind: store.KindMesh, Name: mesh}); err != nil {
		a.storeError(w, "delete mesh", err)
		return
	}
	// The CAs meshsds generated for the Mesh go with it.
	if m, err := store.MeshFromRecord(rec); err == nil {
		if err := (&store.Provisioner{Store: a.store}).DeleteBuiltinCAs(r.Context(), m); err != nil {
			a.log.Error("deleting the builtin CAs of a deleted mesh", secretsource.LogMesh, mesh, secretsource.LogErr, err)
		}
	}
	a.log.Info("mesh deleted through the admin API", secretsource.LogMesh, mesh)
	writeJSON(w, http.StatusOK, map[string]string{})
}

func (a *API) listSecrets(w http.ResponseWriter, r *http.Request) {
	mesh := r.PathValue("mesh")
	if mesh != "" && !validPath(w, [2]string{"mesh", mesh}) {
		return
	}
	recs, err := a.store.List(r.Context(), store.KindSecret, mesh)
	if err != nil {
		a.storeError(w, "list secrets", err)
		return
	}
	items := make([]any, 0, len(recs))
	for _, rec := range recs {
		items = append(items, viewOfSecret(rec))
	}
	writeJSON(w, http.StatusOK, listResponse{Total: len(items), Items: items})
}

func (a *API) getSecret(w http.ResponseWriter, r *http.Request) {
	mesh, name := r.PathValue("mesh"), r.PathValue("name")
	if !validPath(w, [2]string{"mesh", mesh}, [2]string{"name", name}) {
		return
	}
	rec, err := a.store.Get(r.Context(), store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name})
	if err != nil {
		a.storeError(w, "get secret", err)
		return
	}
	writeJSON(w, http.StatusOK, viewOfSecret(rec))
}

func (a *API) putSecret(w http.ResponseWriter, r *http.Request) {
	mesh, name := r.PathValue("mesh"), r.PathValue("name")
	if !validPath(w, [2]string{"mesh", mesh}, [2]string{"name", name}) {
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	obj, err := a.decodeOne(body, meshconfig.KindSecret, mesh, name)
	if err != nil {
		invalid(w, err)
		return
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	meshes, err := a.meshesOf(r.Context(), mesh)
	if err != nil {
		a.storeError(w, "check secret use", err)
		return
	}
	if err := meshconfig.BuiltinCAUse(meshes, mesh, name); err != nil {
		writeError(w, http.StatusBadRequest, "Could not process a resource", "the secret is in use", []Cause{{Field: "name", Message: err.Error()}})
		return
	}
	rec, created, err := a.store.Put(r.Context(), store.Record{
		Key: store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name}, Data: obj.Secret.Data,
	}, 0)
	if err != nil {
		a.storeError(w, "put secret", err)
		return
	}
	a.log.Info("secret written through the admin API", secretsource.LogMesh, mesh, secretsource.LogSecret, name, "created", created)
	writeJSON(w, createdOrOK(created), viewOfSecret(rec))
}

func (a *API) deleteSecret(w http.ResponseWriter, r *http.Request) {
	mesh, name := r.PathValue("mesh"), r.PathValue("name")
	if !validPath(w, [2]string{"mesh", mesh}, [2]string{"name", name}) {
		return
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	meshes, err := a.meshesOf(r.Context(), mesh)
	if err != nil {
		a.storeError(w, "check secret use", err)
		return
	}
	if err := meshconfig.SecretInUseError(mesh, name, meshconfig.SecretUsers(meshes, mesh, name)); err != nil {
		writeError(w, http.StatusBadRequest, "Could not delete a resource", "the secret is in use", []Cause{{Field: "name", Message: err.Error()}})
		return
	}
	if err := a.store.Delete(r.Context(), store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name}); err != nil {
		a.storeError(w, "delete secret", err)
		return
	}
	a.log.Info("secret deleted through the admin API", secretsource.LogMesh, mesh, secretsource.LogSecret, name)
	writeJSON(w, http.StatusOK, map[string]string{})
}

// meshesOf returns the Mesh called mesh as the store and every other
// source hold it.
func (a *API) meshesOf(ctx context.Context, mesh string) ([]*meshconfig.Mesh, error) {
	var meshes []*meshconfig.Mesh
	if rec, err := a.store.Get(ctx, store.Key{Kind: store.KindMesh, Name: mesh}); err == nil {
		m, err := store.MeshFromRecord(rec)
		if err != nil {
			return nil, err
		}
		meshes = append(meshes, m)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if a.cfg.Others != nil {
		meshes = append(meshes, a.cfg.Others.Meshes()...)
	}
	return meshes, nil
}

// tokenRequest is the body of POST /tokens/dataplane (Kuma's shape).
type tokenRequest struct {
	Mesh     string              `json:"mesh"`
	Name     string              `json:"name"`
	Tags     map[string][]string `json:"tags"`
	ValidFor string              `json:"validFor"`
	Type     string              `json:"type,omitempty"`
}

// DefaultTokenValidity is the lifetime of a token when validFor is not given.
const DefaultTokenValidity = 365 * 24 * time.Hour

func (a *API) generateToken(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Tokens == nil {
		writeError(w, http.StatusNotImplemented, "Not available", "this server issues no dataplane tokens", nil)
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	req, validFor, err := decodeTokenRequest(body)
	if err != nil {
		invalid(w, err)
		return
	}
	raw, err := a.cfg.Tokens.Issue(token.Claims{Mesh: req.Mesh, Name: req.Name, Tags: req.Tags}, validFor, a.cfg.Now())
	if err != nil {
		invalid(w, err)
		return
	}
	auditResource(r.Context(), "dataplane-token "+req.Mesh+"/"+req.Name)
	a.log.Info("dataplane token issued through the admin API", secretsource.LogMesh, req.Mesh, sds.LogDataplane, req.Name)
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, raw)
}

// decodeTokenRequest parses and checks a token request.
func decodeTokenRequest(body []byte) (tokenRequest, time.Duration, error) {
	var req tokenRequest
	if err := yaml.UnmarshalStrict(body, &req); err != nil {
		return req, 0, &meshconfig.FieldError{Message: "body must be {mesh, name, tags, validFor}: " + err.Error()}
	}
	var verr meshconfig.ValidationError
	if fe := meshconfig.ValidateName("mesh", req.Mesh); fe != nil {
		verr.Causes = append(verr.Causes, *fe)
	}
	if fe := meshconfig.ValidateName("name", req.Name); fe != nil {
		verr.Causes = append(verr.Causes, *fe)
	}
	if req.Type != "" && req.Type != "dataplane" {
		verr.Add("type", `must be "dataplane"`)
	}
	for k, vs := range req.Tags {
		if k == "" || strings.ContainsAny(k, " \t\n") {
			verr.Add("tags", fmt.Sprintf("tag name %q is not valid", k))
		}
		for _, v := range vs {
			if v == "" {
				verr.Add("tags", fmt.Sprintf("tag %q has an empty value", k))
			}
		}
	}
	validFor := DefaultTokenValidity
	if req.ValidFor != "" {
		d, err := time.ParseDuration(req.ValidFor)
		if err != nil || d <= 0 {
			verr.Add("validFor", "must be a positive duration such as 24h")
		}
		validFor = d
	}
	return req, validFor, verr.ErrOrNil()
}

func (a *API) dataplanes(w http.ResponseWriter, _ *http.Request) {
	if a.cfg.Dataplanes == nil {
		writeError(w, http.StatusNotImplemented, "Not available", "this server has no SDS", nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": a.cfg.Dataplanes.Dataplanes()})
}
