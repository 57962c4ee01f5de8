package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshsds/meshsds/secretsource"
)

// The listener's timing.
const (
	// listenPing is how often an idle listening connection is checked, so
	// that a silently dead one is replaced (meanwhile the store's source
	// polls the revision).
	listenPing = 30 * time.Second
	// listenRetryMax caps the wait between reconnections.
	listenRetryMax = 30 * time.Second
	// listenStartWait bounds how long Open waits for the first LISTEN.
	listenStartWait = 10 * time.Second
)

// listen holds one connection LISTENing on the store's channels until ctx
// ends, reconnecting when it breaks: a write by any replica wakes this
// one's store source (Changes) and coordinator (Wake) at once. ready is
// closed once it listens for the first time (or gives up trying at once).
func (s *Store) listen(ctx context.Context, cfg *pgx.ConnConfig, ready chan<- struct{}) {
	readyOnce := func() {
		if ready != nil {
			close(ready)
			ready = nil
		}
	}
	defer readyOnce()
	retry := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, cfg, readyOnce)
		s.listening.Store(false)
		if ctx.Err() != nil {
			return
		}
		readyOnce()
		s.log.Warn("listening for other replicas' writes failed; polling until it is back", "retry_in", retry, secretsource.LogErr, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, listenRetryMax)
	}
}

// listenOnce listens on one connection until it fails.
func (s *Store) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.PgConn().Exec(ctx, sqlListen).Close(); err != nil {
		return err
	}
	var schema string
	if err := conn.QueryRow(ctx, sqlSchema).Scan(&schema); err != nil {
		return err
	}
	s.listening.Store(true)
	// Whatever was written while nobody listened is read now.
	s.Notify()
	s.wakeCluster()
	listening()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case pgconn.Timeout(err):
			pctx, cancel := context.WithTimeout(ctx, defaultConnectTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
			continue
		default:
			return err
		}
		if n.Payload != schema {
			continue // a store in another schema of the database
		}
		switch n.Channel {
		case channelStore:
			s.Notify()
		case channelCluster:
			s.wakeCluster()
		}
	}
}

// notifyOwnWrite signals Changes after a write of this process, unless the
// listener is up: then the write's notification comes back through it, and
// signalling twice would wake the source for nothing.
func (s *Store) notifyOwnWrite() {
	if !s.listening.Load() {
		s.Notify()
	}
}

func (s *Store) wakeCluster() {
	select {
	case s.clusterWake <- struct{}{}:
	default:
	}
}
