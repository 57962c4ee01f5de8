package store

import (
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
// meanwhile (its version moved on) is left for the next pass, so that an
// id added concurrently is never lost. Revocation lists of files and
// Kubernetes are their owners' and are not in st.
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
