package sds

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIdentityKeyIsUnambiguous(t *testing.T) {
	ids := []*Identity{
		{Mesh: "m", Name: "web", Tags: map[string][]string{"a": {"b=c"}}},
		{Mesh: "m", Name: "web", Tags: map[string][]string{"a=b": {"c"}}},
		{Mesh: "m", Name: "web", Tags: map[string][]string{"a": {"b", "c"}}},
		{Mesh: "m", Name: "web", Tags: map[string][]string{"a": {"bc"}}},
		{Mesh: "m", Name: "web", Tags: map[string][]string{"a": {"b"}, "c": nil}},
		{Mesh: "m", Name: "web\x00a", Tags: nil},
		{Mesh: "m", Name: "web", Tags: nil, TokenID: "t1"},
		{Mesh: "m", Name: "web", Tags: nil, TokenID: "t2"},
		{Mesh: "m", Name: "web", Tags: nil},
		{Mesh: "n", Name: "web", Tags: nil},
	}
	seen := map[string]int{}
	for i, id := range ids {
		k := id.Key()
		if j, dup := seen[k]; dup {
			t.Fatalf("identities %d and %d share the key %q", j, i, k)
		}
		seen[k] = i
	}
	// The same identity, tags in another order, is the same key.
	a := &Identity{Mesh: "m", Name: "web", TokenID: "t", Tags: map[string][]string{"x": {"1", "2"}, "y": {"3"}}}
	b := &Identity{Mesh: "m", Name: "web", TokenID: "t", Tags: map[string][]string{"y": {"3"}, "x": {"2", "1"}}}
	require.Equal(t, a.Key(), b.Key())
}
