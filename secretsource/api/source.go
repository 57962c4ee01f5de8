package api

import (
	"context"
	"fmt"
	"time"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource/store"
)

// Name names the source in logs, metrics and conflict reports.
func (a *API) Name() string { return "api" }

// Run publishes the store's Meshes and Secrets: once at start, after every
// write through this API, and when the store's revision moved because
// another process wrote to it. It returns nil when ctx ends, or an error if
// the store cannot be read at start.
func (a *API) Run(ctx context.Context, publish func(meshconfig.Resources)) error {
	view, rev, err := a.load(ctx)
	if err != nil {
		return fmt.Errorf("reading the store: %w", err)
	}
	publish(view)
	a.metrics.lastSync.SetToCurrentTime()
	t := time.NewTicker(a.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.changed:
		case <-t.C:
			now, err := a.store.Revision(ctx)
			if err != nil {
				a.metrics.syncErrors.Inc()
				a.log.Error("reading the store revision", "source", a.Name(), "err", err)
				continue
			}
			if now == rev {
				continue
			}
		}
		v, r, err := a.load(ctx)
		if err != nil {
			// Keep serving the last view; the next change or tick retries.
			a.metrics.syncErrors.Inc()
			a.log.Error("reading the store", "source", a.Name(), "err", err)
			continue
		}
		view, rev = v, r
		publish(view)
		a.metrics.lastSync.SetToCurrentTime()
	}
}

// load reads every Mesh and Secret. The revision is read first, so a write
// racing with the read is seen again on the next tick.
func (a *API) load(ctx context.Context) (meshconfig.Resources, int64, error) {
	rev, err := a.store.Revision(ctx)
	if err != nil {
		return meshconfig.Resources{}, 0, err
	}
	res := meshconfig.Resources{Meshes: map[string]*meshconfig.Mesh{}, Secrets: map[meshconfig.SecretKey]*meshconfig.Secret{}}
	meshes, err := a.store.List(ctx, store.KindMesh, "")
	if err != nil {
		return res, 0, err
	}
	for _, rec := range meshes {
		m, err := meshFromRecord(rec)
		if err != nil {
			// A record this version cannot read harms only itself.
			a.metrics.syncErrors.Inc()
			a.log.Error("skipping unreadable stored mesh", "source", a.Name(), "mesh", rec.Name, "err", err)
			continue
		}
		res.Meshes[m.Name] = m
	}
	secrets, err := a.store.List(ctx, store.KindSecret, "")
	if err != nil {
		return res, 0, err
	}
	for _, rec := range secrets {
		res.Secrets[meshconfig.SecretKey{Mesh: rec.Mesh, Name: rec.Name}] = &meshconfig.Secret{Mesh: rec.Mesh, Name: rec.Name, Data: rec.Data}
	}
	return res, rev, nil
}
