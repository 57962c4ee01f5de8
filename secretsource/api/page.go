package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Paging, as Kuma's API pages: `size` items (default DefaultPageSize, at
// most MaxPageSize) from `offset`, an opaque string taken from the previous
// answer's `next` URL (meshsds' offsets are positions in the sorted list,
// as Kuma's are). `next` is the absolute URL of the next page, or null.

// Page sizes of list answers, Kuma's.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// maxOffset bounds an offset: far beyond any list, small enough that
	// offset+size never overflows.
	maxOffset = 1 << 40
)

// page is a parsed size and offset.
type page struct {
	size, offset int
}

// pageError is a bad size or offset: the parameter and why.
type pageError struct {
	field, reason string
}

func (e *pageError) Error() string { return e.field + ": " + e.reason }

// parsePage reads size and offset from a query (the first of each). Absent
// or empty parameters take their defaults, as in Kuma; anything else that
// is not a size in range or an offset a next URL carries is an error.
func parsePage(q url.Values) (page, error) {
	p := page{size: DefaultPageSize}
	if v := q.Get("size"); v != "" {
		n, ok := digits(v)
		switch {
		case !ok:
			return page{}, &pageError{"size", "invalid format: must be a whole number"}
		case n <= 0:
			return page{}, &pageError{"size", "must be greater than 0"}
		case n > MaxPageSize:
			return page{}, &pageError{"size", fmt.Sprintf("invalid page size of %d. Maximum page size is %d", n, MaxPageSize)}
		}
		p.size = int(n)
	}
	if v := q.Get("offset"); v != "" {
		n, ok := digits(v)
		if !ok || n > maxOffset {
			return page{}, &pageError{"offset", "invalid offset: use the offset of a previous answer's next URL"}
		}
		p.offset = int(n)
	}
	return p, nil
}

// digits parses a non-negative decimal number of at most 15 digits, with
// nothing else around it (no sign, space or underscore, which strconv
// would take or which a next URL never carries).
func digits(s string) (int64, bool) {
	if s == "" || len(s) > 15 {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// bounds returns the part [from, to) of a list of n items the page covers.
func (p page) bounds(n int) (from, to int) {
	from = min(p.offset, n)
	to = min(from+p.size, n)
	return from, to
}

// nextURL is the absolute URL of the page after p in a list of n items,
// or nil when p is the last. It keeps the request's other parameters.
func nextURL(r *http.Request, p page, n int) *string {
	if p.offset+p.size >= n {
		return nil
	}
	q := r.URL.Query()
	q.Set("offset", strconv.Itoa(p.offset+p.size))
	u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	s := u.String()
	return &s
}

// badPage answers 400 for a bad size or offset, in Kuma's words.
func badPage(w http.ResponseWriter, err error) {
	pe, _ := err.(*pageError)
	detail := "Invalid page size"
	if pe.field == "offset" {
		detail = "Invalid offset"
	}
	writeError(w, http.StatusBadRequest, "Could not retrieve resources", detail, []Cause{{Field: pe.field, Message: pe.reason}})
}

// writeList answers Kuma's list envelope {"total", "items", "next"} for
// items [from, to) of a list of total, encoding one item at a time, so that
// only the page's items are ever encoded and the answer is never held
// whole in memory.
func writeList(w http.ResponseWriter, total, from, to int, next *string, encode func(i int) (any, error)) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "{\n  \"total\": %d,\n  \"items\": [", total)
	for i := from; i < to; i++ {
		v, err := encode(i)
		var js []byte
		if err == nil {
			js, err = json.MarshalIndent(v, "    ", "  ")
		}
		if err != nil {
			// The status is out; all that is left is to cut the answer
			// short, so that the client sees an error, not a short list.
			panic(http.ErrAbortHandler)
		}
		sep := ",\n    "
		if i == from {
			sep = "\n    "
		}
		_, _ = w.Write([]byte(sep))
		_, _ = w.Write(js)
	}
	if to > from {
		_, _ = w.Write([]byte("\n  "))
	}
	nextJS := []byte("null")
	if next != nil {
		nextJS, _ = json.Marshal(*next)
	}
	fmt.Fprintf(w, "],\n  \"next\": %s\n}\n", nextJS)
}
