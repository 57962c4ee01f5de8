// Package reconcile turns what the secret sources hold into what the SDS
// cache serves: it merges the sources' views, resolves every Mesh's CA
// (keeping each mesh's last good CA when its resolution fails) and hands the
// result to the cache, after every change and once all sources have synced.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
)

// Sink receives the resolved meshes. Update is called from one goroutine with
// a complete view; SetReady once, after the first Update.
type Sink interface {
	Update(meshes map[string]*meshconfig.ResolvedMesh, changedAt time.Time)
	SetReady()
}

// CAProvisioner generates the CA of a builtin backend into a writable store,
// as the Secrets meshconfig.BuiltinSecretNames names. It is called from the
// reconcile loop (one goroutine) for every builtin backend whose Secrets are
// missing; it must be idempotent and agree across replicas (create-if-absent,
// then read back). The new Secrets reach the reconciler through the store's
// source like any other write.
type CAProvisioner interface {
	ProvisionBuiltinCA(ctx context.Context, mesh string, backend meshconfig.Backend) error
}

// Config configures a Reconciler.
type Config struct {
	// Provisioner generates builtin CAs; without one, builtin backends stay
	// unresolved until their Secrets appear by other means.
	Provisioner CAProvisioner
	// Leading reports whether this replica is the leader, which alone
	// generates builtin CAs among replicas (the others wait for the CA to
	// reach them); nil means always. Call Kick when it becomes true.
	Leading    func() bool
	Sources    []secretsource.Source // in precedence order: the first wins a conflict
	Sink       Sink
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Resync re-resolves the meshes this often even without a change, so
	// that CA files referenced by path and CA expiry are noticed. Default 30s.
	Resync time.Duration
	// ReadFile reads `file` data sources; default os.ReadFile.
	ReadFile func(string) ([]byte, error)
}

// Reconciler runs the sources and keeps the sink up to date.
type Reconciler struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	resolver *meshconfig.Resolver

	mu      sync.Mutex
	views   []*meshconfig.Resources // nil until that source first published
	pending time.Time               // earliest unprocessed change
	kick    chan struct{}

	ready     atomic.Bool
	current   atomic.Pointer[meshconfig.Resources] // the last merged view
	meshErrs  map[string]string                    // last reported error per mesh
	conflicts map[meshconfig.Conflict]time.Time    // since when
	// conflictProblems is conflicts for Problems.
	conflictProblems atomic.Pointer[[]secretsource.Problem]
}

// New returns a Reconciler; at least one source and a sink are required.
func New(cfg Config) (*Reconciler, error) {
	if len(cfg.Sources) == 0 {
		return nil, errors.New("no secret source configured")
	}
	if cfg.Sink == nil {
		return nil, errors.New("reconcile needs a sink")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Reconciler{
		cfg:       cfg,
		log:       cfg.Logger,
		metrics:   m,
		resolver:  meshconfig.NewResolver(meshconfig.ResolveOptions{ReadFile: cfg.ReadFile}),
		views:     make([]*meshconfig.Resources, len(cfg.Sources)),
		kick:      make(chan struct{}, 1),
		meshErrs:  map[string]string{},
		conflicts: map[meshconfig.Conflict]time.Time{},
	}, nil
}

// Ready reports whether every source has synced and the sink holds the
// result.
func (r *Reconciler) Ready() bool { return r.ready.Load() }

// Current returns the merged view of every source, as last reconciled, and
// false until every source has synced. It may be called from any
// goroutine; the view must not be modified.
func (r *Reconciler) Current() (meshconfig.Resources, bool) {
	v := r.current.Load()
	if v == nil {
		return meshconfig.Resources{}, false
	}
	return *v, true
}

// Run runs every source and the reconcile loop until ctx ends or a source
// fails.
func (r *Reconciler) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for i, src := range r.cfg.Sources {
		g.Go(func() error {
			err := src.Run(ctx, func(res meshconfig.Resources) { r.publish(i, res) })
			if err != nil {
				return fmt.Errorf("source %s: %w", src.Name(), err)
			}
			return nil
		})
	}
	g.Go(func() error { return r.loop(ctx) })
	return g.Wait()
}

// OrphanRemover deletes the builtin CAs of meshes that no longer exist:
// the writable store that ProvisionBuiltinCA wrote them to. It returns what
// it deleted (or, where it may not delete, reported).
type OrphanRemover interface {
	DeleteOrphanedBuiltinCAs(ctx context.Context, exists func(mesh string) bool) ([]string, error)
}

// RemoveOrphanedCAs deletes, every period until ctx ends, the builtin CAs
// of meshes that no source has held for a whole period: a mesh defined in
// a file leaves its generated CA behind when the file is deleted. A mesh
// that is briefly absent (a file being replaced, a source not synced yet)
// keeps its CA. It is a leader's duty among replicas.
func (r *Reconciler) RemoveOrphanedCAs(ctx context.Context, remover OrphanRemover, period time.Duration) {
	var absentBefore map[string]bool // meshes absent at the previous pass
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		view, ok := r.Current()
		if !ok {
			continue
		}
		absentNow := map[string]bool{}
		deleted, err := remover.DeleteOrphanedBuiltinCAs(ctx, func(mesh string) bool {
			if _, ok := view.Meshes[mesh]; ok {
				return true
			}
			absentNow[mesh] = true
			return !absentBefore[mesh] // absent for a whole period: an orphan
		})
		absentBefore = absentNow
		if err != nil && ctx.Err() == nil {
			r.log.Error("removing the builtin CAs of deleted meshes", secretsource.LogErr, err)
		}
		for _, name := range deleted {
			r.log.Info("removed the builtin CA of a deleted mesh", secretsource.LogSecret, name)
		}
	}
}

// Kick makes the reconciler go over every source's view again now, as
// when a replica becomes the leader and has builtin CAs to generate.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Reconciler) publish(i int, res meshconfig.Resources) {
	r.mu.Lock()
	r.views[i] = &res
	if r.pending.IsZero() {
		r.pending = r.cfg.Now()
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// loop is the one goroutine that resolves and updates the sink.
func (r *Reconciler) loop(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-t.C:
			if !r.ready.Load() {
				continue
			}
		}
		r.reconcile(ctx)
	}
}

// reconcile merges, resolves and hands the result to the sink, once every
// source has published.
func (r *Reconciler) reconcile(ctx context.Context) {
	r.mu.Lock()
	views := make([]meshconfig.NamedView, 0, len(r.views))
	for i, v := range r.views {
		if v == nil {
			r.mu.Unlock()
			return // not every source has synced: serve nothing partial
		}
		views = append(views, meshconfig.NamedView{Source: r.cfg.Sources[i].Name(), Resources: *v})
	}
	changedAt := r.pending
	r.pending = time.Time{}
	r.mu.Unlock()
	if changedAt.IsZero() {
		changedAt = r.cfg.Now()
	}

	merged, conflicts := meshconfig.Merge(views)
	r.current.Store(&merged)
	r.reportConflicts(conflicts)
	r.provision(ctx, merged)
	resolved := r.resolver.Resolve(merged, r.cfg.Now())
	r.reportMeshErrors(resolved)
	r.cfg.Sink.Update(resolved, changedAt)
	if !r.ready.Swap(true) {
		r.cfg.Sink.SetReady()
		r.log.Info("all sources synced; serving", "meshes", len(resolved))
	}
	r.metrics.lastReconcile.SetToCurrentTime()
}

// provision asks for the CA of every builtin backend that has none yet.
func (r *Reconciler) provision(ctx context.Context, res meshconfig.Resources) {
	if r.cfg.Provisioner == nil || r.cfg.Leading != nil && !r.cfg.Leading() {
		return
	}
	for _, m := range res.Meshes {
		if m.MTLS == nil {
			continue
		}
		for _, b := range m.MTLS.Backends {
			if b.Type != meshconfig.BackendBuiltin {
				continue
			}
			cert, key := meshconfig.BuiltinSecretNames(m.Name, b.Name)
			_, hasCert := res.Secrets[meshconfig.SecretKey{Mesh: m.Name, Name: cert}]
			_, hasKey := res.Secrets[meshconfig.SecretKey{Mesh: m.Name, Name: key}]
			if hasCert && hasKey {
				continue
			}
			if err := r.cfg.Provisioner.ProvisionBuiltinCA(ctx, m.Name, b); err != nil {
				r.metrics.errors.WithLabelValues(m.Name).Inc()
				r.log.Error("generating the builtin CA failed; retrying on the next change", secretsource.LogMesh, m.Name, secretsource.LogBackend, b.Name, secretsource.LogErr, err)
			}
		}
	}
}

func (r *Reconciler) reportConflicts(conflicts []meshconfig.Conflict) {
	seen := make(map[meshconfig.Conflict]time.Time, len(conflicts))
	problems := make([]secretsource.Problem, 0, len(conflicts))
	for _, c := range conflicts {
		since, old := r.conflicts[c]
		if !old {
			since = r.cfg.Now()
			r.log.Warn("the same resource comes from two sources; the first configured source wins",
				"kind", c.Kind, secretsource.LogMesh, c.Mesh, "name", c.Name, "winner", c.Winner, "loser", c.Loser)
		}
		seen[c] = since
		subject := c.Kind + " " + c.Name
		if c.Mesh != "" {
			subject = c.Kind + " " + c.Mesh + "/" + c.Name
		}
		problems = append(problems, secretsource.Problem{
			Source: c.Loser, Subject: subject, Since: since,
			Message: "also defined by " + c.Winner + ", which wins: this copy is not served",
		})
	}
	r.conflicts = seen
	r.conflictProblems.Store(&problems)
	r.metrics.conflicts.Set(float64(len(conflicts)))
}

// Problems returns the current problems of every source that reports them
// (files or objects it cannot use), then the resources two sources define,
// in precedence order of the sources. It may be called from any goroutine.
func (r *Reconciler) Problems() []secretsource.Problem {
	var out []secretsource.Problem
	for _, src := range r.cfg.Sources {
		if pr, ok := src.(secretsource.ProblemReporter); ok {
			out = append(out, pr.Problems()...)
		}
	}
	if p := r.conflictProblems.Load(); p != nil {
		out = append(out, *p...)
	}
	return out
}

func (r *Reconciler) reportMeshErrors(resolved map[string]*meshconfig.ResolvedMesh) {
	for name := range r.meshErrs {
		if _, ok := resolved[name]; !ok {
			delete(r.meshErrs, name)
			r.metrics.failing.DeleteLabelValues(name)
		}
	}
	for name, rm := range resolved {
		if rm.Err == nil {
			if _, was := r.meshErrs[name]; was {
				r.log.Info("mesh resolves again", secretsource.LogMesh, name)
				delete(r.meshErrs, name)
			}
			r.metrics.failing.WithLabelValues(name).Set(0)
			continue
		}
		msg := rm.Err.Error()
		r.metrics.failing.WithLabelValues(name).Set(1)
		if r.meshErrs[name] != msg {
			r.meshErrs[name] = msg
			r.metrics.errors.WithLabelValues(name).Inc()
			what := "mesh cannot be resolved; keeping its last good CA"
			if rm.CA == nil {
				what = "mesh cannot be resolved and has no last good CA to keep: not served until it resolves"
			}
			r.log.Error(what, secretsource.LogMesh, name, "has_last_good", rm.CA != nil, secretsource.LogErr, rm.Err)
		}
	}
}

// Others looks up what every source but one holds, from their latest views.
// The admin API uses it to validate a Mesh against secrets kept in files or
// Kubernetes, and to refuse deleting a secret a Mesh elsewhere references.
type Others struct {
	r       *Reconciler
	exclude string
}

// Others returns a lookup over every source except the one named exclude.
func (r *Reconciler) Others(exclude string) *Others { return &Others{r: r, exclude: exclude} }

// views returns the latest views of the other sources, in precedence order.
func (o *Others) views() []*meshconfig.Resources {
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	var out []*meshconfig.Resources
	for i, v := range o.r.views {
		if v != nil && o.r.cfg.Sources[i].Name() != o.exclude {
			out = append(out, v)
		}
	}
	return out
}

// Views returns the latest complete view of every other source that has
// published one, with its name and origin, in precedence order: the first
// view holding a resource is the one it is served from (revocation lists
// aside, which add up). The admin API lists and gets resources from them.
func (o *Others) Views() []secretsource.View {
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	var out []secretsource.View
	for i, v := range o.r.views {
		src := o.r.cfg.Sources[i]
		if v != nil && src.Name() != o.exclude {
			out = append(out, secretsource.View{Source: src.Name(), Origin: secretsource.OriginOf(src), Resources: *v})
		}
	}
	return out
}

// Secret returns the data of the Secret mesh/name, as the first source that
// holds it has it.
func (o *Others) Secret(mesh, name string) ([]byte, bool) {
	for _, v := range o.views() {
		if s, ok := v.Secrets[meshconfig.SecretKey{Mesh: mesh, Name: name}]; ok {
			return s.Data, true
		}
	}
	return nil, false
}

// Meshes returns every Mesh the other sources hold.
func (o *Others) Meshes() []*meshconfig.Mesh {
	var out []*meshconfig.Mesh
	for _, v := range o.views() {
		for _, m := range v.Meshes {
			out = append(out, m)
		}
	}
	return out
}
