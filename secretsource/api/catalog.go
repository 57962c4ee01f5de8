package api

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/store"
)

// The one view of everything served: what the other sources (files,
// Kubernetes) hold, from their latest views, and what the store holds, read
// from the store itself so that a write is visible to the next read. The
// store is the last source in precedence (the daemon configures it so): a
// resource another source holds is served from there, and is shown from
// there. Revocation lists are the exception: they add up, so every copy is
// in effect, every copy is listed and the API's own copy stays writable.

// Resource kinds the catalog holds.
const (
	kindMesh         = meshconfig.KindMesh
	kindSecret       = meshconfig.KindSecret
	kindGlobalSecret = "GlobalSecret"
)

// Labels the admin API adds to every resource (Kuma's labels map, which
// kumactl shows and ignores): where it comes from.
const (
	// LabelOrigin is "file", "kubernetes" or "api".
	LabelOrigin = "meshsds.io/origin"
	// LabelPath is the file a resource of origin "file" was read from.
	LabelPath = "meshsds.io/path"
)

// item is one resource as the admin API shows it.
type item struct {
	kind       string // kindMesh, kindSecret or kindGlobalSecret
	mesh, name string // mesh is empty for Meshes and global secrets
	origin     string // secretsource.Origin*
	source     string // the source's name
	meta       meshconfig.Meta
	m          *meshconfig.Mesh // for kindMesh
	data       []byte           // for secrets; shared, never modified
}

// labels returns the item's labels: its origin and, for a file, the path.
func (it *item) labels() map[string]string {
	l := map[string]string{LabelOrigin: it.origin}
	if it.meta.Path != "" {
		l[LabelPath] = it.meta.Path
	}
	return l
}

// describe names the item and where it comes from, for errors:
// `secret "x" of mesh "m" comes from file /etc/x.yaml`.
func (it *item) describe() string {
	var what string
	switch it.kind {
	case kindMesh:
		what = fmt.Sprintf("mesh %q", it.name)
	case kindGlobalSecret:
		what = fmt.Sprintf("global secret %q", it.name)
	default:
		what = fmt.Sprintf("secret %q of mesh %q", it.name, it.mesh)
	}
	switch {
	case it.meta.Path != "":
		return fmt.Sprintf("%s comes from %s %s", what, it.origin, it.meta.Path)
	case it.origin == secretsource.OriginKubernetes:
		return fmt.Sprintf("%s comes from Kubernetes (%s)", what, it.source)
	default:
		return fmt.Sprintf("%s comes from %s (%s)", what, it.origin, it.source)
	}
}

// itemKey identifies a resource.
type itemKey struct{ kind, mesh, name string }

func (it *item) key() itemKey { return itemKey{it.kind, it.mesh, it.name} }

// isRevocation reports whether k is a revocation list, whose copies add up.
func (k itemKey) isRevocation() bool {
	return k.kind == kindSecret && meshconfig.IsRevocationSecret(meshconfig.SecretKey{Mesh: k.mesh, Name: k.name})
}

// views returns the latest views of the sources other than the store.
func (a *API) views() []secretsource.View {
	if a.cfg.Others == nil {
		return nil
	}
	return a.cfg.Others.Views()
}

// viewItems appends the resources of kind (in mesh, or every mesh when
// mesh is empty) one view holds.
func viewItems(out []item, v secretsource.View, kind, mesh string) []item {
	switch kind {
	case kindMesh:
		for _, m := range v.Resources.Meshes {
			out = append(out, item{kind: kindMesh, name: m.Name, origin: v.Origin, source: v.Source, meta: m.Meta, m: m})
		}
	default:
		global := kind == kindGlobalSecret
		for k, s := range v.Resources.Secrets {
			if s.Global != global || (!global && mesh != "" && k.Mesh != mesh) {
				continue
			}
			out = append(out, item{kind: kind, mesh: k.Mesh, name: k.Name, origin: v.Origin, source: v.Source, meta: s.Meta, data: s.Data})
		}
	}
	return out
}

// fromOthers returns the copy of key another source serves: the first view
// in precedence order that holds it.
func (a *API) fromOthers(key itemKey) (item, bool) {
	for _, v := range a.views() {
		switch key.kind {
		case kindMesh:
			if m, ok := v.Resources.Meshes[key.name]; ok {
				return item{kind: kindMesh, name: m.Name, origin: v.Origin, source: v.Source, meta: m.Meta, m: m}, true
			}
		default:
			if s, ok := v.Resources.Secrets[meshconfig.SecretKey{Mesh: key.mesh, Name: key.name}]; ok && s.Global == (key.kind == kindGlobalSecret) {
				return item{kind: key.kind, mesh: key.mesh, name: key.name, origin: v.Origin, source: v.Source, meta: s.Meta, data: s.Data}, true
			}
		}
	}
	return item{}, false
}

// storeKind is the store's kind of an item kind.
func storeKind(kind string) store.Kind {
	switch kind {
	case kindMesh:
		return store.KindMesh
	case kindGlobalSecret:
		return store.KindGlobalSecret
	}
	return store.KindSecret
}

// storeItem turns a store record into an item.
func storeItem(kind string, rec store.Record) (item, error) {
	it := item{kind: kind, mesh: rec.Mesh, name: rec.Name, origin: secretsource.OriginAPI, source: store.SourceName, meta: store.RecordMeta(rec)}
	if kind == kindMesh {
		m, err := store.MeshFromRecord(rec)
		if err != nil {
			return item{}, err
		}
		it.m = m
		return it, nil
	}
	it.data = rec.Data
	return it, nil
}

// getItem returns the copy of key that is served: another source's, else
// the store's. It returns store.ErrNotFound when nobody holds it.
func (a *API) getItem(ctx context.Context, key itemKey) (item, error) {
	if it, ok := a.fromOthers(key); ok {
		return it, nil
	}
	rec, err := a.store.Get(ctx, store.Key{Kind: storeKind(key.kind), Mesh: key.mesh, Name: key.name})
	if err != nil {
		return item{}, err
	}
	return storeItem(key.kind, rec)
}

// listItems returns every resource of kind (in mesh, or every mesh when
// mesh is empty) that is served, each once, from the source it is served
// from; revocation lists once per source that holds one. Sorted by mesh,
// name, then precedence.
func (a *API) listItems(ctx context.Context, kind, mesh string) ([]item, error) {
	var out []item
	taken := map[itemKey]bool{}
	add := func(it item) {
		k := it.key()
		if taken[k] && !k.isRevocation() {
			return // shadowed by a source that comes first
		}
		taken[k] = true
		out = append(out, it)
	}
	for _, v := range a.views() {
		for _, it := range viewItems(nil, v, kind, mesh) {
			add(it)
		}
	}
	recs, err := a.store.List(ctx, storeKind(kind), mesh)
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		it, err := storeItem(kind, rec)
		if err != nil {
			// A record this version cannot read is not served either.
			a.log.Error("skipping unreadable stored resource", "kind", kind, "name", rec.Name, secretsource.LogErr, err)
			continue
		}
		add(it)
	}
	// Stable: copies of one revocation list stay in precedence order.
	slices.SortStableFunc(out, func(x, y item) int {
		return cmp.Or(cmp.Compare(x.mesh, y.mesh), cmp.Compare(x.name, y.name))
	})
	return out, nil
}

// readOnly returns the copy of key that another source serves, which the
// API must not write, and true; false when the API may write key (nobody
// else holds it, or it is a revocation list, whose copies add up).
func (a *API) readOnly(key itemKey) (item, bool) {
	if key.isRevocation() {
		return item{}, false
	}
	return a.fromOthers(key)
}
