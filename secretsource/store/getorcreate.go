package store

import (
	"context"
	"errors"
	"fmt"
)

// getOrCreateAttempts bounds GetOrCreate's loop. A second attempt is needed
// only when the record that won a Create race was deleted before it could be
// read; a third would need that to happen twice in a row.
const getOrCreateAttempts = 3

// GetOrCreate returns the record at key, creating it with data from generate
// when there is none. It is how replicas (or a process and its restarted
// self) that share a store agree on one generated value, such as a token
// signing key or a builtin CA: each may generate a candidate, exactly one
// Create wins, and every caller returns the winner's record.
//
// generate is called only when the record is absent, and its result is
// discarded when another writer creates the record first; it must have no
// side effects beyond returning fresh data. Its error is returned wrapped,
// and nothing is stored. Errors of s other than ErrNotFound from Get and
// ErrConflict from Create are returned wrapped.
func GetOrCreate(ctx context.Context, s Store, key Key, generate func() ([]byte, error)) (Record, error) {
	for range getOrCreateAttempts {
		rec, err := s.Get(ctx, key)
		if err == nil {
			return rec, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return Record{}, fmt.Errorf("reading %s: %w", key, err)
		}
		data, err := generate()
		if err != nil {
			return Record{}, fmt.Errorf("generating %s: %w", key, err)
		}
		rec, err = s.Create(ctx, Record{Key: key, Data: data})
		if err == nil {
			return rec, nil
		}
		if !errors.Is(err, ErrConflict) {
			return Record{}, fmt.Errorf("creating %s: %w", key, err)
		}
		// Another writer created it first: read theirs on the next turn.
	}
	return Record{}, fmt.Errorf("creating %s: created and deleted by others %d times in a row", key, getOrCreateAttempts)
}
