package token

import (
	"fmt"
	"sort"
)

// ServiceTag is the tag whose values become SPIFFE ids,
// spiffe://<mesh>/<service>.
const ServiceTag = "kuma.io/service"

// maxTagLength bounds a tag key or value.
const maxTagLength = 253

// ValidateTags checks the tags a token grants: every value of kuma.io/service
// is one SPIFFE path segment (the SPIFFE ID specification: letters, digits,
// '.', '-' and '_', and not "." or ".."), other values use Kuma's tag
// characters (letters, digits, '.', '-', '_', ':'), and keys Kuma's tag key
// characters (those and '/'). Nothing else can reach a certificate's URI
// SANs. The error names the tag and the rule.
func ValidateTags(tags map[string][]string) error {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := checkTagPart(k, "/:"); err != nil {
			return fmt.Errorf("tags: key %q %v", k, err)
		}
		for _, v := range tags[k] {
			extra := ":"
			if k == ServiceTag {
				extra = ""
			}
			if err := checkTagPart(v, extra); err != nil {
				if k == ServiceTag {
					return fmt.Errorf("tags: %s value %q is not a SPIFFE path segment: %v", ServiceTag, v, err)
				}
				return fmt.Errorf("tags: value %q of %q %v", v, k, err)
			}
		}
	}
	return nil
}

// checkTagPart checks s has only letters, digits, '.', '-', '_' and the
// characters of extra, and is neither empty, "." nor "..".
func checkTagPart(s, extra string) error {
	switch {
	case s == "":
		return fmt.Errorf("must not be empty")
	case len(s) > maxTagLength:
		return fmt.Errorf("must be at most %d characters", maxTagLength)
	case s == "." || s == "..":
		return fmt.Errorf("must not be %q", s)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
		for _, e := range extra {
			ok = ok || r == e
		}
		if !ok {
			allowed := "letters, digits, '.', '-' and '_'"
			for _, e := range extra {
				allowed = fmt.Sprintf("%s, %q", allowed, e)
			}
			return fmt.Errorf("has %q: only %s are allowed", r, allowed)
		}
	}
	return nil
}
