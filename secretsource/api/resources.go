package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/store"
)

// resourceMeta is the metadata of every resource in Kuma's Universal JSON
// form.
type resourceMeta struct {
	Type             string            `json:"type"`
	Mesh             string            `json:"mesh,omitempty"`
	Name             string            `json:"name"`
	CreationTime     time.Time         `json:"creationTime"`
	ModificationTime time.Time         `json:"modificationTime"`
	Labels           map[string]string `json:"labels,omitempty"`
}

// meshView is a Mesh in Kuma's Universal JSON form.
type meshView struct {
	resourceMeta
	MTLS *mtlsView `json:"mtls,omitempty"`
	// Status is what meshsds serves for the mesh now: its CA, the phase of
	// a CA change, a resolution error. Kuma has no such field; kumactl
	// ignores it.
	Status *sds.MeshStatus `json:"status,omitempty"`
}

// mtlsView is a Mesh's mTLS section as Kuma writes it: a backend's
// configuration is "conf" (meshsds reads "config" too).
type mtlsView struct {
	EnabledBackend string        `json:"enabledBackend,omitempty"`
	Backends       []backendView `json:"backends,omitempty"`
}

type backendView struct {
	Name   string             `json:"name"`
	Type   string             `json:"type"`
	DPCert *meshconfig.DPCert `json:"dpCert,omitempty"`
	Conf   json.RawMessage    `json:"conf,omitempty"`
}

// secretView is a Secret or a GlobalSecret in Kuma's Universal JSON form.
// Data is null when withheld.
type secretView struct {
	resourceMeta
	Data []byte `json:"data"`
}

func (it *item) resourceMeta() resourceMeta {
	return resourceMeta{
		Type: it.kind, Mesh: it.mesh, Name: it.name, Labels: it.labels(),
		CreationTime: it.meta.CreatedAt, ModificationTime: it.meta.ModifiedAt,
	}
}

// view is the item in Kuma's form.
func (a *API) view(it item) any {
	if it.kind != kindMesh {
		v := secretView{resourceMeta: it.resourceMeta(), Data: it.data}
		if _, managed := a.cfg.ManagedGlobalSecrets[it.name]; managed && it.kind == kindGlobalSecret {
			// The token signing key is withheld: a copy would let whoever
			// read it mint tokens offline, even after losing admin access.
			v.Data = nil
		}
		return v
	}
	v := meshView{resourceMeta: it.resourceMeta()}
	if mt := it.m.MTLS; mt != nil {
		// Kuma turns mTLS on only with enabledBackend set; meshsds also
		// when there is one backend. The effective one is shown, so that
		// Kuma's tools see mTLS on.
		v.MTLS = &mtlsView{EnabledBackend: mt.EnabledBackend}
		if b, _, ok := mt.Enabled(); ok {
			v.MTLS.EnabledBackend = b.Name
		}
		for _, b := range mt.Backends {
			v.MTLS.Backends = append(v.MTLS.Backends, backendView{Name: b.Name, Type: b.Type, DPCert: b.DPCert, Conf: b.Config})
		}
	}
	if a.cfg.Status != nil {
		v.Status = a.cfg.Status.MeshStatus(it.name)
	}
	return v
}

// list answers a paged list of kind in mesh (every mesh when empty).
func (a *API) list(w http.ResponseWriter, r *http.Request, kind, mesh string) {
	p, err := parsePage(r.URL.Query())
	if err != nil {
		badPage(w, err)
		return
	}
	items, err := a.listItems(r.Context(), kind, mesh)
	if err != nil {
		a.storeError(w, "list "+kind, err)
		return
	}
	from, to := p.bounds(len(items))
	writeList(w, len(items), from, to, nextURL(r, p, len(items)), func(i int) (any, error) { return a.view(items[i]), nil })
}

// get answers the served copy of key.
func (a *API) get(w http.ResponseWriter, r *http.Request, key itemKey) {
	it, err := a.getItem(r.Context(), key)
	if err != nil {
		a.storeError(w, "get "+key.kind, err)
		return
	}
	writeJSON(w, http.StatusOK, a.view(it))
}

// refuseReadOnly answers 409 when another source holds key: a write
// through the API would not change what is served, and would be undone by
// the next change of that source.
func (a *API) refuseReadOnly(w http.ResponseWriter, key itemKey) bool {
	it, ok := a.readOnly(key)
	if !ok {
		return false
	}
	where := "the file"
	if it.meta.Path == "" {
		where = "it in " + it.origin
	}
	writeError(w, http.StatusConflict, "Conflict",
		fmt.Sprintf("%s: it is read-only through the API; change %s instead", it.describe(), where), nil)
	return true
}

func (a *API) listMeshes(w http.ResponseWriter, r *http.Request) {
	a.list(w, r, kindMesh, "")
}

func (a *API) getMesh(w http.ResponseWriter, r *http.Request) {
	mesh := r.PathValue("mesh")
	if !validPath(w, [2]string{"mesh", mesh}) {
		return
	}
	a.get(w, r, itemKey{kind: kindMesh, name: mesh})
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
	if a.refuseReadOnly(w, itemKey{kind: kindMesh, name: mesh}) {
		return
	}
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
	it, err := storeItem(kindMesh, rec)
	if err != nil {
		a.storeError(w, "put mesh", err)
		return
	}
	writeJSON(w, createdOrOK(created), a.view(it))
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
		// Another source's copy is the one served, so it is the one the
		// Mesh is checked against.
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
	if a.refuseReadOnly(w, itemKey{kind: kindMesh, name: mesh}) {
		return
	}
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
	a.list(w, r, kindSecret, mesh)
}

func (a *API) getSecret(w http.ResponseWriter, r *http.Request) {
	mesh, name := r.PathValue("mesh"), r.PathValue("name")
	if !validPath(w, [2]string{"mesh", mesh}, [2]string{"name", name}) {
		return
	}
	a.get(w, r, itemKey{kind: kindSecret, mesh: mesh, name: name})
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
	if a.refuseReadOnly(w, itemKey{kind: kindSecret, mesh: mesh, name: name}) {
		return
	}
	meshes, err := a.meshesOf(r.Context(), mesh)
	if err != nil {
		a.storeError(w, "check secret use", err)
		return
	}
	if err := meshconfig.BuiltinCAUse(meshes, mesh, name); err != nil {
		writeError(w, http.StatusBadRequest, "Could not process a resource", "the secret is in use", []Cause{{Field: "name", Message: err.Error()}})
		return
	}
	a.putSecretRecord(w, r, store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name}, obj.Secret.Data)
}

// putSecretRecord stores a Secret or a global secret and answers it.
func (a *API) putSecretRecord(w http.ResponseWriter, r *http.Request, key store.Key, data []byte) {
	rec, created, err := a.store.Put(r.Context(), store.Record{Key: key, Data: data}, 0)
	if err != nil {
		a.storeError(w, "put secret", err)
		return
	}
	kind := kindSecret
	if key.Kind == store.KindGlobalSecret {
		kind = kindGlobalSecret
		a.log.Info("global secret written through the admin API", secretsource.LogSecret, key.Name, "created", created)
	} else {
		a.log.Info("secret written through the admin API", secretsource.LogMesh, key.Mesh, secretsource.LogSecret, key.Name, "created", created)
	}
	it, _ := storeItem(kind, rec)
	writeJSON(w, createdOrOK(created), a.view(it))
}

func (a *API) deleteSecret(w http.ResponseWriter, r *http.Request) {
	mesh, name := r.PathValue("mesh"), r.PathValue("name")
	if !validPath(w, [2]string{"mesh", mesh}, [2]string{"name", name}) {
		return
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	if a.refuseReadOnly(w, itemKey{kind: kindSecret, mesh: mesh, name: name}) {
		return
	}
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

func (a *API) listGlobalSecrets(w http.ResponseWriter, r *http.Request) {
	a.list(w, r, kindGlobalSecret, "")
}

func (a *API) getGlobalSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validPath(w, [2]string{"name", name}) {
		return
	}
	a.get(w, r, itemKey{kind: kindGlobalSecret, name: name})
}

// refuseManaged answers 409 for a global secret meshsds keeps for itself.
func (a *API) refuseManaged(w http.ResponseWriter, name string) bool {
	what, ok := a.cfg.ManagedGlobalSecrets[name]
	if !ok {
		return false
	}
	writeError(w, http.StatusConflict, "Conflict",
		fmt.Sprintf("global secret %q is %s, which meshsds keeps for itself: it cannot be written or deleted through the API", name, what), nil)
	return true
}

func (a *API) putGlobalSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validPath(w, [2]string{"name", name}) {
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	obj, err := a.decodeOne(body, kindGlobalSecret, "", name)
	if err != nil {
		invalid(w, err)
		return
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	if a.refuseManaged(w, name) || a.refuseReadOnly(w, itemKey{kind: kindGlobalSecret, name: name}) {
		return
	}
	a.putSecretRecord(w, r, store.Key{Kind: store.KindGlobalSecret, Name: name}, obj.Secret.Data)
}

func (a *API) deleteGlobalSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validPath(w, [2]string{"name", name}) {
		return
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	if a.refuseManaged(w, name) || a.refuseReadOnly(w, itemKey{kind: kindGlobalSecret, name: name}) {
		return
	}
	if err := a.store.Delete(r.Context(), store.Key{Kind: store.KindGlobalSecret, Name: name}); err != nil {
		a.storeError(w, "delete global secret", err)
		return
	}
	a.log.Info("global secret deleted through the admin API", secretsource.LogSecret, name)
	writeJSON(w, http.StatusOK, map[string]string{})
}

func (a *API) dataplanes(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Dataplanes == nil {
		writeError(w, http.StatusNotImplemented, "Not available", "this server has no SDS", nil)
		return
	}
	p, err := parsePage(r.URL.Query())
	if err != nil {
		badPage(w, err)
		return
	}
	dps := a.cfg.Dataplanes.Dataplanes()
	from, to := p.bounds(len(dps))
	writeList(w, len(dps), from, to, nextURL(r, p, len(dps)), func(i int) (any, error) { return dps[i], nil })
}
