// Package store is the durable store behind the admin API and the secret
// source that serves what it holds: Meshes, Secrets and meshsds' own global
// secrets (the token signing key, generated CAs), each a record with a
// version. Implementations live in sub-packages: sqlite (embedded, the
// default) and postgres (shared by several replicas); storetest is the
// conformance suite both pass. Source publishes the store's view (source.go);
// Provisioner generates builtin CAs into it (provision.go).
package store

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Kind is what a record holds.
type Kind string

// Record kinds.
const (
	KindMesh         Kind = "Mesh"
	KindSecret       Kind = "Secret"
	KindGlobalSecret Kind = "GlobalSecret"
)

// Key identifies a record. Mesh is empty for KindMesh (whose name is Name)
// and for KindGlobalSecret.
type Key struct {
	Kind Kind
	Mesh string
	Name string
}

// Record is one stored resource.
type Record struct {
	Key
	// Data is a Secret's decoded payload, or a Mesh's canonical JSON body.
	Data []byte
	// Version increases with every write of this record; the store sets it.
	Version int64
	// CreatedAt and ModifiedAt are set by the store.
	CreatedAt  time.Time
	ModifiedAt time.Time
}

// Errors returned by every implementation (wrapped; test with errors.Is).
var (
	// ErrNotFound: no record with that key.
	ErrNotFound = errors.New("not found")
	// ErrConflict: Create found the record already there, or Put's
	// expected version did not match.
	ErrConflict = errors.New("conflict")
)

// Store is a durable store of records. A write that returned nil is on disk
// (committed synchronously) and survives a crash of the process. All methods
// are safe for concurrent use; returned records are owned by the caller.
type Store interface {
	// Get returns the record at key, or ErrNotFound.
	Get(ctx context.Context, key Key) (Record, error)
	// List returns the records of kind, in mesh (every mesh when mesh is
	// empty), sorted by mesh then name.
	List(ctx context.Context, kind Kind, mesh string) ([]Record, error)
	// Put creates or replaces rec. When expectVersion is not zero the
	// stored version must equal it, else ErrConflict. It reports whether the
	// record was created and returns the stored record.
	Put(ctx context.Context, rec Record, expectVersion int64) (stored Record, created bool, err error)
	// Create stores rec only if no record has its key; otherwise it returns
	// ErrConflict and leaves the stored record alone (create-if-absent, so
	// that replicas agree on one generated key or CA).
	Create(ctx context.Context, rec Record) (Record, error)
	// Delete removes the record at key, or returns ErrNotFound.
	Delete(ctx context.Context, key Key) error
	// Revision returns a number that grows with every write to the store,
	// for cheap change detection by other replicas.
	Revision(ctx context.Context) (int64, error)
	// Changes delivers (coalesced, never blocking the writer) after every
	// write this process committed, and after the writes of other
	// processes where the store learns of them (PostgreSQL's
	// LISTEN/NOTIFY), so that the store's source publishes them at once
	// instead of at its next poll of Revision. It has one reader, the
	// store's source.
	Changes() <-chan struct{}
	// Close releases the store.
	Close() error
}

// Notifier is the Changes half of a Store: implementations embed it and
// call Notify after every committed write.
type Notifier struct {
	once sync.Once
	ch   chan struct{}
}

func (n *Notifier) init() { n.once.Do(func() { n.ch = make(chan struct{}, 1) }) }

// Notify signals a committed write; it never blocks.
func (n *Notifier) Notify() {
	n.init()
	select {
	case n.ch <- struct{}{}:
	default:
	}
}

// Changes implements Store.
func (n *Notifier) Changes() <-chan struct{} {
	n.init()
	return n.ch
}
