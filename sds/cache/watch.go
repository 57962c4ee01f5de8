package cache

import (
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/xds"
)

// interest bits a Watch sets for what its stream currently subscribes to.
const (
	wantIdentity uint32 = 1 << iota
	wantBundle
)

// The slots of the xds.Tag the cache gives its resources: what an ACK of
// them confirms, which is what a CA change waits for.
const (
	tagBundle = 0 // the version of the trust bundle
	tagCA     = 1 // the CA version of the workload certificate
)

// Watch is one stream's registration with the cache: the cache wakes it
// when something the stream subscribes to changes, and the stream then
// reads the current state itself. A wake never blocks the cache. Its
// methods are called by the one stream that owns it, one at a time; the
// cache reads its atomics concurrently.
type Watch struct {
	c     *Cache
	id    *sds.Identity
	idKey string
	// wake tells the stream to look again; it must not block.
	wake func()
	// interest holds the want* bits; the stream sets it, the cache reads it.
	interest atomic.Uint32
	// since is the earliest unserved change (unix nanos), for push latency.
	since atomic.Int64
	// acked is what the data plane last acknowledged on this stream; CA
	// changes wait on it. Only the stream stores it.
	acked atomic.Pointer[xds.Tag]
	// cert is the workload certificate last handed to the stream, for its
	// status.
	cert atomic.Pointer[certEntry]
}

var (
	_ sds.Secrets = (*Cache)(nil)
	_ sds.Watch   = (*Watch)(nil)
)

// heldTag is what w's data plane last acknowledged.
func (w *Watch) heldTag() xds.Tag {
	if t := w.acked.Load(); t != nil {
		return *t
	}
	return xds.Tag{}
}

func (w *Watch) notify(changedAt time.Time) {
	w.since.CompareAndSwap(0, changedAt.UnixNano())
	if w.wake != nil {
		w.wake()
	}
}

// Watch registers a stream of id, which wake tells of changes; wake must
// not block. Close the Watch when the stream ends. It returns the
// interface its consumer declares (Go has no covariant results); the value
// is always a *Watch.
func (c *Cache) Watch(id *sds.Identity, wake func()) sds.Watch {
	w := &Watch{c: c, id: id, idKey: id.Key(), wake: wake}
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := c.meshes[id.Mesh]
	if ms == nil {
		// The mesh may appear later: keep a placeholder that Update fills.
		ms = &meshState{watchers: map[string]map[*Watch]struct{}{}}
		c.meshes[id.Mesh] = ms
	}
	set := ms.watchers[w.idKey]
	if set == nil {
		set = map[*Watch]struct{}{}
		ms.watchers[w.idKey] = set
	}
	set[w] = struct{}{}
	return w
}

// Close unregisters the stream.
func (w *Watch) Close() {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if ms := c.meshes[w.id.Mesh]; ms != nil {
		if set := ms.watchers[w.idKey]; set != nil {
			delete(set, w)
			if len(set) == 0 {
				delete(ms.watchers, w.idKey)
			}
		}
		if ms.resolved == nil && len(ms.watchers) == 0 {
			delete(c.meshes, w.id.Mesh) // an unused placeholder
		}
		// A CA change does not wait for a data plane that went away.
		c.scheduleCheckLocked(w.id.Mesh, ms)
	}
}

// Subscribe records the names the stream subscribes to: it is woken only
// for changes of those.
func (w *Watch) Subscribe(names []string) {
	var in uint32
	for _, n := range names {
		switch sds.KindOf(n) {
		case sds.KindIdentity:
			in |= wantIdentity
		case sds.KindBundle:
			in |= wantBundle
		}
	}
	w.interest.Store(in)
}

// Resource returns the current secret called name for the stream's data
// plane: its workload certificate (issued when none is cached for the
// mesh's current CA, which it waits for) or its mesh's trust bundle. A
// name of a mesh without a CA is Pending; other names are Unknown.
func (w *Watch) Resource(name string) (xds.Resource, xds.Availability, error) {
	switch sds.KindOf(name) {
	case sds.KindIdentity:
		e, ok, err := w.c.identityCert(w)
		if err != nil || !ok {
			return xds.Resource{}, xds.Pending, err
		}
		w.cert.Store(e)
		return xds.Resource{Version: e.version, Tag: xds.Tag{tagCA: e.caVersion}, Body: e}, xds.Available, nil
	case sds.KindBundle:
		res, version, ok := w.c.bundle(w.id.Mesh, name)
		if !ok {
			return xds.Resource{}, xds.Pending, nil
		}
		return xds.Resource{Version: version, Tag: xds.Tag{tagBundle: version}, Any: res}, xds.Available, nil
	}
	return xds.Resource{}, xds.Unknown, nil
}

// Held records what the data plane holds now (see xds.Handler).
func (w *Watch) Held(t xds.Tag) { w.c.acked(w, t) }

// Revoked reports whether the stream's token is revoked in its mesh.
func (w *Watch) Revoked() bool { return w.c.Revoked(w.id) }

// TakeChangedAt returns when the earliest change not yet served to the
// stream happened, and forgets it: the start of a push's latency.
func (w *Watch) TakeChangedAt() (time.Time, bool) {
	since := w.since.Swap(0)
	if since == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, since), true
}

// Cert returns the serial and expiry of the workload certificate last
// handed to the stream, if any.
func (w *Watch) Cert() (serial string, notAfter time.Time, ok bool) {
	e := w.cert.Load()
	if e == nil {
		return "", time.Time{}, false
	}
	return e.cert.Serial, e.cert.NotAfter, true
}

// Revoked reports whether id's token is on its mesh's revocation list.
func (c *Cache) Revoked(id *sds.Identity) bool {
	if id.TokenID == "" {
		return false
	}
	v := c.view(id.Mesh)
	if v == nil {
		return false
	}
	_, ok := v.revoked[id.TokenID]
	return ok
}

// bundle returns the shared trust bundle resource called name for mesh.
func (c *Cache) bundle(mesh, name string) (*anypb.Any, string, bool) {
	v := c.view(mesh)
	if v == nil || v.bundle == nil {
		return nil, "", false
	}
	a, ok := v.bundle[name]
	return a, v.bundleVer, ok
}
