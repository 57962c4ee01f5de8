package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshsds/meshsds/cluster"
	"github.com/meshsds/meshsds/secretsource"
)

// The replicas sharing the database share their state through it too: the
// Store is their cluster.Backend, and Elector elects their leader.
var _ cluster.Backend = (*Store)(nil)

// Publish implements cluster.Backend.
func (s *Store) Publish(ctx context.Context, id string, progress []byte, lease time.Duration) error {
	if _, err := s.pool.Exec(ctx, sqlPublish, id, cloneData(progress), lease.Microseconds()); err != nil {
		return fmt.Errorf("publishing replica %s: %w", id, ctxErr(ctx, err))
	}
	return nil
}

// Leave implements cluster.Backend.
func (s *Store) Leave(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, sqlLeave, id); err != nil {
		return fmt.Errorf("removing replica %s: %w", id, ctxErr(ctx, err))
	}
	return nil
}

// Load implements cluster.Backend: both reads in one round trip.
func (s *Store) Load(ctx context.Context) (cluster.State, error) {
	st := cluster.State{Changes: map[string]cluster.ChangeRecord{}}
	b := &pgx.Batch{}
	b.Queue(sqlLiveReplicas).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				r  cluster.ReplicaRecord
				us int64
			)
			if err := rows.Scan(&r.ID, &r.Progress, &us); err != nil {
				return err
			}
			r.Remaining = time.Duration(us) * time.Microsecond
			st.Replicas = append(st.Replicas, r)
		}
		return rows.Err()
	})
	b.Queue(sqlChanges).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				mesh string
				rec  cluster.ChangeRecord
			)
			if err := rows.Scan(&mesh, &rec.Change, &rec.Version); err != nil {
				return err
			}
			st.Changes[mesh] = rec
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return cluster.State{}, fmt.Errorf("reading the replicas' state: %w", ctxErr(ctx, err))
	}
	return st, nil
}

// SetChange implements cluster.Backend.
func (s *Store) SetChange(ctx context.Context, mesh string, change []byte, version int64) (bool, error) {
	var (
		tag pgconn.CommandTag
		err error
	)
	if version == 0 {
		tag, err = s.pool.Exec(ctx, sqlInsertChange, mesh, cloneData(change))
	} else {
		tag, err = s.pool.Exec(ctx, sqlUpdateChange, cloneData(change), mesh, version)
	}
	if err != nil {
		return false, fmt.Errorf("writing the CA change of mesh %s: %w", mesh, ctxErr(ctx, err))
	}
	return tag.RowsAffected() == 1, nil
}

// Wake implements cluster.Backend: the listener signals it.
func (s *Store) Wake() <-chan struct{} { return s.clusterWake }

// PruneReplicas forgets the replicas whose lease expired more than ago
// ago: a leader's housekeeping.
func (s *Store) PruneReplicas(ctx context.Context, ago time.Duration) error {
	if _, err := s.pool.Exec(ctx, sqlPruneReplicas, ago.Microseconds()); err != nil {
		return fmt.Errorf("removing expired replicas: %w", ctxErr(ctx, err))
	}
	return nil
}

// Elector returns the election of a leader among the replicas sharing the
// database: a session-level advisory lock, held on a connection of its
// own. A replica that dies releases it with its connection (at once when
// the process dies; when a network partition cuts it off, once the server
// notices); the others try to take it every retry. The leader checks its
// connection as often, and stops leading when it breaks.
func (s *Store) Elector(retry time.Duration) cluster.Elector {
	return &elector{s: s, retry: retry}
}

type elector struct {
	s     *Store
	retry time.Duration
}

func (e *elector) Lead(ctx context.Context, id string, lead func(context.Context)) error {
	for ctx.Err() == nil {
		if err := e.campaign(ctx, lead); err != nil && ctx.Err() == nil {
			e.s.log.Warn("leader election: the database connection failed; retrying", "replica", id, secretsource.LogErr, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(e.retry):
		}
	}
	return nil
}

// campaign connects and tries for the lock every retry until it has it,
// then leads until the connection breaks or ctx ends.
func (e *elector) campaign(ctx context.Context, lead func(context.Context)) error {
	conn, err := pgx.ConnectConfig(ctx, e.s.listenConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		var won bool
		if err := conn.QueryRow(ctx, sqlTryLead).Scan(&won); err != nil {
			return err
		}
		if won {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(e.retry):
		}
	}
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-lctx.Done():
				return
			case <-time.After(e.retry):
			}
			pctx, pcancel := context.WithTimeout(lctx, e.retry)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil && lctx.Err() == nil {
				cancel(fmt.Errorf("the leader's database connection broke: %w", err))
				return
			}
		}
	}()
	lead(lctx)
	cancel(nil)
	<-watched
	if ctx.Err() == nil && !conn.IsClosed() {
		// Hand the leadership over at once rather than when the
		// connection closes.
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), e.retry)
		defer ucancel()
		if _, err := conn.Exec(uctx, sqlUnlead); err != nil {
			return err
		}
	}
	if err := context.Cause(lctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
