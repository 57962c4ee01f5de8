package meshconfig

import (
	"strings"
	"unicode"
)

// ParseRevocations reads the dataplane token ids listed in a revocation
// Secret: ids separated by commas, whitespace or newlines; lines starting
// with "#" are comments. The result is never nil.
func ParseRevocations(data []byte) map[string]struct{} {
	ids := make(map[string]struct{})
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, id := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
			ids[id] = struct{}{}
		}
	}
	return ids
}

// isRevocationSeparator separates the ids of a revocation list.
func isRevocationSeparator(r rune) bool { return r == ',' || unicode.IsSpace(r) }

// PruneRevocations removes from a revocation Secret's data the ids for which
// expired is true (tokens that can never be accepted again), and returns the
// new data and how many ids it removed. Comment lines and the lines it
// removes nothing from are kept as they are; a line it removes ids from
// keeps its other ids, joined by ", ". A list must not become empty (a
// Secret cannot be), so when every id has expired the last one stays.
func PruneRevocations(data []byte, expired func(id string) bool) ([]byte, int) {
	lines := strings.Split(string(data), "\n")
	drop := map[string]bool{}
	last, live := "", false
	for _, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, id := range strings.FieldsFunc(line, isRevocationSeparator) {
			if expired(id) {
				drop[id] = true
			} else {
				live = true
			}
			last = id
		}
	}
	if !live {
		delete(drop, last)
	}
	if len(drop) == 0 {
		return data, 0
	}
	removed := 0
	out := make([]string, 0, len(lines))
	for _, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
			continue
		}
		ids := strings.FieldsFunc(line, isRevocationSeparator)
		kept := ids[:0:0]
		for _, id := range ids {
			if drop[id] {
				removed++
			} else {
				kept = append(kept, id)
			}
		}
		switch {
		case len(kept) == len(ids):
			out = append(out, line)
		case len(kept) == 0:
			// The whole line goes.
		case strings.HasPrefix(kept[0], "#"):
			// Not to be read as a comment line.
			out = append(out, ", "+strings.Join(kept, ", "))
		default:
			out = append(out, strings.Join(kept, ", "))
		}
	}
	return []byte(strings.Join(out, "\n")), removed
}
