package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/secretsource/store"
)

func putSecret(t *testing.T, st store.Store, mesh, name, data string) {
	t.Helper()
	_, _, err := st.Put(context.Background(), store.Record{Key: store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name}, Data: []byte(data)}, 0)
	require.NoError(t, err)
}

func secretData(t *testing.T, st store.Store, mesh, name string) string {
	t.Helper()
	rec, err := st.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name})
	require.NoError(t, err)
	return string(rec.Data)
}

func expiredX(id string) bool { return strings.HasPrefix(id, "x") }

func TestPruneRevocations(t *testing.T) {
	ctx := context.Background()
	st := openNew(t)
	putSecret(t, st, "default", "dataplane-token-revocations-default", "# laptop\nx1, a\nx2\n")
	putSecret(t, st, "payments", "dataplane-token-revocations", "b x3")
	putSecret(t, st, "payments", "dataplane-token-revocations-payments", "c")
	putSecret(t, st, "default", "ca-cert", "x1, x2")                             // not a revocation list
	putSecret(t, st, "default", "dataplane-token-revocations-payments", "x1, y") // another mesh's name

	pruned, err := store.PruneRevocations(ctx, st, expiredX)
	require.NoError(t, err)
	require.Equal(t, map[string]int{
		"default/dataplane-token-revocations-default": 2,
		"payments/dataplane-token-revocations":        1,
	}, pruned)
	require.Equal(t, "# laptop\na\n", secretData(t, st, "default", "dataplane-token-revocations-default"))
	require.Equal(t, "b", secretData(t, st, "payments", "dataplane-token-revocations"))
	require.Equal(t, "c", secretData(t, st, "payments", "dataplane-token-revocations-payments"))
	require.Equal(t, "x1, x2", secretData(t, st, "default", "ca-cert"))
	require.Equal(t, "x1, y", secretData(t, st, "default", "dataplane-token-revocations-payments"))

	pruned, err = store.PruneRevocations(ctx, st, expiredX)
	require.NoError(t, err)
	require.Empty(t, pruned, "nothing more to remove")
}

// listThen is a real store whose List is followed, before anything else,
// by then: an operator's write racing the pruning.
type listThen struct {
	store.Store
	then func()
}

func (s listThen) List(ctx context.Context, kind store.Kind, mesh string) ([]store.Record, error) {
	recs, err := s.Store.List(ctx, kind, mesh)
	s.then()
	return recs, err
}

func TestPruneRevocationsNeverLosesAConcurrentRevocation(t *testing.T) {
	st := openNew(t)
	putSecret(t, st, "default", "dataplane-token-revocations-default", "x1, a")
	// An operator revokes one more token.
	appending := listThen{st, func() { putSecret(t, st, "default", "dataplane-token-revocations-default", "x1, a, stolen") }}
	pruned, err := store.PruneRevocations(context.Background(), appending, expiredX)
	require.NoError(t, err)
	require.Empty(t, pruned, "the list changed after it was read: left for the next pass")
	require.Equal(t, "x1, a, stolen", secretData(t, st, "default", "dataplane-token-revocations-default"))

	pruned, err = store.PruneRevocations(context.Background(), st, expiredX)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"default/dataplane-token-revocations-default": 1}, pruned)
	require.Equal(t, "a, stolen", secretData(t, st, "default", "dataplane-token-revocations-default"))
}

func TestPruneRevocationsNeverOverwritesAListCreatedAgain(t *testing.T) {
	st := openNew(t)
	putSecret(t, st, "default", "dataplane-token-revocations-default", "x1, a")
	// An operator deletes the list and creates it again with one more id:
	// the new list is at version 1 again, as the one read was.
	recreating := listThen{st, func() {
		require.NoError(t, st.Delete(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: "dataplane-token-revocations-default"}))
		putSecret(t, st, "default", "dataplane-token-revocations-default", "x1, a, stolen")
	}}
	pruned, err := store.PruneRevocations(context.Background(), recreating, expiredX)
	require.NoError(t, err)
	require.Empty(t, pruned, "the list was created again after it was read: left for the next pass")
	require.Equal(t, "x1, a, stolen", secretData(t, st, "default", "dataplane-token-revocations-default"))
}
