package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// Duty is work only the leader does, such as writing Kubernetes Events or
// removing what nobody uses any more. It runs until ctx ends (the
// leadership is lost) and must return then.
type Duty func(ctx context.Context)

// LeaderConfig configures a Leader.
type LeaderConfig struct {
	ID      string
	Elector Elector
	Duties  []Duty
	Logger  *slog.Logger
	Metrics *Metrics
	// OnChange is called (from the election's goroutine) each time this
	// replica gains or loses the leadership.
	OnChange func(leading bool)
}

// Leader is this replica's part in the leader election.
type Leader struct {
	cfg     LeaderConfig
	leading atomic.Bool
}

// NewLeader returns the election of cfg; Run runs it.
func NewLeader(cfg LeaderConfig) (*Leader, error) {
	if cfg.ID == "" || cfg.Elector == nil {
		return nil, errors.New("cluster: a replica id and an elector are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics, _ = NewMetrics(nil)
	}
	return &Leader{cfg: cfg}, nil
}

// IsLeader reports whether this replica leads now.
func (l *Leader) IsLeader() bool { return l.leading.Load() }

// Run campaigns until ctx ends, running the duties while this replica
// leads.
func (l *Leader) Run(ctx context.Context) error {
	log := l.cfg.Logger.With("replica", l.cfg.ID)
	return l.cfg.Elector.Lead(ctx, l.cfg.ID, func(lctx context.Context) {
		l.set(true)
		log.Info("leading the replicas")
		var wg sync.WaitGroup
		for _, d := range l.cfg.Duties {
			wg.Go(func() { d(lctx) })
		}
		<-lctx.Done()
		wg.Wait()
		l.set(false)
		if ctx.Err() == nil {
			log.Warn("lost the leadership; another replica takes over")
		}
	})
}

func (l *Leader) set(leading bool) {
	l.leading.Store(leading)
	v := 0.0
	if leading {
		v = 1
	}
	l.cfg.Metrics.leader.Set(v)
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(leading)
	}
}

// NewReplicaID returns an id for this process among the replicas: its host
// name (a pod's name in Kubernetes) and a random suffix, so that a
// restarted replica is a new one, in the characters a Kubernetes object
// name allows.
func NewReplicaID() string {
	host, _ := os.Hostname()
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0:
			b.WriteByte('-')
		}
		if b.Len() >= 40 {
			break
		}
	}
	name := strings.Trim(b.String(), "-")
	if name == "" {
		name = "meshsds"
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix) // never fails
	return name + "-" + hex.EncodeToString(suffix)
}
