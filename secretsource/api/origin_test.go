package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/file"
	"github.com/meshsds/meshsds/secretsource/reconcile"
	"github.com/meshsds/meshsds/secretsource/store"
)

// One view of everything served, against the real sources: a secrets
// directory (file), Kubernetes (kube_test.go) and the API's own store, put
// together by the real reconciler, as meshsds serve wires them.

// nopSink takes the reconciler's resolved meshes and drops them.
type nopSink struct{}

func (nopSink) Update(map[string]*meshconfig.ResolvedMesh, time.Time) {}
func (nopSink) SetReady()                                             {}

// wire runs the reconciler over sources (in precedence order), then the
// store's source, and points f's API at the other sources' views. It
// returns when every source has synced.
func wire(t *testing.T, f *fixture, sources ...secretsource.Source) *reconcile.Reconciler {
	t.Helper()
	storeSrc, err := store.NewSource(store.SourceConfig{Store: f.store, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	rec, err := reconcile.New(reconcile.Config{Sources: append(sources, storeSrc), Sink: nopSink{}, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.Eventually(t, rec.Ready, time.Minute, 10*time.Millisecond)
	f.api.cfg.Others = rec.Others(storeSrc.Name())
	f.api.cfg.Problems = rec
	return rec
}

// listed returns "mesh/name origin" (or "name origin") for every item of a
// list, following next.
func (f *fixture) listed(path string) []string {
	f.t.Helper()
	var out []string
	code, v := f.getRaw("GET", path, "")
	require.Equal(f.t, http.StatusOK, code, "%v", v)
	l := v.(map[string]any)
	require.Nil(f.t, l["next"], "one page is enough here")
	for _, it := range l["items"].([]any) {
		m := it.(map[string]any)
		labels := m["labels"].(map[string]any)
		id := m["name"].(string)
		if mesh, ok := m["mesh"].(string); ok {
			id = mesh + "/" + id
		}
		out = append(out, id+" "+labels[LabelOrigin].(string))
	}
	return out
}

// requireReadOnly checks that a write of what another source holds is a
// 409 in Kuma's shape naming the origin, and changes nothing.
func (f *fixture) requireReadOnly(method, path, body, origin string) {
	f.t.Helper()
	code, v := f.getRaw(method, path, body)
	require.Equal(f.t, http.StatusConflict, code, "%s %s: %v", method, path, v)
	e := v.(map[string]any)
	require.Equal(f.t, "Conflict", e["title"])
	require.InDelta(f.t, 409, e["status"], 0)
	require.Equal(f.t, "/std-errors", e["type"])
	require.Contains(f.t, e["detail"], origin)
	require.Contains(f.t, e["detail"], "read-only through the API")
	require.Equal(f.t, e["detail"], e["details"])
}

func TestOneViewOfFilesAndTheAPI(t *testing.T) {
	dir := t.TempDir()
	ca := pkitest.NewRootCA(t, "files")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "files"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "files", "ca-cert"), ca.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "files", "ca-key"), ca.KeyPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "meshes.yaml"), []byte(providedMesh("files", "ca-cert", "ca-key")+
		"---\ntype: GlobalSecret\nname: from-git\ndata: Z2l0\n"), 0o600))
	fileSrc, err := file.New(file.Config{Dir: dir, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)

	f := newFixture(t)
	code, body := f.do("PUT", "/meshes/api-mesh", "type: Mesh\nname: api-mesh\n")
	require.Equal(t, http.StatusCreated, code, body)
	code, body = f.do("PUT", "/meshes/files/secrets/extra", secretBody("files", "extra", []byte("x")))
	require.Equal(t, http.StatusCreated, code, body)
	code, body = f.do("PUT", "/meshes/files/secrets/shadowed", secretBody("files", "shadowed", []byte("api")))
	require.Equal(t, http.StatusCreated, code, body)
	wire(t, f, fileSrc)

	// Lists and gets show every source's resources, with their origin.
	require.Equal(t, []string{"api-mesh api", "files file"}, f.listed("/meshes"))
	require.Equal(t, []string{"files/ca-cert file", "files/ca-key file", "files/extra api", "files/shadowed api"}, f.listed("/secrets"))
	require.Equal(t, []string{"files/ca-cert file", "files/ca-key file", "files/extra api", "files/shadowed api"}, f.listed("/meshes/files/secrets"))
	require.Contains(t, f.listed("/globalsecrets"), "from-git file")

	code, v := f.getRaw("GET", "/meshes/files/secrets/ca-cert", "")
	require.Equal(t, http.StatusOK, code, "%v", v)
	s := v.(map[string]any)
	require.Equal(t, base64.StdEncoding.EncodeToString(ca.CertPEM), s["data"], "file secrets are shown as API secrets are")
	require.Equal(t, map[string]any{LabelOrigin: "file", LabelPath: filepath.Join(dir, "files", "ca-cert")}, s["labels"])
	require.NotEqual(t, "0001-01-01T00:00:00Z", s["creationTime"])
	code, v = f.getRaw("GET", "/meshes/files", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, filepath.Join(dir, "meshes.yaml"), v.(map[string]any)["labels"].(map[string]any)[LabelPath])

	// What files hold is read-only through the API, whatever the write.
	f.requireReadOnly("PUT", "/meshes/files/secrets/ca-cert", secretBody("files", "ca-cert", []byte("x")), "file "+filepath.Join(dir, "files", "ca-cert"))
	f.requireReadOnly("DELETE", "/meshes/files/secrets/ca-key", "", "file "+filepath.Join(dir, "files", "ca-key"))
	f.requireReadOnly("PUT", "/meshes/files", "type: Mesh\nname: files\n", "file "+filepath.Join(dir, "meshes.yaml"))
	f.requireReadOnly("DELETE", "/meshes/files", "", "file "+filepath.Join(dir, "meshes.yaml"))
	f.requireReadOnly("PUT", "/globalsecrets/from-git", `{"type":"GlobalSecret","name":"from-git","data":"eA=="}`, "file "+filepath.Join(dir, "meshes.yaml"))
	f.requireReadOnly("DELETE", "/global-secrets/from-git", "", "file "+filepath.Join(dir, "meshes.yaml"))
	_, err = f.store.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "files", Name: "ca-cert"})
	require.ErrorIs(t, err, store.ErrNotFound, "a refused write stores nothing")
	code, v = f.getRaw("GET", "/meshes/files/secrets/ca-cert", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, base64.StdEncoding.EncodeToString(ca.CertPEM), v.(map[string]any)["data"])

	// What the API holds stays writable.
	code, body = f.do("DELETE", "/meshes/files/secrets/extra", "")
	require.Equal(t, http.StatusOK, code, body)
	code, body = f.do("PUT", "/meshes/api-mesh", "type: Mesh\nname: api-mesh\n")
	require.Equal(t, http.StatusOK, code, body)

	// A file that starts defining what the API holds wins: the resource
	// is served, shown and guarded from there; the API's copy is a
	// conflict, one of the sources' problems.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "files", "shadowed"), []byte("file"), 0o600))
	require.Eventually(t, func() bool {
		_, v := f.getRaw("GET", "/meshes/files/secrets/shadowed", "")
		return v.(map[string]any)["data"] == base64.StdEncoding.EncodeToString([]byte("file"))
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"files/ca-cert file", "files/ca-key file", "files/shadowed file"}, f.listed("/meshes/files/secrets"), "listed once, from where it is served")
	f.requireReadOnly("DELETE", "/meshes/files/secrets/shadowed", "", "file "+filepath.Join(dir, "files", "shadowed"))
	require.Eventually(t, func() bool {
		for _, p := range f.api.cfg.Problems.Problems() {
			if p.Source == "api" && p.Subject == "Secret files/shadowed" {
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)

	// Revocation lists add up: every copy is in effect, listed with its
	// origin, and the API's own stays writable.
	revocations := meshconfig.RevocationSecretPrefix + "files"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "files", revocations), []byte("id-from-files"), 0o600))
	require.Eventually(t, func() bool {
		code, _ := f.getRaw("GET", "/meshes/files/secrets/"+revocations, "")
		return code == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond)
	code, body = f.do("PUT", "/meshes/files/secrets/"+revocations, secretBody("files", revocations, []byte("id-from-api")))
	require.Equal(t, http.StatusCreated, code, body)
	var copies []string
	for _, l := range f.listed("/meshes/files/secrets") {
		if strings.HasPrefix(l, "files/"+revocations+" ") {
			copies = append(copies, l)
		}
	}
	require.Equal(t, []string{"files/" + revocations + " file", "files/" + revocations + " api"}, copies)
}

// TestManagedGlobalSecretsAreNotWritable: the token signing key cannot be
// replaced or deleted through the API, nor read.
func TestManagedGlobalSecretsAreNotWritable(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.ManagedGlobalSecrets = map[string]string{"dataplane-token-signing-key": "the dataplane token signing key"}
	})
	_, _, err := f.store.Put(context.Background(), store.Record{Key: store.Key{Kind: store.KindGlobalSecret, Name: "dataplane-token-signing-key"}, Data: []byte("key")}, 0)
	require.NoError(t, err)
	for _, method := range []string{"PUT", "DELETE"} {
		code, v := f.getRaw(method, "/globalsecrets/dataplane-token-signing-key", `{"type":"GlobalSecret","name":"dataplane-token-signing-key","data":"eA=="}`)
		require.Equal(t, http.StatusConflict, code, method)
		require.Contains(t, v.(map[string]any)["detail"], "the dataplane token signing key, which meshsds keeps for itself")
	}
	rec, err := f.store.Get(context.Background(), store.Key{Kind: store.KindGlobalSecret, Name: "dataplane-token-signing-key"})
	require.NoError(t, err)
	require.Equal(t, []byte("key"), rec.Data)
	// It is listed, its key withheld.
	code, v := f.getRaw("GET", "/globalsecrets/dataplane-token-signing-key", "")
	require.Equal(t, http.StatusOK, code)
	require.Nil(t, v.(map[string]any)["data"])
	_, v = f.getRaw("GET", "/globalsecrets", "")
	require.Nil(t, v.(map[string]any)["items"].([]any)[0].(map[string]any)["data"])

	// Other global secrets are the operator's.
	code, body := f.do("PUT", "/global-secrets/mine", `{"type":"GlobalSecret","name":"mine","data":"eA=="}`)
	require.Equal(t, http.StatusCreated, code, body)
	code, body = f.do("PUT", "/global-secrets/mine", `{"type":"GlobalSecret","name":"mine","mesh":"default","data":"eA=="}`)
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Equal(t, [][2]string{{"mesh", "must not be set on a global secret"}}, causes(body))
	code, body = f.do("PUT", "/global-secrets/mine", `{"type":"Secret","name":"mine","data":"eA=="}`)
	require.Equal(t, http.StatusBadRequest, code, body)
	code, _ = f.do("DELETE", "/globalsecrets/mine", "")
	require.Equal(t, http.StatusOK, code)
	code, _ = f.do("GET", "/globalsecrets/mine", "")
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, []string{"dataplane-token-signing-key api"}, f.listed("/globalsecrets"))
}
