package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
)

// SourceName names the store's source in logs, metrics and conflict
// reports: "api", as what it holds is written through the admin API.
const SourceName = "api"

// SourceConfig configures a Source.
type SourceConfig struct {
	Store      Store
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Resync is how often the source checks the store's revision for
	// writes made by other processes (another replica, an offline CLI).
	// Default 5s.
	Resync time.Duration
}

// Source is the secret source that serves what the store holds.
type Source struct {
	store   Store
	log     *slog.Logger
	resync  time.Duration
	metrics *secretsource.Metrics
}

var _ secretsource.Source = (*Source)(nil)

// NewSource returns the source of cfg.Store.
func NewSource(cfg SourceConfig) (*Source, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("store source: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 5 * time.Second
	}
	m, err := secretsource.NewMetrics(cfg.Registerer, SourceName)
	if err != nil {
		return nil, err
	}
	return &Source{store: cfg.Store, log: cfg.Logger, resync: cfg.Resync, metrics: m}, nil
}

// Name implements secretsource.Source.
func (s *Source) Name() string { return SourceName }

// Run publishes the store's Meshes and Secrets: once at start, after every
// write this process commits (Store.Changes), and when the store's
// revision moved because another process wrote to it. It returns nil when
// ctx ends, or an error if the store cannot be read at start.
func (s *Source) Run(ctx context.Context, publish func(meshconfig.Resources)) error {
	view, rev, err := s.load(ctx)
	if err != nil {
		return fmt.Errorf("reading the store: %w", err)
	}
	publish(view)
	s.metrics.LastSync.SetToCurrentTime()
	t := time.NewTicker(s.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.store.Changes():
		case <-t.C:
			now, err := s.store.Revision(ctx)
			if err != nil {
				s.metrics.SyncErrors.Inc()
				s.log.Error("reading the store revision", secretsource.LogSource, SourceName, secretsource.LogErr, err)
				continue
			}
			if now == rev {
				continue
			}
		}
		v, r, err := s.load(ctx)
		if err != nil {
			// Keep serving the last view; the next change or tick retries.
			s.metrics.SyncErrors.Inc()
			s.log.Error("reading the store", secretsource.LogSource, SourceName, secretsource.LogErr, err)
			continue
		}
		view, rev = v, r
		publish(view)
		s.metrics.LastSync.SetToCurrentTime()
	}
}

// load reads every Mesh and Secret. The revision is read first, so a write
// racing with the read is seen again on the next tick.
func (s *Source) load(ctx context.Context) (meshconfig.Resources, int64, error) {
	rev, err := s.store.Revision(ctx)
	if err != nil {
		return meshconfig.Resources{}, 0, err
	}
	res := meshconfig.Resources{Meshes: map[string]*meshconfig.Mesh{}, Secrets: map[meshconfig.SecretKey]*meshconfig.Secret{}}
	meshes, err := s.store.List(ctx, KindMesh, "")
	if err != nil {
		return res, 0, err
	}
	for _, rec := range meshes {
		m, err := MeshFromRecord(rec)
		if err != nil {
			// A record this version cannot read harms only itself.
			s.metrics.SyncErrors.Inc()
			s.log.Error("skipping unreadable stored mesh", secretsource.LogSource, SourceName, secretsource.LogMesh, rec.Name, secretsource.LogErr, err)
			continue
		}
		res.Meshes[m.Name] = m
	}
	secrets, err := s.store.List(ctx, KindSecret, "")
	if err != nil {
		return res, 0, err
	}
	for _, rec := range secrets {
		res.Secrets[meshconfig.SecretKey{Mesh: rec.Mesh, Name: rec.Name}] = &meshconfig.Secret{Mesh: rec.Mesh, Name: rec.Name, Data: rec.Data}
	}
	return res, rev, nil
}

// MeshFromRecord decodes a stored Mesh.
func MeshFromRecord(rec Record) (*meshconfig.Mesh, error) {
	m := &meshconfig.Mesh{}
	if err := json.Unmarshal(rec.Data, m); err != nil {
		return nil, fmt.Errorf("stored mesh %q: %w", rec.Name, err)
	}
	m.Name = rec.Name
	return m, nil
}
