// Package cluster makes the meshsds replicas that serve the same meshes act
// as one control plane. They go through every CA change together: each
// replica publishes, per mesh, whether its connected data planes are done
// with the current phase, and a phase ends when every live replica is done
// or the phase times out (coordinator.go). And one of them, the leader, does
// the work that must be done once (leader.go).
//
// The shared state lives in a Backend: PostgreSQL
// (secretsource/store/postgres) or the Kubernetes API
// (secretsource/kube). clustertest holds an in-memory Backend and the
// conformance suite every Backend passes.
package cluster

import (
	"context"
	"time"
)

// Backend stores what the replicas share: a lease and a progress report
// per replica, and the state of each mesh's CA change. The payloads are
// opaque to it. Methods are safe for concurrent use.
type Backend interface {
	// Publish renews replica id's lease for lease from now and stores its
	// progress (creating its record the first time).
	Publish(ctx context.Context, id string, progress []byte, lease time.Duration) error
	// Leave removes replica id's record: it stops serving and must not be
	// waited for.
	Leave(ctx context.Context, id string) error
	// Load returns every replica whose lease has not expired, and every
	// mesh's change.
	Load(ctx context.Context) (State, error)
	// SetChange stores mesh's change if the stored one is still at version
	// (0: there is none). It reports whether it did: false means another
	// replica wrote first.
	SetChange(ctx context.Context, mesh string, change []byte, version int64) (bool, error)
	// Wake is signalled, without blocking the backend, when another
	// replica published a different progress, joined, left, or wrote a
	// change.
	Wake() <-chan struct{}
}

// Elector elects one leader among the replicas.
type Elector interface {
	// Lead campaigns until ctx ends. Each time replica id wins, it calls
	// lead with a context that ends when the leadership is lost (or ctx
	// ends), and campaigns again when lead returns.
	Lead(ctx context.Context, id string, lead func(ctx context.Context)) error
}

// State is what Load reads.
type State struct {
	Replicas []ReplicaRecord
	Changes  map[string]ChangeRecord // by mesh
}

// ReplicaRecord is a live replica.
type ReplicaRecord struct {
	ID       string
	Progress []byte
	// Remaining is how long its lease still runs, as the backend measures
	// it (one clock for every replica where the backend has one).
	Remaining time.Duration
}

// ChangeRecord is a mesh's stored change.
type ChangeRecord struct {
	Change  []byte
	Version int64
}
