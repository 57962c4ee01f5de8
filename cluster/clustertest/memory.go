// Package clustertest holds an in-memory cluster.Backend and Elector, for
// the tests of what builds on them, and the conformance suites every
// Backend and Elector passes (Run, RunElector).
package clustertest

import (
	"context"
	"sync"
	"time"

	"github.com/meshsds/meshsds/cluster"
)

// Memory is the shared state of replicas in one process: Client returns a
// replica's Backend on it, Elector an election among them.
type Memory struct {
	mu       sync.Mutex
	replicas map[string]memReplica
	changes  map[string]cluster.ChangeRecord
	clients  []*memClient
	leader   string
	released chan struct{}
}

type memReplica struct {
	progress []byte
	expires  time.Time
}

// NewMemory returns empty shared state.
func NewMemory() *Memory {
	return &Memory{replicas: map[string]memReplica{}, changes: map[string]cluster.ChangeRecord{}, released: make(chan struct{})}
}

// Client returns a Backend on m with its own Wake channel.
func (m *Memory) Client() cluster.Backend {
	c := &memClient{m: m, wake: make(chan struct{}, 1)}
	m.mu.Lock()
	m.clients = append(m.clients, c)
	m.mu.Unlock()
	return c
}

// wakeAll signals every client. m.mu must be held.
func (m *Memory) wakeAll() {
	for _, c := range m.clients {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

type memClient struct {
	m    *Memory
	wake chan struct{}
}

func (c *memClient) Publish(_ context.Context, id string, progress []byte, lease time.Duration) error {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.replicas[id]
	m.replicas[id] = memReplica{progress: append([]byte(nil), progress...), expires: time.Now().Add(lease)}
	if !ok || string(old.progress) != string(progress) {
		m.wakeAll()
	}
	return nil
}

func (c *memClient) Leave(_ context.Context, id string) error {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.replicas, id)
	m.wakeAll()
	return nil
}

func (c *memClient) Load(context.Context) (cluster.State, error) {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	st := cluster.State{Changes: map[string]cluster.ChangeRecord{}}
	for id, r := range m.replicas {
		if r.expires.After(now) {
			st.Replicas = append(st.Replicas, cluster.ReplicaRecord{ID: id, Progress: r.progress, Remaining: r.expires.Sub(now)})
		}
	}
	for mesh, ch := range m.changes {
		st.Changes[mesh] = ch
	}
	return st, nil
}

func (c *memClient) SetChange(_ context.Context, mesh string, change []byte, version int64) (bool, error) {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changes[mesh].Version != version {
		return false, nil
	}
	m.changes[mesh] = cluster.ChangeRecord{Change: append([]byte(nil), change...), Version: version + 1}
	m.wakeAll()
	return true, nil
}

func (c *memClient) Wake() <-chan struct{} { return c.wake }

// Elector returns an election among the replicas on m: the first to
// campaign leads until its context ends or Depose.
func (m *Memory) Elector() cluster.Elector { return memElector{m} }

// Depose ends the leadership of whoever leads, as if it had lost its lock.
func (m *Memory) Depose() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.leader != "" {
		close(m.released)
		m.released = make(chan struct{})
	}
}

// Leader is the id of the replica that leads, or "".
func (m *Memory) Leader() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leader
}

type memElector struct{ m *Memory }

func (e memElector) Lead(ctx context.Context, id string, lead func(context.Context)) error {
	m := e.m
	for {
		m.mu.Lock()
		if m.leader == "" {
			m.leader = id
			released := m.released
			m.mu.Unlock()
			lctx, cancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-released:
				case <-lctx.Done():
				}
				cancel()
			}()
			lead(lctx)
			cancel()
			m.mu.Lock()
			m.leader = ""
			m.mu.Unlock()
			if ctx.Err() != nil {
				return nil
			}
			time.Sleep(10 * time.Millisecond) // let another replica win
			continue
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
}
