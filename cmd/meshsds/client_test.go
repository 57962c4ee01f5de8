package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestListFollowsNext: the CLI gathers a list page after page, taking only
// the offset of each next URL and asking its own --api-url for it (a next
// URL names the host the server was called as, which a proxy may change).
func TestListFollowsNext(t *testing.T) {
	const n = 2345
	var requests []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests = append(requests, r.URL.RequestURI())
		require.Equal(t, "/secrets", r.URL.Path)
		size, err := strconv.Atoi(r.URL.Query().Get("size"))
		require.NoError(t, err)
		offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		items := []json.RawMessage{}
		for i := offset; i < min(offset+size, n); i++ {
			items = append(items, json.RawMessage(fmt.Sprintf(`{"type":"Secret","mesh":"m","name":"s-%d"}`, i)))
		}
		var next *string
		if offset+size < n {
			u := fmt.Sprintf("http://proxy.invalid:1/secrets?offset=%d&size=%d", offset+size, size)
			next = &u
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(page{Total: n, Items: items, Next: next})
	}))
	defer srv.Close()

	t.Setenv(envAPIURL, srv.URL)
	c, err := (&clientConfig{}).client()
	require.NoError(t, err)
	list, err := c.list(context.Background(), "/secrets")
	require.NoError(t, err)
	require.Equal(t, n, list.Total)
	require.Len(t, list.Items, n)
	items, err := decodeItems[resourceItem](list)
	require.NoError(t, err)
	for i, it := range items {
		require.Equal(t, fmt.Sprintf("s-%d", i), it.Name)
	}
	require.Equal(t, []string{"/secrets?size=1000", "/secrets?offset=1000&size=1000", "/secrets?offset=2000&size=1000"}, requests)
}

func TestOriginColumn(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{labelOrigin: "api"}, "api"},
		{map[string]string{labelOrigin: "kubernetes"}, "kubernetes"},
		{map[string]string{labelOrigin: "file", labelPath: "/etc/meshsds/m.yaml"}, "file:/etc/meshsds/m.yaml"},
		{nil, "-"},
	} {
		it := resourceItem{Labels: tc.labels}
		require.Equal(t, tc.want, it.origin())
	}
}
