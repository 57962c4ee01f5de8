package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
)

// Defaults of Config.
const (
	DefaultLease           = 15 * time.Second
	DefaultRotationTimeout = time.Minute
)

// retryAfterError is how soon the coordinator tries again after its
// backend failed.
const retryAfterError = time.Second

// leaveTimeout bounds the removal of this replica's record at shutdown.
const leaveTimeout = 5 * time.Second

// Config configures a Coordinator.
type Config struct {
	// ID names this replica among the others; unique per process (see
	// NewReplicaID). Required.
	ID      string
	Backend Backend
	// Lease is how long a replica that stops renewing is still waited
	// for; it renews every third of it. Default 15s.
	Lease time.Duration
	// RotationTimeout bounds each phase of a CA change across the
	// replicas: data planes or replicas that are not done by then are not
	// waited for any longer. Default 1m.
	RotationTimeout time.Duration
	Logger          *slog.Logger
	Metrics         *Metrics
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Advancer moves a mesh's CA change on: the SDS serving state
// (cache.Cache).
type Advancer interface {
	Advance(mesh, ca string, to cache.Phase, timedOut bool)
}

// Coordinator shares this replica's progress in every CA change with the
// others and moves a change on when they agree: a phase ends when every
// live replica is done with it (or has no data plane of the mesh), or when
// it times out. It implements cache.Coordinator.
//
// While the backend cannot be reached, a change in progress waits: moving
// on without knowing where the other replicas are could break handshakes
// between their data planes and ours, and waiting breaks none (the trust
// bundle carries both CAs until the change completes).
type Coordinator struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	kick    chan struct{}
	synced  chan struct{}

	mu           sync.Mutex
	local        map[string]cache.Progress
	localChanged bool
	replicas     []replica
	changes      map[string]*change
	syncedOnce   sync.Once
}

var _ cache.Coordinator = (*Coordinator)(nil)

// replica is a live replica's decoded record.
type replica struct {
	id        string
	progress  map[string]cache.Progress
	remaining time.Duration
}

// change is a mesh's CA change as the replicas share it.
type change struct {
	// CA is the fingerprint of the CA the mesh changes to.
	CA    string      `json:"ca"`
	Phase cache.Phase `json:"phase"`
	// Started is when the replica that shared the change saw it start.
	Started      time.Time `json:"started"`
	PhaseStarted time.Time `json:"phaseStarted"`
	// TimedOut: the phase before this one ended on its timeout.
	TimedOut bool `json:"timedOut,omitempty"`
	// Abandoned: it ended (Phase steady) because no replica was in it any
	// more (its mesh went back to the old CA, or moved to another).
	Abandoned bool `json:"abandoned,omitempty"`
	// Trusted are the chains (PEM) of the CAs trusted besides CA until
	// the change completes.
	Trusted []string `json:"trusted,omitempty"`

	version int64
	trusted []*pki.CA
}

// New returns a Coordinator; Run runs it.
func New(cfg Config) (*Coordinator, error) {
	if cfg.ID == "" || cfg.Backend == nil {
		return nil, errors.New("cluster: a replica id and a backend are required")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.RotationTimeout <= 0 {
		cfg.RotationTimeout = DefaultRotationTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics, _ = NewMetrics(nil) // nothing to register: cannot fail
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Coordinator{
		cfg: cfg, log: cfg.Logger.With("replica", cfg.ID), metrics: cfg.Metrics,
		kick: make(chan struct{}, 1), synced: make(chan struct{}),
		local: map[string]cache.Progress{}, changes: map[string]*change{},
	}, nil
}

// ID is this replica's id.
func (c *Coordinator) ID() string { return c.cfg.ID }

// Synced is closed once the coordinator has read the shared state once, so
// that a replica starting in the middle of a CA change joins it rather
// than start a change of its own.
func (c *Coordinator) Synced() <-chan struct{} { return c.synced }

// Progress implements cache.Coordinator.
func (c *Coordinator) Progress(mesh string, p cache.Progress) {
	c.mu.Lock()
	if p.CA == "" {
		delete(c.local, mesh)
	} else {
		c.local[mesh] = p
	}
	c.localChanged = true
	c.mu.Unlock()
	c.wake()
}

// Shared implements cache.Coordinator.
func (c *Coordinator) Shared(mesh string) (cache.SharedChange, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.changes[mesh]
	if ch == nil {
		return cache.SharedChange{}, false
	}
	return cache.SharedChange{CA: ch.CA, Phase: ch.Phase, Trusted: ch.trusted}, true
}

// Waiting implements cache.Coordinator.
func (c *Coordinator) Waiting(mesh string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.changes[mesh]
	if ch == nil || ch.Phase == cache.PhaseSteady {
		return nil
	}
	return waitingFor(mesh, ch, c.withSelf(c.local))
}

// ReplicaStatus is a live replica as this one last read it.
type ReplicaStatus struct {
	ID       string                    `json:"id"`
	Progress map[string]cache.Progress `json:"progress"`
}

// Replicas returns the live replicas as last read, this one included.
func (c *Coordinator) Replicas() []ReplicaStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ReplicaStatus
	for _, r := range c.withSelf(c.local) {
		out = append(out, ReplicaStatus{ID: r.id, Progress: maps.Clone(r.progress)})
	}
	slices.SortFunc(out, func(a, b ReplicaStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (c *Coordinator) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run publishes this replica's progress, renews its lease and moves CA
// changes on until ctx ends; then it removes this replica's record, so that
// the others stop waiting for it at once.
func (c *Coordinator) Run(ctx context.Context, adv Advancer) error {
	var nextHeartbeat time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveTimeout)
			defer cancel()
			if err := c.cfg.Backend.Leave(lctx, c.cfg.ID); err != nil {
				c.log.Warn("leaving the replicas: the others wait for this replica's lease to expire", sds.LogErr, err)
			}
			return nil
		case <-c.kick:
		case <-c.cfg.Backend.Wake():
		case <-timer.C:
		}
		next := c.step(ctx, adv, &nextHeartbeat)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(next, time.Millisecond))
	}
}

// step publishes what changed (or renews the lease when due), reads the
// shared state and acts on it. It returns how soon it must run again.
func (c *Coordinator) step(ctx context.Context, adv Advancer, nextHeartbeat *time.Time) time.Duration {
	now := c.cfg.Now()
	c.mu.Lock()
	local := maps.Clone(c.local)
	changed := c.localChanged
	c.localChanged = false
	c.mu.Unlock()

	if changed || !now.Before(*nextHeartbeat) {
		if err := c.publish(ctx, local); err != nil {
			c.mu.Lock()
			c.localChanged = true // published again on the retry
			c.mu.Unlock()
			c.backendError("publish", err)
			return retryAfterError
		}
		*nextHeartbeat = now.Add(c.cfg.Lease / 3)
	}
	st, err := c.cfg.Backend.Load(ctx)
	if err != nil {
		c.backendError("load", err)
		return retryAfterError
	}
	replicas, changes := c.decode(st)
	c.mu.Lock()
	c.replicas, c.changes = replicas, changes
	all := c.withSelf(local)
	c.mu.Unlock()
	c.metrics.replicas.Set(float64(len(all)))
	c.syncedOnce.Do(func() { close(c.synced) })

	next := nextHeartbeat.Sub(now)
	c.abandon(ctx, changes, all, now)
	for _, mesh := range slices.Sorted(maps.Keys(local)) {
		if d, ok := c.decide(ctx, adv, mesh, local[mesh], changes[mesh], all, now); ok && d < next {
			next = d
		}
	}
	return next
}

func (c *Coordinator) publish(ctx context.Context, local map[string]cache.Progress) error {
	payload, err := json.Marshal(local)
	if err != nil {
		return err
	}
	return c.cfg.Backend.Publish(ctx, c.cfg.ID, payload, c.cfg.Lease)
}

func (c *Coordinator) backendError(op string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	c.metrics.errors.WithLabelValues(op).Inc()
	c.log.Error("sharing CA change progress with the other replicas failed; CA changes in progress wait", "op", op, sds.LogErr, err)
}

// decode reads the backend's records; one that cannot be read is logged
// and left out (a replica of a newer meshsds, say).
func (c *Coordinator) decode(st State) ([]replica, map[string]*change) {
	replicas := make([]replica, 0, len(st.Replicas))
	for _, r := range st.Replicas {
		p := map[string]cache.Progress{}
		if err := json.Unmarshal(r.Progress, &p); err != nil {
			c.log.Warn("ignoring a replica's progress that cannot be read", "other", r.ID, sds.LogErr, err)
			continue
		}
		replicas = append(replicas, replica{id: r.ID, progress: p, remaining: r.Remaining})
	}
	now := c.cfg.Now()
	changes := make(map[string]*change, len(st.Changes))
	for mesh, rec := range st.Changes {
		ch := &change{version: rec.Version}
		if err := json.Unmarshal(rec.Change, ch); err != nil {
			c.log.Warn("ignoring a shared CA change that cannot be read", sds.LogMesh, mesh, sds.LogErr, err)
			continue
		}
		for _, p := range ch.Trusted {
			ca, err := pki.ParseTrustedCA([]byte(p), now)
			if err != nil {
				// An expired old CA need not be trusted any more.
				continue
			}
			ch.trusted = append(ch.trusted, ca)
		}
		changes[mesh] = ch
	}
	return replicas, changes
}

// withSelf is the live replicas with this one's own progress as it is now,
// whether or not its record is live in the backend. c.mu must be held.
func (c *Coordinator) withSelf(local map[string]cache.Progress) []replica {
	all := make([]replica, 0, len(c.replicas)+1)
	for _, r := range c.replicas {
		if r.id != c.cfg.ID {
			all = append(all, r)
		}
	}
	return append(all, replica{id: c.cfg.ID, progress: local, remaining: c.cfg.Lease})
}

// decide acts on mesh, where this replica is at p and the replicas share
// ch: it shares a change this replica started, follows one the others
// moved on, or moves one on when nobody waits any more or its phase timed
// out. It returns when it must look again, if it must.
func (c *Coordinator) decide(ctx context.Context, adv Advancer, mesh string, p cache.Progress, ch *change, all []replica, now time.Time) (time.Duration, bool) {
	if p.Phase == cache.PhaseSteady {
		return 0, false
	}
	// A change to this CA that nobody finished (abandoned), or that ended
	// before this replica's change began, is not this one: start afresh.
	over := ch != nil && ch.CA == p.CA && ch.Phase == cache.PhaseSteady && (ch.Abandoned || p.Since.After(ch.PhaseStarted))
	if ch == nil || ch.CA != p.CA || over {
		if ch != nil && ch.Phase != cache.PhaseSteady && !ch.Started.Before(p.Since) {
			// The others are in a change that started after ours: our
			// sources are behind. Wait for them to catch up.
			return 0, false
		}
		next := &change{CA: p.CA, Phase: cache.PhaseTrustNew, Started: p.Since, PhaseStarted: now}
		for _, ca := range p.Trusted {
			next.Trusted = append(next.Trusted, string(ca.ChainPEM()))
		}
		var version int64
		if ch != nil {
			version = ch.version
		}
		if c.setChange(ctx, mesh, next, version) {
			c.log.Info("CA change: shared with the other replicas", sds.LogMesh, mesh)
			return 0, true // look again at once
		}
		return retryAfterError, true
	}
	if ch.Phase.Later(p.Phase) {
		adv.Advance(mesh, ch.CA, ch.Phase, ch.TimedOut)
		return 0, false
	}
	if p.Phase.Later(ch.Phase) {
		return 0, false // only Advance moves this replica on: cannot happen
	}
	waiting := waitingFor(mesh, ch, all)
	timedOut := !now.Before(ch.PhaseStarted.Add(c.cfg.RotationTimeout))
	if len(waiting) > 0 && !timedOut {
		// Look again when the phase times out or a waited-for replica's
		// lease would expire.
		next := ch.PhaseStarted.Add(c.cfg.RotationTimeout).Sub(now)
		for _, r := range all {
			if slices.Contains(waiting, r.id) && r.id != c.cfg.ID {
				next = min(next, r.remaining+10*time.Millisecond)
			}
		}
		return next, true
	}
	if len(waiting) > 0 {
		c.log.Warn("CA change: replicas did not finish the phase in time; going on without them", sds.LogMesh, mesh,
			"phase", ch.Phase.String(), "waiting_replicas", waiting, "timeout", c.cfg.RotationTimeout)
	}
	next := *ch
	next.Phase, next.PhaseStarted, next.TimedOut = ch.Phase.Next(), now, len(waiting) > 0
	if !c.setChange(ctx, mesh, &next, ch.version) {
		return retryAfterError, true
	}
	c.metrics.advances.WithLabelValues(next.Phase.String()).Inc()
	adv.Advance(mesh, next.CA, next.Phase, next.TimedOut)
	return 0, true
}

// abandon ends the changes in progress that no live replica is in any
// more: the mesh went back to its old CA (or on to another) everywhere, or
// the only replicas in it died. Left in progress, such a change would
// look timed out to whoever changes the mesh to that CA again.
func (c *Coordinator) abandon(ctx context.Context, changes map[string]*change, all []replica, now time.Time) {
	for _, mesh := range slices.Sorted(maps.Keys(changes)) {
		ch := changes[mesh]
		if ch.Phase == cache.PhaseSteady || slices.ContainsFunc(all, func(r replica) bool { return r.progress[mesh].CA == ch.CA }) {
			continue
		}
		next := *ch
		next.Phase, next.PhaseStarted, next.Abandoned = cache.PhaseSteady, now, true
		if c.setChange(ctx, mesh, &next, ch.version) {
			c.log.Info("CA change: no replica is in it any more; it is over", sds.LogMesh, mesh)
			next.version++
			// changes is c.changes, which Shared reads: replaced under
			// the lock, never changed in place.
			c.mu.Lock()
			changes[mesh] = &next
			c.mu.Unlock()
		}
	}
}

// setChange writes ch at version; a lost race is not an error (the next
// step reads the winner).
func (c *Coordinator) setChange(ctx context.Context, mesh string, ch *change, version int64) bool {
	payload, err := json.Marshal(ch)
	if err != nil {
		c.backendError("set_change", err)
		return false
	}
	ok, err := c.cfg.Backend.SetChange(ctx, mesh, payload, version)
	if err != nil {
		c.backendError("set_change", err)
		return false
	}
	return ok
}

// waitingFor names the replicas that are not done with ch's phase: those
// serving mesh that are in an earlier phase, have data planes that did not
// ACK this one yet, or have not seen the CA the mesh changes to. A replica
// that does not serve mesh (or serves it without mTLS) has nothing to wait
// for.
func waitingFor(mesh string, ch *change, all []replica) []string {
	var out []string
	for _, r := range all {
		p, ok := r.progress[mesh]
		switch {
		case !ok:
		case p.CA != ch.CA:
			out = append(out, r.id)
		case p.Phase.Later(ch.Phase):
		case p.Phase == ch.Phase && p.Done:
		default:
			out = append(out, r.id)
		}
	}
	slices.Sort(out)
	return out
}

// Metrics are the coordinator's and the leader's metrics.
type Metrics struct {
	replicas prometheus.Gauge
	leader   prometheus.Gauge
	errors   *prometheus.CounterVec
	advances *prometheus.CounterVec
}

// NewMetrics registers the cluster metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		replicas: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshsds_cluster_replicas", Help: "Live replicas sharing CA changes, this one included.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshsds_cluster_leader", Help: "Whether this replica is the leader (1), which does the work done once: Events, builtin CA generation, cleanup.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_cluster_errors_total", Help: "Failed operations on the state the replicas share, by operation.",
		}, []string{"op"}),
		advances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_cluster_ca_change_phases_total", Help: "CA change phases this replica moved on for all replicas, by the phase entered.",
		}, []string{"phase"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.replicas, m.leader, m.errors, m.advances} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering cluster metrics: %w", err)
			}
		}
	}
	return m, nil
}
