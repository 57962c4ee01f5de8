package meshconfig

import (
	"maps"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// expiredX: in these tests an id is expired when it starts with "x".
func expiredX(id string) bool { return strings.HasPrefix(id, "x") }

func TestPruneRevocations(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		removed        int
	}{
		{name: "nothing expired", in: "a, b\nc\n", want: "a, b\nc\n"},
		{name: "one of a line, the rest as written", in: "a,x1,b\n", want: "a,b\n", removed: 1},
		{name: "indentation and a trailing comma stay", in: "  x1, a,\tb,\n", want: "  a,\tb,\n", removed: 1},
		{name: "words after an id stay as written", in: "a, x1 # bob's laptop\n", want: "a # bob's laptop\n", removed: 1},
		{name: "words after an expired first id are no comment", in: "x1 # bob's laptop\n", want: ", # bob's laptop\n", removed: 1},
		{name: "a whole line", in: "a\nx1 x2\nb", want: "a\nb", removed: 2},
		{name: "comments and untouched lines stay as written", in: "# revoked 2026-12-01\na,\tb\n# stolen laptop\nx1, c\n", want: "# revoked 2026-12-01\na,\tb\n# stolen laptop\nc\n", removed: 1},
		{name: "a comment that looks like an id", in: "#x1\na", want: "#x1\na"},
		{name: "every id expired: the last stays", in: "x1\nx2, x3\n", want: "x3\n", removed: 2},
		{name: "every id expired, one listed twice last", in: "x1, x2\nx2", want: "x2\nx2", removed: 1},
		{name: "duplicates all go", in: "x1, a, x1\nx1", want: "a", removed: 3},
		{name: "only comments", in: "# nothing yet\n", want: "# nothing yet\n"},
		{name: "empty", in: "", want: ""},
		{name: "what stays first starts with #, yet is no comment", in: "x1 #0000\n", want: ", #0000\n", removed: 1},
		{name: "CRLF lines", in: "a\r\nx1\r\nb\r\n", want: "a\r\nb\r\n", removed: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, removed := PruneRevocations([]byte(tc.in), expiredX)
			require.Equal(t, tc.want, string(got))
			require.Equal(t, tc.removed, removed)
		})
	}
}

// FuzzPruneRevocations: pruning removes exactly the expired ids (but one
// when all are), never a live one, never empties a list, and pruning again
// removes nothing.
func FuzzPruneRevocations(f *testing.F) {
	for _, s := range []string{"a, b\nc\n", "a,x1,b\n", "# c\nx1 x2\n", "x1\nx2, x3\n", "x1, a, x1\nx1", "a\r\nx1\r\n", "", "#x\n\n,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		before := ParseRevocations([]byte(in))
		out, removed := PruneRevocations([]byte(in), expiredX)
		after := ParseRevocations(out)
		for id := range before {
			if !expiredX(id) {
				require.Contains(t, after, id, "a live id was removed")
			}
		}
		for id := range after {
			require.Contains(t, before, id, "pruning added an id")
		}
		if len(before) > 0 {
			require.NotEmpty(t, after, "the list became empty")
		}
		expired := 0
		for id := range after {
			if expiredX(id) {
				expired++
			}
		}
		live := maps.Collect(func(yield func(string, struct{}) bool) {
			for id := range before {
				if !expiredX(id) && !yield(id, struct{}{}) {
					return
				}
			}
		})
		if len(live) > 0 {
			require.Zero(t, expired, "an expired id stayed beside live ones")
		} else {
			require.LessOrEqual(t, expired, 1, "more than the last id stayed of an expired list")
		}
		if removed == 0 {
			require.Equal(t, in, string(out), "nothing removed, nothing rewritten")
		}
		again, removedAgain := PruneRevocations(out, expiredX)
		require.Zero(t, removedAgain)
		require.Equal(t, string(out), string(again))
	})
}
