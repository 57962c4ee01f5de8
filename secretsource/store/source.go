package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
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
	now     func() time.Time

	// problems are the last read's failures (Problems).
	problems atomic.Pointer[[]secretsource.Problem]
}

var (
	_ secretsource.Source          = (*Source)(nil)
	_ secretsource.Originer        = (*Source)(nil)
	_ secretsource.ProblemReporter = (*Source)(nil)
)

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
	return &Source{store: cfg.Store, log: cfg.Logger, resync: cfg.Resync, metrics: m, now: time.Now}, nil
}

// Name implements secretsource.Source.
func (s *Source) Name() string { return SourceName }

// Origin implements secretsource.Originer: what the store holds was written
// through the admin API.
func (s *Source) Origin() string { return secretsource.OriginAPI }

// Problems implements secretsource.ProblemReporter: why the store could not
// be read (the last view is still served), and the stored meshes this
// version cannot decode. It may be called from any goroutine.
func (s *Source) Problems() []secretsource.Problem {
	p := s.problems.Load()
	if p == nil {
		return nil
	}
	return slices.Clone(*p)
}

// setProblems records the current failures, keeping the time each was
// first seen.
func (s *Source) setProblems(cur []secretsource.Problem) {
	old := map[string]time.Time{}
	if p := s.problems.Load(); p != nil {
		for _, pr := range *p {
			old[pr.Subject+"\x00"+pr.Message] = pr.Since
		}
	}
	for i := range cur {
		if since, ok := old[cur[i].Subject+"\x00"+cur[i].Message]; ok {
			cur[i].Since = since
		} else {
			cur[i].Since = s.now()
		}
	}
	s.problems.Store(&cur)
}

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
			s.setProblems([]secretsource.Problem{{Source: SourceName, Subject: "store", Message: "cannot be read: " + err.Error() + " (the last view is served)"}})
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
	var problems []secretsource.Problem
	for _, rec := range meshes {
		m, err := MeshFromRecord(rec)
		if err != nil {
			// A record this version cannot read harms only itself.
			s.metrics.SyncErrors.Inc()
			s.log.Error("skipping unreadable stored mesh", secretsource.LogSource, SourceName, secretsource.LogMesh, rec.Name, secretsource.LogErr, err)
			problems = append(problems, secretsource.Problem{Source: SourceName, Subject: "Mesh " + rec.Name, Message: err.Error() + " (it is not served)"})
			continue
		}
		res.Meshes[m.Name] = m
	}
	secrets, err := s.store.List(ctx, KindSecret, "")
	if err != nil {
		return res, 0, err
	}
	for _, rec := range secrets {
		res.Secrets[meshconfig.SecretKey{Mesh: rec.Mesh, Name: rec.Name}] = &meshconfig.Secret{Mesh: rec.Mesh, Name: rec.Name, Data: rec.Data, Meta: RecordMeta(rec)}
	}
	s.setProblems(problems)
	return res, rev, nil
}

// RecordMeta is the Meta of a stored resource: its record's times.
func RecordMeta(rec Record) meshconfig.Meta {
	return meshconfig.Meta{CreatedAt: rec.CreatedAt, ModifiedAt: rec.ModifiedAt}
}

// MeshFromRecord decodes a stored Mesh.
func MeshFromRecord(rec Record) (*meshconfig.Mesh, error) {
	m := &meshconfig.Mesh{}
	if err := json.Unmarshal(rec.Data, m); err != nil {
		return nil, fmt.Errorf("stored mesh %q: %w", rec.Name, err)
	}
	m.Name = rec.Name
	m.Meta = RecordMeta(rec)
	return m, nil
}
