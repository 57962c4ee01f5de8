package daemon

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/meshsds/meshsds/cluster"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/kube"
	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/postgres"
)

// Replicas that share PostgreSQL (--store postgres) or a Kubernetes API
// server (--kubernetes, which wins when both are given: its Leases are
// where Kubernetes users look) act as one: they go through CA changes
// together and elect a leader for the work done once. A lone replica on
// the embedded store decides alone.

// replicaBackend is a cluster.Backend whose leader also forgets replicas
// long dead.
type replicaBackend interface {
	cluster.Backend
	PruneReplicas(ctx context.Context, ago time.Duration) error
}

var (
	_ replicaBackend = (*postgres.Store)(nil)
	_ replicaBackend = (*kube.Cluster)(nil)
)

// Housekeeping periods of the leader.
const (
	// orphanedCAPeriod: a mesh absent from every source for this long loses
	// its generated builtin CA.
	orphanedCAPeriod = time.Minute
	// pruneReplicasAfter: a replica whose lease expired this long ago is
	// forgotten.
	pruneReplicasAfter = time.Hour
	// revocationPeriod: how often expired token ids leave the admin API's
	// revocation lists (and once when the duty starts).
	revocationPeriod = 10 * time.Minute
	// revocationGrace: how long after its token's expiry an id stays, for
	// replicas whose clocks are behind.
	revocationGrace = time.Hour
	// clusterSyncWait bounds how long a starting replica waits to read the
	// shared state before it serves: it joins a CA change in progress
	// rather than start its own, but never waits for ever on a database or
	// API server it cannot reach.
	clusterSyncWait = 10 * time.Second
)

// openCluster sets up the coordinator and the election over PostgreSQL or
// Kubernetes; nothing for a lone replica.
func (d *Daemon) openCluster(pg *postgres.Store, kubeSrc *kube.Source, reg prometheus.Registerer) error {
	d.sharedStore = pg != nil
	switch {
	case kubeSrc != nil:
		kc := kubeSrc.Cluster()
		d.backend, d.elector = kc, kc.Elector(d.cfg.ReplicaLease)
	case pg != nil:
		d.backend, d.elector = pg, pg.Elector(d.cfg.ReplicaLease/6)
	default:
		return nil
	}
	var err error
	if d.cmetrics, err = cluster.NewMetrics(reg); err != nil {
		return err
	}
	d.replicaID = cluster.NewReplicaID()
	d.coord, err = cluster.New(cluster.Config{
		ID: d.replicaID, Backend: d.backend, Lease: d.cfg.ReplicaLease, RotationTimeout: d.cfg.CARotationTimeout,
		Logger: d.log, Metrics: d.cmetrics,
	})
	return err
}

// newLeader is the election and the leader's duties: builtin CAs of
// deleted meshes removed, expired token ids out of revocation lists, dead
// replicas forgotten (Events and builtin CA generation check leading
// themselves).
func (d *Daemon) newLeader() (*cluster.Leader, error) {
	if d.elector == nil {
		return nil, nil
	}
	duties := []cluster.Duty{
		func(ctx context.Context) { d.rec.RemoveOrphanedCAs(ctx, d.orphans, orphanedCAPeriod) },
		func(ctx context.Context) {
			t := time.NewTicker(pruneReplicasAfter / 4)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := d.backend.PruneReplicas(ctx, pruneReplicasAfter); err != nil && ctx.Err() == nil {
						d.log.Warn("forgetting dead replicas", "err", err)
					}
				}
			}
		},
	}
	if d.sharedStore { // else every replica prunes its own store (runCluster)
		duties = append(duties, func(ctx context.Context) { d.pruneRevocations(ctx, revocationPeriod) })
	}
	return cluster.NewLeader(cluster.LeaderConfig{
		ID: d.replicaID, Elector: d.elector, Logger: d.log, Metrics: d.cmetrics,
		OnChange: func(leading bool) {
			if leading {
				d.rec.Kick() // builtin CAs that waited for a leader
			}
		},
		Duties: duties,
	})
}

// pruneRevocations removes, now and then every period until ctx ends, the
// ids of tokens expired for revocationGrace from the revocation lists of
// the store (the admin API's): no such token can be accepted again, and
// the lists would otherwise only grow. Only ids that carry their token's
// expiry (token.IDExpiry: every token meshsds issues) are known to have
// expired; lists in files and Kubernetes are their owners' to edit.
func (d *Daemon) pruneRevocations(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		now := time.Now()
		pruned, err := store.PruneRevocations(ctx, d.store, func(id string) bool {
			exp, ok := token.IDExpiry(id)
			return ok && now.After(exp.Add(revocationGrace))
		})
		if err != nil && ctx.Err() == nil {
			d.log.Warn("removing expired token ids from revocation lists", secretsource.LogErr, err)
		}
		for name, n := range pruned {
			d.log.Info("removed the ids of expired tokens from a revocation list", secretsource.LogSecret, name, "ids", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leading reports whether this replica does the work done once: always
// for a lone replica.
func (d *Daemon) leading() bool {
	return d.leader == nil || d.leader.IsLeader()
}

// runCluster starts the coordinator and the election in g.
func (d *Daemon) runCluster(ctx context.Context, g *errgroup.Group) {
	if d.coord == nil {
		// A lone replica does the leader's work itself.
		g.Go(func() error {
			d.rec.RemoveOrphanedCAs(ctx, d.orphans, orphanedCAPeriod)
			return nil
		})
		g.Go(func() error {
			d.pruneRevocations(ctx, revocationPeriod)
			return nil
		})
		return
	}
	if kc, ok := d.backend.(*kube.Cluster); ok {
		kc.Start(ctx)
	}
	if !d.sharedStore {
		// Kubernetes replicas on the embedded store: each its own.
		g.Go(func() error {
			d.pruneRevocations(ctx, revocationPeriod)
			return nil
		})
	}
	d.log.Info("sharing CA changes with the other replicas", "replica", d.replicaID, "lease", d.cfg.ReplicaLease)
	g.Go(func() error { return d.coord.Run(ctx, d.state) })
	g.Go(func() error { return d.leader.Run(ctx) })
}

// awaitCluster waits (a bounded time) until the coordinator has read the
// shared state once.
func (d *Daemon) awaitCluster(ctx context.Context) {
	if d.coord == nil {
		return
	}
	select {
	case <-d.coord.Synced():
	case <-ctx.Done():
	case <-time.After(clusterSyncWait):
		d.log.Warn("the replicas' shared state cannot be read yet; serving anyway (a CA change in progress elsewhere is joined once it can be read)")
	}
}
