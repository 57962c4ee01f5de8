package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds"
)

// The admin API answers in the shapes Kuma's REST API documents
// (testdata/kuma/README.md says where each comes from), so that kumactl and
// other Kuma tools read it.

// kumaExample reads a documented shape.
func kumaExample(t *testing.T, name string) any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "kuma", name))
	require.NoError(t, err)
	var v any
	require.NoError(t, json.Unmarshal(data, &v), name)
	return v
}

// getRaw sends a request and returns the status and decoded JSON answer.
func (f *fixture) getRaw(method, path, body string) (int, any) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	require.NoError(f.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	require.Equal(f.t, "application/json", resp.Header.Get("Content-Type"), "%s %s: %s", method, path, data)
	var v any
	require.NoError(f.t, json.Unmarshal(data, &v), "%s", data)
	return resp.StatusCode, v
}

// requireShape fails unless ours has every field of kuma, with the same JSON
// type (objects and arrays compared element by element, by their first
// element for arrays), and no field of its own but those in extras.
func requireShape(t *testing.T, kuma, ours any, extras ...string) {
	t.Helper()
	allowed := map[string]bool{}
	for _, e := range extras {
		allowed[e] = true
	}
	var walk func(path string, k, o any)
	walk = func(path string, k, o any) {
		switch kv := k.(type) {
		case map[string]any:
			ov, ok := o.(map[string]any)
			require.True(t, ok, "%s: Kuma has an object, meshsds %T", path, o)
			for key, kval := range kv {
				oval, ok := ov[key]
				require.True(t, ok, "%s: meshsds lacks Kuma's field %q (has %v)", path, key, keys(ov))
				walk(path+"."+key, kval, oval)
			}
			for key := range ov {
				if _, ok := kv[key]; !ok {
					require.True(t, allowed[key], "%s: meshsds has %q, which Kuma does not", path, key)
				}
			}
		case []any:
			ov, ok := o.([]any)
			require.True(t, ok, "%s: Kuma has an array, meshsds %T", path, o)
			if len(kv) > 0 && len(ov) > 0 {
				walk(path+"[0]", kv[0], ov[0])
			}
		case nil:
			// null in Kuma's example: the field exists; its type varies
			// (next is a URL or null).
		default:
			require.IsType(t, k, o, "%s", path)
		}
	}
	walk("$", kuma, ours)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestKumaShapes(t *testing.T) {
	ca := pkitest.NewRootCA(t, "shapes")
	f := newFixture(t, func(c *Config) {
		c.Index = Index{Hostname: "cp-1", Version: "v1.2.3", InstanceID: "cp-1-7c1e", ClusterID: "4f8d2a51-1b3c-8d6e-9f10-2a3b4c5d6e7f"}
		c.Status = meshStatusStub{}
	})
	for name, data := range map[string][]byte{"ca-cert": ca.CertPEM, "ca-key": ca.KeyPEM} {
		code, _ := f.do("PUT", "/meshes/mesh-1/secrets/"+name, secretBody("mesh-1", name, data))
		require.Equal(t, http.StatusCreated, code)
	}
	withDPCert := strings.Replace(providedMesh("mesh-1", "ca-cert", "ca-key"), "    config:", "    dpCert: { rotation: { expiration: 24h } }\n    config:", 1)
	code, body := f.do("PUT", "/meshes/mesh-1", withDPCert)
	require.Equal(t, http.StatusCreated, code, body)
	code, body = f.do("PUT", "/meshes/mesh-2", "type: Mesh\nname: mesh-2\n")
	require.Equal(t, http.StatusCreated, code, body)
	code, body = f.do("PUT", "/globalsecrets/sample-global-secret", `{"type":"GlobalSecret","name":"sample-global-secret","data":"dGVzdAo="}`)
	require.Equal(t, http.StatusCreated, code, body)

	// Every resource has Kuma's metadata, plus labels saying where it
	// comes from; a Mesh also says what is served for it (status).
	resourceExtras := []string{"labels", "status"}
	for _, tc := range []struct {
		example, path string
		extras        []string
	}{
		{"index.json", "/", []string{"tagline", "basedOnKuma"}},
		{"secret.json", "/meshes/mesh-1/secrets/ca-cert", resourceExtras},
		{"secret-list.json", "/meshes/mesh-1/secrets", resourceExtras},
		{"secret-list.json", "/secrets", resourceExtras},
		{"global-secret.json", "/globalsecrets/sample-global-secret", resourceExtras},
		{"global-secret-list.json", "/globalsecrets", resourceExtras},
		{"global-secret-list.json", "/global-secrets", resourceExtras},
		{"mesh.json", "/meshes/mesh-1", resourceExtras},
		{"mesh-list.json", "/meshes?size=1", resourceExtras},
		{"error.json", "/meshes/mesh-1/secrets/s", resourceExtras},
		{"error-page-size.json", "/meshes?size=1001", nil},
	} {
		t.Run(tc.example+" "+tc.path, func(t *testing.T) {
			method, body := "GET", ""
			if tc.example == "error.json" {
				method, body = "PUT", "type: Secret\nname: s\ndata: '!!!'\n"
			}
			code, ours := f.getRaw(method, tc.path, body)
			kuma := kumaExample(t, tc.example)
			requireShape(t, kuma, ours, tc.extras...)
			if strings.HasPrefix(tc.example, "error") {
				// Errors are Kuma's to the word.
				require.Equal(t, kuma, ours)
				require.Equal(t, http.StatusBadRequest, code)
				return
			}
			require.Equal(t, http.StatusOK, code)
		})
	}

	// Values that tools rely on.
	_, idx := f.getRaw("GET", "/", "")
	require.Equal(t, map[string]any{
		"hostname": "cp-1", "tagline": "Kuma", "product": "meshsds", "version": "v1.2.3-kuma-api-preview",
		"basedOnKuma": KumaAPIVersion, "instanceId": "cp-1-7c1e", "clusterId": "4f8d2a51-1b3c-8d6e-9f10-2a3b4c5d6e7f", "gui": "/ui",
	}, idx)

	_, mesh := f.getRaw("GET", "/meshes/mesh-1", "")
	m := mesh.(map[string]any)
	require.Equal(t, "ca-1", m["mtls"].(map[string]any)["enabledBackend"], "Kuma turns mTLS on only with enabledBackend: the implicit one is shown")
	require.Equal(t, map[string]any{"cert": map[string]any{"secret": "ca-cert"}, "key": map[string]any{"secret": "ca-key"}},
		m["mtls"].(map[string]any)["backends"].([]any)[0].(map[string]any)["conf"], "a backend's configuration is conf, as Kuma writes it")
	require.Equal(t, map[string]any{LabelOrigin: "api"}, m["labels"])
	require.Equal(t, "steady", m["status"].(map[string]any)["phase"])

	_, list := f.getRaw("GET", "/meshes?size=1", "")
	l := list.(map[string]any)
	require.InDelta(t, 2, l["total"], 0)
	next, err := url.Parse(l["next"].(string))
	require.NoError(t, err)
	require.Equal(t, "http", next.Scheme)
	require.Equal(t, strings.TrimPrefix(f.url, "http://"), next.Host, "next is an absolute URL, as Kuma's")
	require.Equal(t, "/meshes", next.Path)
	require.Equal(t, url.Values{"offset": {"1"}, "size": {"1"}}, next.Query())
}

// meshStatusStub serves every mesh steadily.
type meshStatusStub struct{}

func (meshStatusStub) MeshStatus(string) *sds.MeshStatus { return &sds.MeshStatus{Phase: "steady"} }

// TestKumactlTokenRequest: the bodies Kuma documents and kumactl sends are
// accepted; fields meshsds does not use are ignored; what meshsds cannot
// honour is refused with the reason.
func TestKumactlTokenRequest(t *testing.T) {
	iss := &fakeIssuer{}
	f := newFixture(t, func(c *Config) { c.Tokens = iss })
	for _, file := range []string{"token-request.json", "token-request-kumactl.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", "kuma", file))
		require.NoError(t, err)
		code, body := f.do("POST", "/tokens/dataplane", string(data))
		require.Equal(t, http.StatusOK, code, "%s: %v", file, body)
		require.Equal(t, "signed-token", body["text"])
	}
	require.Equal(t, []string{
		"default/dp-echo-1 map[kuma.io/service:[backend backend-admin]] " + DefaultTokenValidity.String(),
		"default/web-1 map[kuma.io/service:[web]] 24h0m0s",
	}, iss.got)
}

func TestDecodeTokenRequest(t *testing.T) {
	tests := []struct {
		name, body string
		// causes is the wanted [field, message] list; nil means accepted.
		causes [][2]string
		// errContains is checked instead when the body is not decoded.
		errContains string
	}{
		{name: "kumactl without tags", body: `{"name":"a","mesh":"m","tags":{},"type":"","workload":"","validFor":"1h0m0s"}`},
		{name: "type dataplane", body: `{"name":"a","mesh":"m","type":"dataplane"}`},
		{name: "workload ignored", body: `{"name":"a","mesh":"m","workload":"backend"}`},
		{name: "YAML", body: "name: a\nmesh: m\ntags:\n  kuma.io/service: [web]\n"},
		{name: "zone ingress", body: `{"name":"a","mesh":"m","type":"ingress"}`, causes: [][2]string{{"type", `meshsds serves data planes only, not zone ingress proxies: must be "dataplane" or empty`}}},
		{name: "unknown type", body: `{"name":"a","mesh":"m","type":"gateway"}`, causes: [][2]string{{"type", `must be "dataplane" or empty`}}},
		{name: "no name", body: `{"mesh":"m"}`, causes: [][2]string{{"name", "cannot be empty: a meshsds token is bound to one data plane (node id <mesh>.<name>)"}}},
		{name: "no mesh", body: `{"name":"a"}`, causes: [][2]string{{"mesh", "cannot be empty"}}},
		{name: "bad validFor", body: `{"name":"a","mesh":"m","validFor":"soon"}`, causes: [][2]string{{"validFor", "must be a positive duration such as 24h"}}},
		{name: "zero validFor", body: `{"name":"a","mesh":"m","validFor":"0s"}`, causes: [][2]string{{"validFor", "must be a positive duration such as 24h"}}},
		{name: "empty tag value", body: `{"name":"a","mesh":"m","tags":{"team":[""]}}`, causes: [][2]string{{"tags", `tag "team" has an empty value`}}},
		{name: "bad tag name", body: `{"name":"a","mesh":"m","tags":{"a b":["x"]}}`, causes: [][2]string{{"tags", `tag name "a b" is not valid`}}},
		{name: "typo", body: `{"name":"a","mesh":"m","valid_for":"1h"}`, errContains: "unknown field"},
		{name: "tags of the wrong type", body: `{"name":"a","mesh":"m","tags":{"kuma.io/service":"web"}}`, errContains: "body must be"},
		{name: "not an object", body: `[1]`, errContains: "body must be"},
		{name: "empty", body: ``, causes: [][2]string{{"mesh", "cannot be empty"}, {"name", "cannot be empty: a meshsds token is bound to one data plane (node id <mesh>.<name>)"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeTokenRequest([]byte(tc.body))
			switch {
			case tc.errContains != "":
				require.ErrorContains(t, err, tc.errContains)
			case tc.causes == nil:
				require.NoError(t, err)
			default:
				var ve *meshconfig.ValidationError
				require.ErrorAs(t, err, &ve)
				var got [][2]string
				for _, c := range ve.Causes {
					got = append(got, [2]string{c.Field, c.Message})
				}
				require.Equal(t, tc.causes, got)
			}
		})
	}
}

func TestParsePage(t *testing.T) {
	tests := []struct {
		query string
		want  page
		// field and reason of the error; empty when accepted.
		field, reason string
	}{
		{query: "", want: page{size: DefaultPageSize}},
		{query: "size=&offset=", want: page{size: DefaultPageSize}},
		{query: "size=1&offset=0", want: page{size: 1}},
		{query: "size=1000&offset=250", want: page{size: 1000, offset: 250}},
		{query: "size=5&size=7", want: page{size: 5}},
		{query: "unrelated=1&name=x", want: page{size: DefaultPageSize}},
		{query: "size=0", field: "size", reason: "must be greater than 0"},
		{query: "size=1001", field: "size", reason: "invalid page size of 1001. Maximum page size is 1000"},
		{query: "size=-1", field: "size", reason: "invalid format: must be a whole number"},
		{query: "size=%2B5", field: "size", reason: "invalid format: must be a whole number"},
		{query: "size=1.5", field: "size", reason: "invalid format: must be a whole number"},
		{query: "size=abc", field: "size", reason: "invalid format: must be a whole number"},
		{query: "size=%201", field: "size", reason: "invalid format: must be a whole number"},
		{query: "size=1_000", field: "size", reason: "invalid format: must be a whole number"},
		{query: "size=99999999999999999999", field: "size", reason: "invalid format: must be a whole number"},
		{query: "size=0x10", field: "size", reason: "invalid format: must be a whole number"},
		{query: "offset=-3", field: "offset", reason: "invalid offset: use the offset of a previous answer's next URL"},
		{query: "offset=abc", field: "offset", reason: "invalid offset: use the offset of a previous answer's next URL"},
		{query: "offset=1e3", field: "offset", reason: "invalid offset: use the offset of a previous answer's next URL"},
		{query: "offset=999999999999999", field: "offset", reason: "invalid offset: use the offset of a previous answer's next URL"},
		{query: "offset=%00", field: "offset", reason: "invalid offset: use the offset of a previous answer's next URL"},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			require.NoError(t, err)
			got, err := parsePage(q)
			if tc.field == "" {
				require.NoError(t, err)
				require.Equal(t, tc.want, got)
				return
			}
			var pe *pageError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, tc.field, pe.field)
			require.Equal(t, tc.reason, pe.reason)
		})
	}
}

// TestPaging walks every list page by page through its next URLs, as
// kumactl and Kuma's GUI do, and checks that the pages add up to the list.
func TestPaging(t *testing.T) {
	dps := make(dataplaneList, 7)
	for i := range dps {
		dps[i] = sds.DataplaneStatus{Mesh: "default", Name: fmt.Sprintf("dp-%d", i)}
	}
	f := newFixture(t, func(c *Config) { c.Dataplanes = dps })
	var wantSecrets []string
	for _, mesh := range []string{"a", "b", "c"} {
		for i := range 4 {
			name := fmt.Sprintf("s-%d", i)
			code, _ := f.do("PUT", "/meshes/"+mesh+"/secrets/"+name, secretBody(mesh, name, []byte("x")))
			require.Equal(t, http.StatusCreated, code)
			wantSecrets = append(wantSecrets, mesh+"/"+name)
		}
	}

	walk := func(path string, size int) (names []string, pages int) {
		t.Helper()
		next := path + "?size=" + fmt.Sprint(size)
		for next != "" {
			code, v := f.getRaw("GET", next, "")
			require.Equal(t, http.StatusOK, code, "%v", v)
			l := v.(map[string]any)
			items := l["items"].([]any)
			require.LessOrEqual(t, len(items), size)
			for _, it := range items {
				m := it.(map[string]any)
				if mesh, ok := m["mesh"].(string); ok {
					names = append(names, mesh+"/"+m["name"].(string))
				} else {
					names = append(names, m["name"].(string))
				}
			}
			pages++
			next = ""
			if n, ok := l["next"].(string); ok {
				u, err := url.Parse(n)
				require.NoError(t, err)
				next = u.RequestURI()
			}
			require.Less(t, pages, 100)
		}
		return names, pages
	}
	for _, size := range []int{1, 5, 12, 100} {
		names, pages := walk("/secrets", size)
		require.Equal(t, wantSecrets, names, "size %d: every secret once, in order", size)
		require.Equal(t, (len(wantSecrets)+size-1)/size, pages)
	}
	names, _ := walk("/meshes/b/secrets", 3)
	require.Equal(t, []string{"b/s-0", "b/s-1", "b/s-2", "b/s-3"}, names)
	names, pages := walk("/dataplanes", 3)
	require.Len(t, names, 7)
	require.Equal(t, 3, pages)

	// Past the end: no items, no next, the total still right.
	_, v := f.getRaw("GET", "/secrets?offset=500", "")
	require.Equal(t, map[string]any{"total": float64(12), "items": []any{}, "next": nil}, v)

	// A bad page is Kuma's 400 on every list.
	for _, path := range []string{"/meshes", "/secrets", "/meshes/a/secrets", "/globalsecrets", "/global-secrets", "/dataplanes"} {
		code, v := f.getRaw("GET", path+"?offset=x", "")
		require.Equal(t, http.StatusBadRequest, code, path)
		require.Equal(t, "Invalid offset", v.(map[string]any)["detail"], path)
	}
}

type dataplaneList []sds.DataplaneStatus

func (d dataplaneList) Dataplanes() []sds.DataplaneStatus { return d }

// TestTimesAreTheStoreRecords: creationTime is kept, modificationTime moves.
func TestTimesAreTheStoreRecords(t *testing.T) {
	f := newFixture(t)
	code, body := f.do("PUT", "/meshes/default/secrets/s", secretBody("default", "s", []byte("1")))
	require.Equal(t, http.StatusCreated, code)
	created := body["creationTime"]
	require.NotEmpty(t, created)
	code, body = f.do("PUT", "/meshes/default/secrets/s", secretBody("default", "s", []byte("2")))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, created, body["creationTime"])
	require.NotEmpty(t, body["modificationTime"])
}
