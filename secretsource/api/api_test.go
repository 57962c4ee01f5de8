package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/syncbuf"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/sqlite"
)

// fixture is the API over a real SQLite store, on a real loopback listener.
type fixture struct {
	t     *testing.T
	api   *API
	store store.Store
	url   string
}

// otherSources is a hand-written SecretLookup standing for files/Kubernetes.
type otherSources struct {
	secrets map[meshconfig.SecretKey][]byte
	meshes  []*meshconfig.Mesh
}

func (o *otherSources) Secret(mesh, name string) ([]byte, bool) {
	d, ok := o.secrets[meshconfig.SecretKey{Mesh: mesh, Name: name}]
	return d, ok
}

func (o *otherSources) Meshes() []*meshconfig.Mesh { return o.meshes }

func newFixture(t *testing.T, mutate ...func(*Config)) *fixture {
	t.Helper()
	st, err := sqlite.Open(sqlite.Config{Path: filepath.Join(t.TempDir(), "meshsds.db")})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	cfg := Config{Store: st, Registerer: prometheus.NewRegistry(), MaxBodyBytes: 64 << 10}
	for _, m := range mutate {
		m(&cfg)
	}
	a, err := New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return &fixture{t: t, api: a, store: st, url: srv.URL}
}

// do sends a request and returns the status and decoded JSON body.
func (f *fixture) do(method, path, body string) (int, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	require.NoError(f.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(f.t, json.Unmarshal(data, &out), "body %s", data)
	} else {
		out = map[string]any{"text": string(data)}
	}
	return resp.StatusCode, out
}

func secretBody(mesh, name string, data []byte) string {
	return fmt.Sprintf("type: Secret\nmesh: %s\nname: %s\ndata: %s\n", mesh, name, base64.StdEncoding.EncodeToString(data))
}

func providedMesh(name, cert, key string) string {
	return fmt.Sprintf(`type: Mesh
name: %s
mtls:
  backends:
  - name: ca-1
    type: provided
    config:
      cert: { secret: %s }
      key: { secret: %s }
`, name, cert, key)
}

// causes extracts [field, message] pairs of an error body.
func causes(body map[string]any) [][2]string {
	var out [][2]string
	list, _ := body["causes"].([]any)
	for _, c := range list {
		m := c.(map[string]any)
		out = append(out, [2]string{fmt.Sprint(m["field"]), fmt.Sprint(m["message"])})
	}
	return out
}

func TestSecretLifecycle(t *testing.T) {
	f := newFixture(t)
	code, body := f.do("PUT", "/meshes/default/secrets/sample", secretBody("default", "sample", []byte("test\n")))
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "dGVzdAo=", body["data"])
	code, _ = f.do("PUT", "/meshes/default/secrets/sample", `{"type":"Secret","mesh":"default","name":"sample","data":"dGVzdDIK"}`)
	require.Equal(t, http.StatusOK, code, "an update is 200")
	// mesh and name may be left out: the URL says them.
	code, _ = f.do("PUT", "/meshes/payments/secrets/other", "type: Secret\ndata: eA==\n")
	require.Equal(t, http.StatusCreated, code)

	code, body = f.do("GET", "/meshes/default/secrets/sample", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "dGVzdDIK", body["data"])
	require.Equal(t, "Secret", body["type"])
	require.NotEmpty(t, body["creationTime"])

	code, body = f.do("GET", "/meshes/default/secrets", "")
	require.Equal(t, http.StatusOK, code)
	require.InDelta(t, 1, body["total"], 0)
	code, body = f.do("GET", "/secrets", "")
	require.Equal(t, http.StatusOK, code)
	require.InDelta(t, 2, body["total"], 0)

	code, _ = f.do("DELETE", "/meshes/default/secrets/sample", "")
	require.Equal(t, http.StatusOK, code)
	code, body = f.do("GET", "/meshes/default/secrets/sample", "")
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, "Could not retrieve a resource", body["title"])
}

func TestErrors(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Tokens = &fakeIssuer{} })
	huge := secretBody("default", "big", make([]byte, 100<<10))
	tests := []struct {
		name         string
		method, path string
		body         string
		code         int
		causes       [][2]string
		title        string
	}{
		{
			"invalid base64", "PUT", "/meshes/default/secrets/s", "type: Secret\nname: s\ndata: '!!!'\n",
			400,
			[][2]string{{"data", "has to be valid base64 string"}},
			"Could not process a resource",
		},
		{
			"empty data", "PUT", "/meshes/default/secrets/s", "type: Secret\nname: s\ndata: ''\n",
			400,
			[][2]string{{"data", "cannot be empty"}},
			"",
		},
		{
			"name differs from URL", "PUT", "/meshes/default/secrets/s", secretBody("default", "t", []byte("x")),
			400,
			[][2]string{{"name", "name from the URL has to be the same as in body"}},
			"",
		},
		{
			"mesh differs from URL", "PUT", "/meshes/default/secrets/s", secretBody("other", "s", []byte("x")),
			400,
			[][2]string{{"mesh", "mesh from the URL has to be the same as in body"}},
			"",
		},
		{
			"type differs from URL", "PUT", "/meshes/default/secrets/s", "type: Mesh\nname: s\n",
			400,
			[][2]string{{"type", `must be "Secret" for this endpoint`}},
			"",
		},
		{
			"mesh body on mesh URL with other name", "PUT", "/meshes/a", "type: Mesh\nname: b\n",
			400,
			[][2]string{{"name", "name from the URL has to be the same as in body"}},
			"",
		},
		{"unknown key", "PUT", "/meshes/default/secrets/s", "type: Secret\nname: s\ndata: eA==\nextra: 1\n", 400, nil, ""},
		{"not an object", "PUT", "/meshes/default/secrets/s", "- a\n- b\n", 400, nil, ""},
		{"URL name not RFC 1123", "PUT", "/meshes/default/secrets/Bad_Name", secretBody("default", "Bad_Name", []byte("x")), 400, nil, ""},
		{"URL mesh not RFC 1123", "GET", "/meshes/UPPER/secrets", "", 400, nil, ""},
		{"oversized body", "PUT", "/meshes/default/secrets/big", huge, 413, nil, "Request body too large"},
		{"get missing secret", "GET", "/meshes/default/secrets/nope", "", 404, nil, "Could not retrieve a resource"},
		{"delete missing secret", "DELETE", "/meshes/default/secrets/nope", "", 404, nil, ""},
		{"get missing mesh", "GET", "/meshes/nope", "", 404, nil, ""},
		{"wrong method", "POST", "/meshes/default/secrets/s", "", 405, nil, "Method not allowed"},
		{"unknown path", "GET", "/nothing-here", "", 404, nil, "Not found"},
		{"token for bad name", "POST", "/tokens/dataplane", `{"mesh":"default","name":"Bad_Name"}`, 400, nil, ""},
		{"token with unknown key", "POST", "/tokens/dataplane", `{"mesh":"default","name":"a","sercice":"x"}`, 400, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do(tc.method, tc.path, tc.body)
			require.Equal(t, tc.code, code, body)
			require.NotEmpty(t, body["title"], "every error has Kuma's shape")
			if tc.title != "" {
				require.Equal(t, tc.title, body["title"])
			}
			if tc.causes != nil {
				require.Equal(t, tc.causes, causes(body))
			}
		})
	}
}

func TestOversizedChunkedBodyIsCut(t *testing.T) {
	f := newFixture(t)
	pr, pw := io.Pipe()
	go func() {
		// Stream far more than the limit without a Content-Length.
		chunk := strings.Repeat("x", 32<<10)
		for i := 0; i < 64; i++ {
			if _, err := pw.Write([]byte(chunk)); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, err := http.NewRequest("PUT", f.url+"/meshes/default/secrets/big", pr)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	pr.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
}

// TestMeshAdmissionRefusals: the Meshes meshconfig.AdmitMesh refuses, as
// the admin API answers them (the webhook answers the same causes).
func TestMeshAdmissionRefusals(t *testing.T) {
	ca := pkitest.NewRootCA(t, "ca")
	other := pkitest.NewRootCA(t, "other")
	f := newFixture(t, func(c *Config) {
		c.Others = &otherSources{secrets: map[meshconfig.SecretKey][]byte{{Mesh: "files", Name: "file-key"}: ca.KeyPEM}}
	})
	for name, data := range map[string][]byte{"ca-cert": ca.CertPEM, "ca-key": ca.KeyPEM, "other-key": other.KeyPEM} {
		code, body := f.do("PUT", "/meshes/default/secrets/"+name, secretBody("default", name, data))
		require.Equal(t, http.StatusCreated, code, body)
	}
	missing := func(field, mesh, secret string) [2]string {
		return [2]string{field, fmt.Sprintf(`secret %q of backend "ca-1" does not exist in mesh %q: create the Secret first`, secret, mesh)}
	}
	for _, tc := range []struct {
		name, mesh, body string
		want             [][2]string
	}{
		{
			"the certificate's Secret does not exist yet", "default", providedMesh("default", "missing-cert", "ca-key"),
			[][2]string{missing("mtls.backends[0].config.cert.secret", "default", "missing-cert")},
		},
		{
			"neither Secret exists yet", "default", providedMesh("default", "missing-cert", "missing-key"),
			[][2]string{
				missing("mtls.backends[0].config.cert.secret", "default", "missing-cert"),
				missing("mtls.backends[0].config.key.secret", "default", "missing-key"),
			},
		},
		{
			"the Secrets exist in another mesh only", "payments", providedMesh("payments", "ca-cert", "ca-key"),
			[][2]string{
				missing("mtls.backends[0].config.cert.secret", "payments", "ca-cert"),
				missing("mtls.backends[0].config.key.secret", "payments", "ca-key"),
			},
		},
		{
			"the key's Secret is in another source's other mesh", "default", providedMesh("default", "ca-cert", "file-key"),
			[][2]string{missing("mtls.backends[0].config.key.secret", "default", "file-key")},
		},
		{
			"the key is another CA's", "default", providedMesh("default", "ca-cert", "other-key"),
			[][2]string{{"mtls.backends[0].config.key", "key does not match the certificate"}},
		},
		{
			"the certificate's Secret holds a key", "default", providedMesh("default", "ca-key", "ca-key"),
			[][2]string{{"mtls.backends[0].config.cert", `PEM block 1 is "PRIVATE KEY": only CERTIFICATE blocks are allowed`}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do("PUT", "/meshes/"+tc.mesh, tc.body)
			require.Equal(t, http.StatusBadRequest, code, body)
			require.Equal(t, tc.want, causes(body))
			code, _ = f.do("GET", "/meshes/"+tc.mesh, "")
			require.Equal(t, http.StatusNotFound, code, "a refused Mesh is not stored")
		})
	}
}

func TestMeshValidatedAtPut(t *testing.T) {
	ca := pkitest.NewRootCA(t, "ca")
	other := pkitest.NewRootCA(t, "other")
	fileCA := pkitest.NewRootCA(t, "from files")
	others := &otherSources{secrets: map[meshconfig.SecretKey][]byte{
		{Mesh: "files", Name: "ca-cert"}: fileCA.CertPEM, {Mesh: "files", Name: "ca-key"}: fileCA.KeyPEM,
	}}
	f := newFixture(t, func(c *Config) { c.Others = others })
	for name, data := range map[string][]byte{"ca-cert": ca.CertPEM, "ca-key": ca.KeyPEM, "other-key": other.KeyPEM} {
		code, body := f.do("PUT", "/meshes/default/secrets/"+name, secretBody("default", name, data))
		require.Equal(t, http.StatusCreated, code, body)
	}

	code, body := f.do("PUT", "/meshes/default", providedMesh("default", "ca-cert", "ca-key"))
	require.Equal(t, http.StatusCreated, code, body)
	code, _ = f.do("PUT", "/meshes/default", providedMesh("default", "ca-cert", "ca-key"))
	require.Equal(t, http.StatusOK, code)

	// A Mesh may use secrets another source (here: files) holds.
	code, body = f.do("PUT", "/meshes/files", providedMesh("files", "ca-cert", "ca-key"))
	require.Equal(t, http.StatusCreated, code, body)

	code, body = f.do("GET", "/meshes", "")
	require.Equal(t, http.StatusOK, code)
	require.InDelta(t, 2, body["total"], 0)
	code, body = f.do("GET", "/meshes/default", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "Mesh", body["type"])
	require.NotNil(t, body["mtls"])

	// In use: refused, naming the Mesh and the backend.
	code, body = f.do("DELETE", "/meshes/default/secrets/ca-key", "")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, fmt.Sprint(causes(body)), `Mesh "default", backend "ca-1"`)
	code, _ = f.do("DELETE", "/meshes/default/secrets/other-key", "")
	require.Equal(t, http.StatusOK, code, "an unused secret can go")

	// A Mesh in another source protects the API's secrets too.
	others.meshes = []*meshconfig.Mesh{{Name: "default", MTLS: &meshconfig.MTLS{Backends: []meshconfig.Backend{{
		Name: "from-git", Type: meshconfig.BackendProvided, Config: json.RawMessage(`{"cert":{"secret":"spare"},"key":{"secret":"ca-key"}}`),
	}}}}}
	code, _ = f.do("PUT", "/meshes/default/secrets/spare", secretBody("default", "spare", []byte("x")))
	require.Equal(t, http.StatusCreated, code)
	code, body = f.do("DELETE", "/meshes/default/secrets/spare", "")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, fmt.Sprint(causes(body)), `backend "from-git"`)

	others.meshes = nil
	code, _ = f.do("DELETE", "/meshes/default", "")
	require.Equal(t, http.StatusOK, code)
	code, _ = f.do("DELETE", "/meshes/default/secrets/ca-key", "")
	require.Equal(t, http.StatusOK, code, "once the Mesh is gone its secrets can go")
}

// fakeIssuer records what it signs.
type fakeIssuer struct{ got []string }

func (i *fakeIssuer) Issue(c token.Claims, validFor time.Duration, _ time.Time) (string, error) {
	i.got = append(i.got, fmt.Sprintf("%s/%s %v %s", c.Mesh, c.Name, c.Tags, validFor))
	return "signed-token", nil
}

func TestTokensAndDataplanes(t *testing.T) {
	iss := &fakeIssuer{}
	f := newFixture(t, func(c *Config) {
		c.Tokens = iss
		c.Dataplanes = dataplanesStub{}
	})
	code, body := f.do("POST", "/tokens/dataplane", `{"mesh":"default","name":"web-1","tags":{"kuma.io/service":["web"]},"validFor":"2h"}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "signed-token", body["text"])
	require.Equal(t, []string{"default/web-1 map[kuma.io/service:[web]] 2h0m0s"}, iss.got)

	code, body = f.do("POST", "/tokens/dataplane", `{"mesh":"default","name":"web-1","validFor":"-1h"}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, [][2]string{{"validFor", "must be a positive duration such as 24h"}}, causes(body))

	code, body = f.do("GET", "/dataplanes", "")
	require.Equal(t, http.StatusOK, code)
	items, _ := body["items"].([]any)
	require.Len(t, items, 1)
	require.Equal(t, "web-1", items[0].(map[string]any)["name"])
}

type dataplanesStub struct{}

func (dataplanesStub) Dataplanes() []sds.DataplaneStatus {
	return []sds.DataplaneStatus{{Mesh: "default", Name: "web-1", Streams: []sds.StreamStatus{{API: "sotw", Resources: []string{"identity_cert"}}}}}
}

func TestBuiltinCAGeneratedOnceAndRemovedWithItsMesh(t *testing.T) {
	f := newFixture(t)
	mesh := "type: Mesh\nname: default\nmtls:\n  backends:\n  - name: ca-1\n    type: builtin\n    conf:\n      caCert:\n        RSAbits: 2048\n"
	code, body := f.do("PUT", "/meshes/default", mesh)
	require.Equal(t, http.StatusCreated, code, body)
	certName, keyName := meshconfig.BuiltinSecretNames("default", "ca-1")
	cert, err := f.store.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: certName})
	require.NoError(t, err)
	key, err := f.store.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: keyName})
	require.NoError(t, err)
	ca, err := pki.ParseCA(cert.Data, key.Data, time.Now())
	require.NoError(t, err)
	require.Equal(t, "spiffe://default", ca.Chain[0].URIs[0].String())

	// Applying the Mesh again, or provisioning again, keeps the same CA.
	code, _ = f.do("PUT", "/meshes/default", mesh)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, f.api.cfg.Provisioner.ProvisionBuiltinCA(context.Background(), "default", meshconfig.Backend{Name: "ca-1", Type: meshconfig.BackendBuiltin}))
	again, err := f.store.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: certName})
	require.NoError(t, err)
	require.Equal(t, cert.Data, again.Data)

	// The generated secrets are in use while the Mesh exists: they can be
	// neither deleted nor replaced (a key that does not match would bring
	// the mesh down at the next start).
	code, body = f.do("DELETE", "/meshes/default/secrets/"+keyName, "")
	require.Equal(t, http.StatusBadRequest, code, body)
	code, body = f.do("PUT", "/meshes/default/secrets/"+keyName, secretBody("default", keyName, pkitest.NewRootCA(t, "other").KeyPEM))
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, fmt.Sprint(causes(body)), "holds the CA meshsds generated")
	unchanged, err := f.store.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: keyName})
	require.NoError(t, err)
	require.Equal(t, key.Data, unchanged.Data)
	// ...and go with it.
	code, _ = f.do("DELETE", "/meshes/default", "")
	require.Equal(t, http.StatusOK, code)
	_, err = f.store.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: keyName})
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestOneResourcePerBody: a body holding two documents (YAML separated by
// ---, or concatenated JSON) is refused whole; nothing is stored.
func TestOneResourcePerBody(t *testing.T) {
	f := newFixture(t)
	one := secretBody("default", "s", []byte("v1"))
	for name, body := range map[string]string{
		"two YAML documents":         one + "\n---\n" + secretBody("default", "s2", []byte("v2")),
		"concatenated JSON":          `{"type":"Secret","name":"s","mesh":"default","data":"djE="}{"type":"Secret","name":"s2","mesh":"default","data":"djI="}`,
		"a second, invalid document": one + "\n---\ntype: Secret\n",
	} {
		t.Run(name, func(t *testing.T) {
			code, body := f.do("PUT", "/meshes/default/secrets/s", body)
			require.Equal(t, http.StatusBadRequest, code, body)
			require.Regexp(t, "exactly one resource|one YAML or JSON object", fmt.Sprint(causes(body)))
			_, err := f.store.Get(context.Background(), store.Key{Kind: store.KindSecret, Mesh: "default", Name: "s"})
			require.ErrorIs(t, err, store.ErrNotFound)
		})
	}
	code, body := f.do("PUT", "/meshes/default/secrets/s", one+"\n---\n")
	require.Equal(t, http.StatusCreated, code, "a trailing separator holds no second resource: %v", body)
}

// TestAuditLog: every write is a line of who, what and when, refused ones
// included; never its payload; reads are not logged.
func TestAuditLog(t *testing.T) {
	var log syncbuf.Buffer
	iss := &fakeIssuer{}
	f := newFixture(t, func(c *Config) { c.Audit = &log; c.Tokens = iss })
	secret := []byte("SUPER-SECRET-PAYLOAD")
	code, _ := f.do("PUT", "/meshes/default/secrets/s", secretBody("default", "s", secret))
	require.Equal(t, http.StatusCreated, code)
	code, _ = f.do("GET", "/meshes/default/secrets/s", "")
	require.Equal(t, http.StatusOK, code)
	code, _ = f.do("POST", "/tokens/dataplane", `{"mesh":"default","name":"web-1","tags":{"kuma.io/service":["web"]}}`)
	require.Equal(t, http.StatusOK, code)
	code, _ = f.do("DELETE", "/meshes/default/secrets/missing", "")
	require.Equal(t, http.StatusNotFound, code)

	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	require.Len(t, lines, 3, "writes only: %q", log.String())
	var events []AuditEvent
	for _, l := range lines {
		var e AuditEvent
		require.NoError(t, json.Unmarshal([]byte(l), &e))
		require.Equal(t, "local", e.Who)
		require.False(t, e.Time.IsZero())
		events = append(events, e)
	}
	require.Equal(t, []string{"PUT", "POST", "DELETE"}, []string{events[0].Verb, events[1].Verb, events[2].Verb})
	require.Equal(t, "/meshes/default/secrets/s", events[0].Path)
	require.Equal(t, http.StatusCreated, events[0].Status)
	require.Equal(t, "dataplane-token default/web-1", events[1].Resource)
	require.Equal(t, http.StatusNotFound, events[2].Status, "refused writes are recorded too")
	require.NotContains(t, log.String(), "SUPER-SECRET")
	require.NotContains(t, log.String(), base64.StdEncoding.EncodeToString(secret))
	require.NotContains(t, log.String(), "signed-token", "the token issued is a credential")
	require.InDelta(t, 3, testutil.ToFloat64(f.api.metrics.audit.WithLabelValues("PUT"))+testutil.ToFloat64(f.api.metrics.audit.WithLabelValues("POST"))+testutil.ToFloat64(f.api.metrics.audit.WithLabelValues("DELETE")), 0)
}
