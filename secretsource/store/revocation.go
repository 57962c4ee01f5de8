package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/meshsds/meshsds/meshconfig"
)

// PruneRevocations removes from the revocation lists in st (the Secrets
// "dataplane-token-revocations-<mesh>" and "dataplane-token-revocations")
// the token ids for which expired is true: tokens that can never be
// accepted again, whose entries would otherwise stay forever. It returns
// how many ids it removed from each list ("mesh/name"). A list written
// meanwhile is left for the next pass: its version moved on, or, deleted
// and created again (versions start over), its creation time did. The
// check of the creation time and the versioned write are two steps, so a
// list deleted and created again, at the version read, between them would
// be overwritten; that takes a delete and a create within a round trip to
// the store. Revocation lists of files and Kubernetes are their owners' and
// are not in st.
func PruneRevocations(ctx context.Context, st Store, expired func(id string) bool) (map[string]int, error) {
	recs, err := st.List(ctx, KindSecret, "")
	if err != nil {
		return nil, err
	}
	pruned := map[string]int{}
	for _, rec := range recs {
		if !meshconfig.IsRevocationSecret(meshconfig.SecretKey{Mesh: rec.Mesh, Name: rec.Name}) {
			continue
		}
		data, n := meshconfig.PruneRevocations(rec.Data, expired)
		if n == 0 {
			continue
		}
		// A version alone does not tell a list from one deleted and
		// created again since it was read (both start at version 1), so
		// the list is read again and must be the one pruned: same
		// creation time, version and content.
		fresh, err := st.Get(ctx, rec.Key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return pruned, fmt.Errorf("pruning %s: %w", rec.Key, err)
		}
		if fresh.Version != rec.Version || !fresh.CreatedAt.Equal(rec.CreatedAt) || !bytes.Equal(fresh.Data, rec.Data) {
			continue // written meanwhile: next pass
		}
		rec.Data = data
		if _, _, err := st.Put(ctx, rec, rec.Version); err != nil {
			if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
				continue // written or deleted meanwhile: next pass
			}
			return pruned, fmt.Errorf("pruning %s: %w", rec.Key, err)
		}
		pruned[rec.Mesh+"/"+rec.Name] = n
	}
	return pruned, nil
}
