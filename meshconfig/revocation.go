package meshconfig

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// ParseRevocations reads the dataplane token ids listed in a revocation
// Secret: ids separated by commas, whitespace or newlines; lines starting
// with "#" are comments. The result is never nil.
func ParseRevocations(data []byte) map[string]struct{} {
	ids := make(map[string]struct{})
	for _, line := range strings.Split(string(data), "\n") {
		if isCommentLine(line) {
			continue
		}
		for _, id := range strings.FieldsFunc(line, isRevocationSeparator) {
			ids[id] = struct{}{}
		}
	}
	return ids
}

// isRevocationSeparator separates the ids of a revocation list.
func isRevocationSeparator(r rune) bool { return r == ',' || unicode.IsSpace(r) }

// isCommentLine reports whether a line of a revocation list is a comment.
func isCommentLine(line string) bool { return strings.HasPrefix(strings.TrimSpace(line), "#") }

// PruneRevocations removes from a revocation Secret's data the ids for which
// expired is true (tokens that can never be accepted again), and returns the
// new data and how many ids it removed. Comment lines and the lines it
// removes nothing from are kept as they are; a line it removes ids from
// keeps the rest as written (dropIDs). A list must not become empty (a
// Secret cannot be), so when every id has expired the last one stays.
func PruneRevocations(data []byte, expired func(id string) bool) ([]byte, int) {
	lines := strings.Split(string(data), "\n")
	drop := map[string]bool{}
	last, live := "", false
	for _, line := range lines {
		if isCommentLine(line) {
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
		if isCommentLine(line) {
			out = append(out, line)
			continue
		}
		kept, n := dropIDs(line, drop)
		removed += n
		switch {
		case n == 0:
			out = append(out, line)
		case strings.TrimFunc(kept, isRevocationSeparator) == "":
			// The whole line goes.
		case isCommentLine(kept):
			// Not to be read as a comment line.
			out = append(out, ", "+kept)
		default:
			out = append(out, kept)
		}
	}
	return []byte(strings.Join(out, "\n")), removed
}

// dropIDs returns line without the ids in drop, and how many it removed.
// What stays is as written: the line's own start, the separator before
// each id kept but the first, and the line's end (a "\r", a trailing
// comma).
func dropIDs(line string, drop map[string]bool) (string, int) {
	type segment struct{ sep, id string } // an id and the separators before it
	var segs []segment
	for i := 0; i < len(line); {
		start := i
		for i < len(line) && separatorAt(line, i) {
			i += runeLen(line, i)
		}
		idStart := i
		for i < len(line) && !separatorAt(line, i) {
			i += runeLen(line, i)
		}
		segs = append(segs, segment{sep: line[start:idStart], id: line[idStart:i]})
	}
	var b strings.Builder
	removed, kept := 0, 0
	for _, seg := range segs {
		switch {
		case seg.id == "":
			b.WriteString(seg.sep) // the line's end
		case drop[seg.id]:
			removed++
		default:
			if kept == 0 {
				b.WriteString(segs[0].sep) // the line's own start
			} else {
				b.WriteString(seg.sep)
			}
			kept++
			b.WriteString(seg.id)
		}
	}
	return b.String(), removed
}

// separatorAt reports whether the rune at line[i] separates ids.
func separatorAt(line string, i int) bool {
	r, _ := utf8.DecodeRuneInString(line[i:])
	return isRevocationSeparator(r)
}

// runeLen is the length of the rune at line[i].
func runeLen(line string, i int) int {
	_, n := utf8.DecodeRuneInString(line[i:])
	return n
}
