// Package cache is the serving state of the SDS server: what every mesh
// serves, the workload certificates issued to its data planes, and the
// progress of CA changes. Streams register a Watch and are woken when
// something they subscribe to changes; they then read the current state
// themselves, so a change is built once, however many streams carry it.
//
// Each concern has a file: cache.go takes the resolved meshes from the
// sources (Update) and publishes what streams read without a lock;
// meshstate.go derives a mesh's signing CA and shared trust bundle;
// watch.go is a stream's registration; certs.go issues and caches workload
// certificates on a bounded pool (pool.go); renewal.go replaces them before
// they expire; step.go decides, as a pure function, how a CA change moves
// on, and rotation.go runs those phases against the data planes' ACKs;
// status.go reports it all to the admin API.
//
// All exported methods are safe for concurrent use.
package cache

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
)

// Config configures a Cache.
type Config struct {
	Logger  *slog.Logger
	Metrics *Metrics
	// KeyType of workload keys; default ECDSA P-256.
	KeyType pki.KeyType
	// Now and AfterFunc are the clock; defaults are time.Now and
	// time.AfterFunc. Tests inject their own.
	Now       func() time.Time
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// Jitter returns a fraction in [-1, 1] moving each renewal; default
	// uniform random.
	Jitter func() float64
	// RotationTimeout bounds each phase of a CA change: data planes that
	// have not ACKed by then are not waited for any longer. Default 1m.
	RotationTimeout time.Duration
	// IssueWorkers bounds how many certificates are signed at once;
	// default GOMAXPROCS. Issuing is pure CPU: more workers than cores
	// only delay the pushes that need no issuing.
	IssueWorkers int
	// Coordinator shares CA changes with the other replicas serving the
	// same meshes (coordinate.go); nil when this replica serves alone. With
	// one, RotationTimeout is the coordinator's to apply.
	Coordinator Coordinator
}

// Cache holds the resolved meshes, issues and caches workload certificates,
// and wakes the streams whose secrets change. All methods are safe for
// concurrent use.
type Cache struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics

	readyOnce sync.Once
	ready     chan struct{}

	// views is what the push path reads without the mutex: per mesh, its
	// shared bundle and revoked tokens. It is replaced, never changed.
	views atomic.Pointer[map[string]*meshView]
	// rotating counts the meshes in a CA change: while none is, an ACK
	// takes no lock.
	rotating atomic.Int32

	mu sync.Mutex
	// wakes are the streams to wake once mu is released (see unlock):
	// woken under the mutex, ten thousand streams would queue on it.
	wakes  []*Watch
	meshes map[string]*meshState
	certs  map[string]*certEntry // by identity key
	// ahead holds certificates of the CA a mesh is changing to, signed
	// while the data planes learn to trust it, by identity key.
	ahead    map[string]*certEntry
	inflight map[string]*issueCall // by identity key and CA version
	pool     workPool
}

// New returns an empty, not yet ready cache.
func New(cfg Config) *Cache {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics, _ = NewMetrics(nil) // nothing to register: cannot fail
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func() float64 { return rand.Float64()*2 - 1 }
	}
	if cfg.RotationTimeout <= 0 {
		cfg.RotationTimeout = time.Minute
	}
	if cfg.IssueWorkers <= 0 {
		cfg.IssueWorkers = runtime.GOMAXPROCS(0)
	}
	return &Cache{
		cfg:      cfg,
		log:      cfg.Logger,
		metrics:  cfg.Metrics,
		ready:    make(chan struct{}),
		meshes:   map[string]*meshState{},
		certs:    map[string]*certEntry{},
		ahead:    map[string]*certEntry{},
		inflight: map[string]*issueCall{},
		pool:     workPool{max: cfg.IssueWorkers},
	}
}

// SetReady marks the cache as holding the first complete view of every
// source. Until then streams are answered nothing.
func (c *Cache) SetReady() {
	c.readyOnce.Do(func() { close(c.ready) })
}

// Ready is closed once SetReady was called.
func (c *Cache) Ready() <-chan struct{} { return c.ready }

// Update replaces the served meshes with meshes, a complete view, and wakes
// exactly the streams whose secrets changed. changedAt is when the source
// change that led here was seen; push latency is measured from it. The
// caller must not modify meshes afterwards.
func (c *Cache) Update(meshes map[string]*meshconfig.ResolvedMesh, changedAt time.Time) {
	c.mu.Lock()
	defer c.unlock()
	defer c.publishLocked()
	for name, ms := range c.meshes {
		if _, ok := meshes[name]; !ok {
			// A deleted mesh serves nothing more; its streams stay open and
			// get its secrets again if it comes back.
			// A deleted mesh serves nothing more. SotW cannot withdraw a
			// secret, so its streams keep what they hold and stay registered
			// in case the mesh comes back.
			c.metrics.caExpiry.DeleteLabelValues(name)
			c.metrics.rotationPhase.DeleteLabelValues(name)
			c.metrics.caExpiresSoon.DeleteLabelValues(name)
			if ms.stopTimer != nil {
				ms.stopTimer()
			}
			c.dropCerts(name, "")
			c.dropAheadLocked(name)
			if len(ms.watchers) == 0 {
				delete(c.meshes, name)
			} else {
				c.meshes[name] = &meshState{watchers: ms.watchers}
			}
			c.reportLocked(name, nil)
		}
	}
	for name, rm := range meshes {
		old := c.meshes[name]
		ms := c.buildMeshState(name, rm, old, changedAt)
		c.meshes[name] = ms
		c.rotationUpdatedLocked(name, old, ms)
		c.reportLocked(name, ms)
		if ms.ca != nil {
			c.metrics.caExpiry.WithLabelValues(name).Set(float64(ms.ca.Chain[0].NotAfter.Unix()))
		}
		caChanged := old == nil || old.caVersion != ms.caVersion
		bundleChanged := old == nil || old.bundleVer != ms.bundleVer
		revocationsChanged := old != nil && old.resolved != nil && !sameSet(old.resolved.RevokedTokenIDs, rm.RevokedTokenIDs)
		if caChanged {
			c.dropCerts(name, ms.caVersion)
		}
		if !caChanged && !bundleChanged && !revocationsChanged {
			continue
		}
		// Streams that need no new certificate are woken at once: a trust
		// bundle goes out without waiting for thousands of signatures. The
		// certificates of connected data planes are issued ahead, on the
		// bounded pool, and each wakes its own streams when it is ready.
		for key, set := range ms.watchers {
			reissue := false
			for w := range set {
				in := w.interest.Load()
				_, revoked := rm.RevokedTokenIDs[w.id.TokenID]
				switch {
				case revoked && w.id.TokenID != "":
					c.wakeLater(w, changedAt)
				case caChanged && in&wantIdentity != 0 && ms.ca != nil:
					w.since.CompareAndSwap(0, changedAt.UnixNano())
					reissue = true
				case bundleChanged && in&wantBundle != 0:
					c.wakeLater(w, changedAt)
				}
			}
			if reissue {
				for w := range set {
					c.startIssueLocked(w.id, key, ms, true)
					break
				}
			}
		}
	}
}

// meshView is what streams read of a mesh without the cache's mutex.
type meshView struct {
	bundle    map[string]*anypb.Any
	bundleVer string
	revoked   map[string]struct{}
}

// publishLocked replaces the views with the current meshes.
func (c *Cache) publishLocked() {
	views := make(map[string]*meshView, len(c.meshes))
	rotating := int32(0)
	for name, ms := range c.meshes {
		v := &meshView{bundle: ms.bundle, bundleVer: ms.bundleVer}
		if ms.resolved != nil {
			v.revoked = ms.resolved.RevokedTokenIDs
		}
		views[name] = v
		if ms.phase != PhaseSteady {
			rotating++
		}
	}
	c.views.Store(&views)
	c.rotating.Store(rotating)
}

func (c *Cache) view(mesh string) *meshView {
	if views := c.views.Load(); views != nil {
		return (*views)[mesh]
	}
	return nil
}

// wakeLater marks w woken by a change seen at changedAt; the wake itself
// happens in unlock. c.mu must be held.
func (c *Cache) wakeLater(w *Watch, changedAt time.Time) {
	w.since.CompareAndSwap(0, changedAt.UnixNano())
	c.wakes = append(c.wakes, w)
}

// unlock releases c.mu, then wakes the streams queued by wakeLater.
func (c *Cache) unlock() {
	wakes := c.wakes
	c.wakes = nil
	c.mu.Unlock()
	for _, w := range wakes {
		if w.wake != nil {
			w.wake()
		}
	}
}

// dropCerts forgets the cached certificates of mesh issued by any CA other
// than keep (all of them when keep is empty).
func (c *Cache) dropCerts(mesh, keep string) {
	for k, e := range c.certs {
		if meshOfKey(k) == mesh && e.caVersion != keep {
			e.stop()
			delete(c.certs, k)
		}
	}
}

func meshOfKey(k string) string {
	for i := 0; i < len(k); i++ {
		if k[i] == 0 {
			return k[:i]
		}
	}
	return k
}

func sameSet(a, b map[string]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// WhyNotServed says why mesh cannot be served now, or nil when it can.
func (c *Cache) WhyNotServed(mesh string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := c.meshes[mesh]
	switch {
	case ms == nil || ms.resolved == nil:
		return fmt.Errorf("mesh %q does not exist", mesh)
	case ms.ca == nil && ms.resolved.Err != nil:
		return fmt.Errorf("mesh %q has no valid CA: %w", mesh, ms.resolved.Err)
	case ms.ca == nil && ms.target != nil:
		return fmt.Errorf("mesh %q: this replica joined a CA change in its trust phase; certificates are issued from its next phase", mesh)
	case ms.ca == nil:
		return fmt.Errorf("mesh %q does not have mTLS enabled", mesh)
	}
	return nil
}
