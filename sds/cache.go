package sds

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
)

// SDS resource names (DESIGN.md "SDS"), with the aliases used by configs
// written for Istio and SPIRE.
const (
	NameIdentityCert = "identity_cert"
	NameMeshCA       = "mesh_ca"
	AliasIdentity    = "default"
	AliasMeshCA      = "ROOTCA"
)

// resourceKind says what an SDS resource name refers to.
type resourceKind int

const (
	kindUnknown resourceKind = iota
	kindIdentity
	kindBundle
)

func kindOf(name string) resourceKind {
	switch name {
	case NameIdentityCert, AliasIdentity:
		return kindIdentity
	case NameMeshCA, AliasMeshCA:
		return kindBundle
	}
	return kindUnknown
}

// interest bits a watcher sets for what it currently subscribes to.
const (
	wantIdentity uint32 = 1 << iota
	wantBundle
)

// watcher is one stream's registration with the cache: the cache wakes it
// when something the stream subscribes to changes, and the stream then reads
// the current state itself. A wake never blocks the cache.
type watcher struct {
	id    *Identity
	idKey string
	// wake tells the stream to look again; it must not block.
	wake func()
	// interest holds the want* bits; the stream sets it, the cache reads it.
	interest atomic.Uint32
	// since is the earliest unserved change (unix nanos), for push latency.
	since atomic.Int64
	// acked is what the data plane last acknowledged on this stream; CA
	// changes wait on it. Only the stream stores it.
	acked atomic.Pointer[ackTag]
}

// ackedTag is what w's data plane last acknowledged.
func (w *watcher) ackedTag() ackTag {
	if t := w.acked.Load(); t != nil {
		return *t
	}
	return ackTag{}
}

func (w *watcher) notify(changedAt time.Time) {
	w.since.CompareAndSwap(0, changedAt.UnixNano())
	if w.wake != nil {
		w.wake()
	}
}

// meshState is what the cache serves for one mesh. Its bundle resources are
// built and serialized once per change and shared by every stream.
type meshState struct {
	resolved *meshconfig.ResolvedMesh
	// ca signs workload certificates; during a CA change it is the old CA
	// until every data plane trusts the new one (see rotation.go).
	ca *pki.CA
	// target is the CA the mesh resolves to now.
	target *pki.CA
	// trusted are the CAs in the trust bundle.
	trusted []*pki.CA
	rotation
	validity  time.Duration
	caVersion string // identifies what a workload certificate depends on: a change re-issues
	bundleVer string
	bundle    map[string]*anypb.Any // by resource name (mesh_ca, ROOTCA)
	changedAt time.Time
	// watchers by identity key, so a renewal wakes only that data plane.
	watchers map[string]map[*watcher]struct{}
}

// certEntry is a cached workload certificate for one identity and CA. It
// keeps what is the data plane's own, its certificate and key in DER, and
// the resource is serialized only when it is sent (on connecting, renewal,
// a CA change, or with a bundle on an ADS stream): ten thousand copies of
// the CA's intermediates would cost more than the serializing.
type certEntry struct {
	caVersion string
	cert      *pki.WorkloadCert
	version   string
	renewAt   time.Time
	stop      func() bool
}

// resource returns the entry's resource called name (identity_cert or its
// alias).
func (e *certEntry) resource(name string) (*anypb.Any, error) {
	return identityResource(name, e.cert)
}

// issueCall is an issuance in progress for one identity and CA; everyone
// who needs that certificate waits for done.
type issueCall struct {
	done chan struct{}
	e    *certEntry
	err  error
}

// CacheConfig configures a Cache.
type CacheConfig struct {
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
}

// Cache holds the resolved meshes, issues and caches workload certificates,
// and wakes the streams whose secrets change. All methods are safe for
// concurrent use.
type Cache struct {
	cfg     CacheConfig
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
	wakes  []*watcher
	meshes map[string]*meshState
	certs  map[string]*certEntry // by identity key
	// ahead holds certificates of the CA a mesh is changing to, signed
	// while the data planes learn to trust it, by identity key.
	ahead    map[string]*certEntry
	inflight map[string]*issueCall // by identity key and CA version
	pool     workPool
}

// NewCache returns an empty, not yet ready cache.
func NewCache(cfg CacheConfig) *Cache {
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

// workPool runs functions on at most max goroutines, in the order they were
// submitted. Its goroutines exist only while there is work: an idle cache
// holds none.
type workPool struct {
	max     int
	mu      sync.Mutex
	queue   []func()
	head    int
	low     []func() // taken only when queue is empty
	lowHead int
	running int
}

func (p *workPool) submit(f func()) { p.add(f, false) }

// submitLow queues f behind everything submitted: work done ahead of need
// (certificates of a CA change) must not delay a data plane connecting now.
func (p *workPool) submitLow(f func()) { p.add(f, true) }

func (p *workPool) add(f func(), low bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if low {
		p.low = append(p.low, f)
	} else {
		p.queue = append(p.queue, f)
	}
	if p.running < p.max {
		p.running++
		go p.work()
	}
}

func (p *workPool) work() {
	for {
		p.mu.Lock()
		var f func()
		switch {
		case p.head < len(p.queue):
			f = p.queue[p.head]
			p.queue[p.head] = nil
			p.head++
		case p.lowHead < len(p.low):
			f = p.low[p.lowHead]
			p.low[p.lowHead] = nil
			p.lowHead++
		default:
			p.queue, p.head = p.queue[:0], 0
			p.low, p.lowHead = p.low[:0], 0
			p.running--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		f()
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
		}
	}
	for name, rm := range meshes {
		old := c.meshes[name]
		ms := c.buildMeshState(rm, old, changedAt)
		c.meshes[name] = ms
		c.rotationUpdatedLocked(name, old, ms)
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
func (c *Cache) wakeLater(w *watcher, changedAt time.Time) {
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

// buildMeshState derives the served state of a mesh: which CA signs and
// which are trusted (moving through a CA change, see rotation.go), reusing
// the previous serialized bundle when the trust bundle did not change.
func (c *Cache) buildMeshState(rm *meshconfig.ResolvedMesh, old *meshState, changedAt time.Time) *meshState {
	ms := &meshState{resolved: rm, target: rm.CA, validity: rm.DPCertValidity, changedAt: changedAt, watchers: map[string]map[*watcher]struct{}{}}
	if ms.validity <= 0 {
		ms.validity = meshconfig.DefaultDPCertValidity
	}
	var (
		prev       rotationStep
		prevTarget *pki.CA
	)
	if old != nil {
		ms.watchers = old.watchers
		prev = rotationStep{issuing: old.ca, trusted: old.trusted, phase: old.phase}
		prevTarget = old.target
		ms.rotation = old.rotation
	}
	step := nextStep(prev, prevTarget, rm.CA, c.cfg.Now())
	ms.ca, ms.trusted, ms.phase = step.issuing, step.trusted, step.phase
	if ms.ca == nil {
		return ms
	}
	ms.caVersion = caVersionOf(ms.ca, ms.validity)
	if old != nil {
		ms.bundleVer, ms.bundle = old.bundleVer, old.bundle
	}
	if c.setBundle(ms) || old == nil {
		return ms
	}
	ms.changedAt = old.changedAt
	return ms
}

// caVersionOf identifies what a workload certificate depends on: the
// signing CA (its key matches it), the intermediates sent after it and the
// validity, not the root: a root re-issued with the same key (a longer
// validity, say) changes the trust bundle only, and is pushed to the bundle
// streams only.
func caVersionOf(ca *pki.CA, validity time.Duration) string {
	return fmt.Sprintf("%s/%d", contentVersion(ca.Chain[0].Raw, ca.IssuedChainPEM), validity)
}

// setBundle serializes the trust bundle of ms.trusted, once per change, for
// every stream to share. It reports whether the bundle changed.
func (c *Cache) setBundle(ms *meshState) bool {
	pem := bundlePEM(ms.trusted)
	ver := contentVersion(pem)
	if ver == ms.bundleVer && ms.bundle != nil {
		return false
	}
	ms.bundleVer = ver
	ms.bundle = map[string]*anypb.Any{}
	for _, name := range []string{NameMeshCA, AliasMeshCA} {
		a, err := anypb.New(&tlsv3.Secret{
			Name: name,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pem}},
			}},
		})
		if err != nil {
			// Marshalling a well-formed message cannot fail; keep serving
			// the rest rather than crash.
			c.log.Error("serializing trust bundle", keyMesh, ms.resolved.Name, keyErr, err)
			continue
		}
		ms.bundle[name] = a
	}
	return true
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

// watch registers a stream of id, which wake tells of changes. The returned
// function unregisters it.
func (c *Cache) watch(id *Identity, wake func()) (*watcher, func()) {
	w := &watcher{id: id, idKey: id.key(), wake: wake}
	c.mu.Lock()
	ms := c.meshes[id.Mesh]
	if ms == nil {
		// The mesh may appear later: keep a placeholder that Update fills.
		ms = &meshState{watchers: map[string]map[*watcher]struct{}{}}
		c.meshes[id.Mesh] = ms
	}
	set := ms.watchers[w.idKey]
	if set == nil {
		set = map[*watcher]struct{}{}
		ms.watchers[w.idKey] = set
	}
	set[w] = struct{}{}
	c.mu.Unlock()
	return w, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if ms := c.meshes[id.Mesh]; ms != nil {
			if set := ms.watchers[w.idKey]; set != nil {
				delete(set, w)
				if len(set) == 0 {
					delete(ms.watchers, w.idKey)
				}
			}
			if ms.resolved == nil && len(ms.watchers) == 0 {
				delete(c.meshes, id.Mesh) // an unused placeholder
			}
		}
	}
}

// revoked reports whether id's token is revoked in its mesh.
func (c *Cache) revoked(id *Identity) bool {
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

// identityCert returns the workload certificate of w's identity, issuing
// one when none is cached for the mesh's current CA.
// ok is false while the mesh has no CA. It waits for the issuance, which
// runs on the cache's pool, never on the caller's goroutine.
func (c *Cache) identityCert(w *watcher) (e *certEntry, ok bool, err error) {
	for {
		c.mu.Lock()
		ms := c.meshes[w.id.Mesh]
		if ms == nil || ms.ca == nil {
			c.mu.Unlock()
			return nil, false, nil
		}
		if e := c.certs[w.idKey]; e != nil && e.caVersion == ms.caVersion {
			c.mu.Unlock()
			return e, true, nil
		}
		call := c.startIssueLocked(w.id, w.idKey, ms, false)
		c.mu.Unlock()

		<-call.done
		if errors.Is(call.err, errCAChanged) {
			continue // issue under the CA that replaced it
		}
		if call.err != nil {
			return nil, false, call.err
		}
		return call.e, true, nil
	}
}

// errCAChanged ends an issuance that had not started when its CA was
// replaced.
var errCAChanged = errors.New("the CA changed before issuing")

// startIssueLocked returns the issuance of the certificate of id (whose key
// is key) under ms's current CA, starting it on the pool unless it runs
// already. When wake is set, the streams of id are woken once it is done.
// c.mu must be held.
func (c *Cache) startIssueLocked(id *Identity, key string, ms *meshState, wake bool) *issueCall {
	flightKey := key + "\x00" + ms.caVersion
	if call := c.inflight[flightKey]; call != nil {
		return call
	}
	call := &issueCall{done: make(chan struct{})}
	c.inflight[flightKey] = call
	ca, validity, caVersion := ms.ca, ms.validity, ms.caVersion
	c.pool.submit(func() {
		c.mu.Lock()
		stale := c.meshes[id.Mesh] == nil || c.meshes[id.Mesh].caVersion != caVersion
		c.mu.Unlock()
		if stale {
			// Queued behind a CA that is gone (two changes in a row): the
			// new CA's own issuance is queued, and wakes the streams.
			call.err = errCAChanged
			wake = false
		} else {
			call.e, call.err = c.issue(id, key, ca, validity, caVersion)
		}
		c.mu.Lock()
		delete(c.inflight, flightKey)
		close(call.done)
		var woken []*watcher
		if ms := c.meshes[id.Mesh]; wake && ms != nil {
			for w := range ms.watchers[key] {
				if w.interest.Load()&wantIdentity != 0 {
					woken = append(woken, w)
				}
			}
		}
		c.mu.Unlock()
		now := c.cfg.Now()
		for _, w := range woken {
			w.notify(now)
		}
	})
	return call
}

// issue signs a certificate for id (whose key is key) and caches it with a
// renewal timer. Only one issue per identity and CA runs at a time.
func (c *Cache) issue(id *Identity, key string, ca *pki.CA, validity time.Duration, caVersion string) (*certEntry, error) {
	c.mu.Lock()
	if e := c.certs[key]; e != nil && e.caVersion == caVersion {
		c.mu.Unlock()
		return e, nil
	}
	c.mu.Unlock()

	e, err := c.sign(id, ca, validity, caVersion)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := c.meshes[id.Mesh]
	if ms == nil || ms.caVersion != caVersion {
		// The CA changed while we signed: hand this one out once, but do
		// not cache it; the streams are woken for the new CA anyway.
		e.stop = func() bool { return false }
		return e, nil
	}
	c.installLocked(id.Mesh, key, e)
	return e, nil
}

// sign issues a certificate for id under ca, not yet cached.
func (c *Cache) sign(id *Identity, ca *pki.CA, validity time.Duration, caVersion string) (*certEntry, error) {
	start := c.cfg.Now()
	cert, err := pki.IssueWorkloadCert(ca, id.URIs(), validity, c.cfg.KeyType, start)
	if err != nil {
		return nil, fmt.Errorf("issuing for %s: %w", id.NodeID(), err)
	}
	c.metrics.issued.Inc()
	c.metrics.issueSeconds.Observe(c.cfg.Now().Sub(start).Seconds())
	c.metrics.workloadExpiry.WithLabelValues(id.Mesh).Set(float64(cert.NotAfter.Unix()))
	return &certEntry{
		caVersion: caVersion, cert: cert, version: contentVersion(cert.LeafDER, cert.IssuedChainPEM),
		renewAt: RenewalTime(cert.NotBefore, cert.NotAfter, c.cfg.Jitter()),
	}, nil
}

// installLocked caches e as the certificate of identity key, with its
// renewal timer.
func (c *Cache) installLocked(mesh, key string, e *certEntry) {
	if old := c.certs[key]; old != nil {
		old.stop()
	}
	e.stop = c.cfg.AfterFunc(e.renewAt.Sub(c.cfg.Now()), func() { c.renew(mesh, key, e) })
	c.certs[key] = e
}

// identityResource serializes cert as the Secret called name.
func identityResource(name string, cert *pki.WorkloadCert) (*anypb.Any, error) {
	a := &anypb.Any{}
	err := anypb.MarshalFrom(a, &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cert.ChainPEM()}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cert.KeyPEM()}},
		}},
	}, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		return nil, fmt.Errorf("serializing workload certificate: %w", err)
	}
	return a, nil
}

// renew evicts e, the certificate of identity key, and wakes the streams
// that serve it so that they fetch a fresh one. An identity without streams
// is simply forgotten and issued anew when it reconnects.
func (c *Cache) renew(mesh, key string, e *certEntry) {
	c.mu.Lock()
	defer c.unlock()
	if c.certs[key] != e {
		return
	}
	delete(c.certs, key)
	ms := c.meshes[mesh]
	if ms == nil {
		return
	}
	now := c.cfg.Now()
	for w := range ms.watchers[key] {
		if w.interest.Load()&wantIdentity != 0 {
			c.wakeLater(w, now)
		}
	}
}

// whyNotServed says why mesh cannot be served now, or nil when it can.
func (c *Cache) whyNotServed(mesh string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := c.meshes[mesh]
	switch {
	case ms == nil || ms.resolved == nil:
		return fmt.Errorf("mesh %q does not exist", mesh)
	case ms.ca == nil && ms.resolved.Err != nil:
		return fmt.Errorf("mesh %q has no valid CA: %w", mesh, ms.resolved.Err)
	case ms.ca == nil:
		return fmt.Errorf("mesh %q does not have mTLS enabled", mesh)
	}
	return nil
}
