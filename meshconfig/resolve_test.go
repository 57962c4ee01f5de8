package meshconfig

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// providedMesh returns a mesh with one provided backend using cfg.
func providedMesh(name string, cfg string) *Mesh {
	return &Mesh{Name: name, MTLS: &MTLS{Backends: []Backend{{Name: "ca-1", Type: BackendProvided, Config: json.RawMessage(cfg)}}}}
}

// secretMap builds a secret map from secrets.
func secretMap(secrets ...*Secret) map[SecretKey]*Secret {
	m := make(map[SecretKey]*Secret, len(secrets))
	for _, s := range secrets {
		m[SecretKey{Mesh: s.Mesh, Name: s.Name}] = s
	}
	return m
}

// jsonString quotes s as a JSON string.
func jsonString(t testing.TB, s []byte) string {
	t.Helper()
	b, err := json.Marshal(string(s))
	require.NoError(t, err)
	return string(b)
}

func TestResolveMesh(t *testing.T) {
	root := newCert(t, pkitest.Spec{CN: "root"})
	certPEM := pkitest.CertsPEM(root)
	keyData := pkitest.KeyPEM(t, root.Key, pkitest.PKCS8)
	expired := newCert(t, pkitest.Spec{CN: "old", NotBefore: testNow.AddDate(-2, 0, 0), NotAfter: testNow.AddDate(-1, 0, 0)})

	dir := t.TempDir()
	certFile := filepath.Join(dir, "ca.pem")
	keyFile := filepath.Join(dir, "ca-key.pem")
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, keyData, 0o600))

	secretsCfg := `{"cert":{"secret":"my-cert"},"key":{"secret":"my-key"}}`
	defaultSecrets := secretMap(
		&Secret{Mesh: "default", Name: "my-cert", Data: certPEM},
		&Secret{Mesh: "default", Name: "my-key", Data: keyData},
	)

	tests := []struct {
		name         string
		mesh         *Mesh
		secrets      map[SecretKey]*Secret
		opts         ResolveOptions
		wantBackend  string
		wantCA       bool
		wantValidity time.Duration
		wantErr      string
	}{
		{name: "mTLS off", mesh: &Mesh{Name: "default"}, wantValidity: DefaultDPCertValidity},
		{name: "no backends", mesh: &Mesh{Name: "default", MTLS: &MTLS{}}, wantValidity: DefaultDPCertValidity},
		{
			name: "secrets in the same mesh", mesh: providedMesh("default", secretsCfg), secrets: defaultSecrets,
			wantBackend: "ca-1", wantCA: true, wantValidity: DefaultDPCertValidity,
		},
		{
			name: "inline sources", mesh: providedMesh("default", `{"cert":{"inline":"`+base64.StdEncoding.EncodeToString(certPEM)+`"},"key":{"inline":"`+base64.StdEncoding.EncodeToString(keyData)+`"}}`),
			wantBackend: "ca-1", wantCA: true, wantValidity: DefaultDPCertValidity,
		},
		{
			name: "inlineString sources", mesh: providedMesh("default", `{"cert":{"inlineString":`+jsonString(t, certPEM)+`},"key":{"inlineString":`+jsonString(t, keyData)+`}}`),
			wantBackend: "ca-1", wantCA: true, wantValidity: DefaultDPCertValidity,
		},
		{
			name: "file sources", mesh: providedMesh("default", `{"cert":{"file":`+jsonString(t, []byte(certFile))+`},"key":{"file":`+jsonString(t, []byte(keyFile))+`}}`),
			wantBackend: "ca-1", wantCA: true, wantValidity: DefaultDPCertValidity,
		},
		{
			name: "injected file reader", mesh: providedMesh("default", `{"cert":{"file":"/virtual/ca.pem"},"key":{"secret":"my-key"}}`), secrets: defaultSecrets,
			opts: ResolveOptions{ReadFile: func(path string) ([]byte, error) {
				if path == "/virtual/ca.pem" {
					return certPEM, nil
				}
				return nil, errors.New("unexpected path")
			}},
			wantBackend: "ca-1", wantCA: true, wantValidity: DefaultDPCertValidity,
		},
		{
			name: "missing file", mesh: providedMesh("default", `{"cert":{"file":`+jsonString(t, []byte(filepath.Join(dir, "nope.pem")))+`},"key":{"secret":"my-key"}}`), secrets: defaultSecrets,
			wantErr: "mtls.backends[0].config.cert.file: cannot be read: open " + filepath.Join(dir, "nope.pem") + ": no such file or directory",
		},
		{
			name: "secret missing", mesh: providedMesh("default", secretsCfg), secrets: secretMap(&Secret{Mesh: "default", Name: "my-key", Data: keyData}),
			wantErr: `mtls.backends[0].config.cert.secret: secret "my-cert" not found in mesh "default"`,
		},
		{
			name: "both secrets missing", mesh: providedMesh("default", secretsCfg),
			wantErr: `mtls.backends[0].config.cert.secret: secret "my-cert" not found in mesh "default"; mtls.backends[0].config.key.secret: secret "my-key" not found in mesh "default"`,
		},
		{
			name: "secret in another mesh", mesh: providedMesh("payments", secretsCfg), secrets: defaultSecrets,
			wantErr: `mtls.backends[0].config.cert.secret: secret "my-cert" not found in mesh "payments" (it exists in mesh "default"; secrets are not shared between meshes)`,
		},
		{
			name: "global secret is not a mesh secret", mesh: providedMesh("default", secretsCfg),
			secrets: secretMap(&Secret{Name: "my-cert", Global: true, Data: certPEM}, &Secret{Mesh: "default", Name: "my-key", Data: keyData}),
			wantErr: `mtls.backends[0].config.cert.secret: secret "my-cert" not found in mesh "default"`,
		},
		{
			name: "secret is not a CA", mesh: providedMesh("default", secretsCfg),
			secrets: secretMap(&Secret{Mesh: "default", Name: "my-cert", Data: []byte("junk")}, &Secret{Mesh: "default", Name: "my-key", Data: keyData}),
			wantErr: `mtls.backends[0].config.cert: no PEM-encoded certificate found`,
		},
		{
			name: "expired CA", mesh: providedMesh("default", secretsCfg),
			secrets: secretMap(&Secret{Mesh: "default", Name: "my-cert", Data: pkitest.CertsPEM(expired)}, &Secret{Mesh: "default", Name: "my-key", Data: pkitest.KeyPEM(t, expired.Key, pkitest.PKCS8)}),
			wantErr: `mtls.backends[0].config.cert: certificate 1 (CN=old) expired at`,
		},
		{
			name: "builtin CA not generated yet", mesh: &Mesh{Name: "default", MTLS: &MTLS{Backends: []Backend{{Name: "ca-1", Type: BackendBuiltin}}}},
			wantErr: "mtls.backends[0].type: the builtin CA (secrets \"default.ca-builtin-cert-ca-1\" and \"default.ca-builtin-key-ca-1\") has not been generated yet",
		},
		{name: "several backends, provided enabled", mesh: &Mesh{Name: "default", MTLS: &MTLS{EnabledBackend: "ca-2", Backends: []Backend{
			{Name: "ca-1", Type: BackendBuiltin},
			{Name: "ca-2", Type: BackendProvided, Config: json.RawMessage(secretsCfg), DPCert: &DPCert{Rotation: &Rotation{Expiration: "2h"}}},
		}}}, secrets: defaultSecrets, wantBackend: "ca-2", wantCA: true, wantValidity: 2 * time.Hour},
		{name: "several backends, builtin enabled", mesh: &Mesh{Name: "default", MTLS: &MTLS{EnabledBackend: "ca-1", Backends: []Backend{
			{Name: "ca-1", Type: BackendBuiltin},
			{Name: "ca-2", Type: BackendProvided, Config: json.RawMessage(secretsCfg)},
		}}}, secrets: defaultSecrets, wantErr: "mtls.backends[0].type: the builtin CA (secrets \"default.ca-builtin-cert-ca-1\" and \"default.ca-builtin-key-ca-1\") has not been generated yet"},
		{name: "several backends without enabledBackend", mesh: &Mesh{Name: "default", MTLS: &MTLS{Backends: []Backend{
			{Name: "ca-1", Type: BackendProvided, Config: json.RawMessage(secretsCfg)},
			{Name: "ca-2", Type: BackendProvided, Config: json.RawMessage(secretsCfg)},
		}}}, secrets: defaultSecrets, wantErr: "mtls.enabledBackend: must be set when there is more than one backend"},
		{name: "invalid mesh", mesh: &Mesh{Name: "Bad"}, wantErr: "name: " + msgInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rm, err := ResolveMesh(tt.mesh, tt.secrets, testNow, tt.opts)
			require.NotNil(t, rm)
			require.Equal(t, tt.mesh.Name, rm.Name)
			require.NotNil(t, rm.RevokedTokenIDs)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Equal(t, err, rm.Err)
				require.Nil(t, rm.CA)
				var verr *ValidationError
				require.ErrorAs(t, err, &verr)
				return
			}
			require.NoError(t, err)
			require.NoError(t, rm.Err)
			require.Equal(t, tt.wantBackend, rm.Backend)
			require.Equal(t, tt.wantValidity, rm.DPCertValidity)
			if !tt.wantCA {
				require.Nil(t, rm.CA)
				return
			}
			require.NotNil(t, rm.CA)
			require.Equal(t, root.Cert.Raw, rm.CA.Chain[0].Raw)
		})
	}
}

func TestResolveMeshRevocations(t *testing.T) {
	rev := &Secret{Mesh: "default", Name: RevocationSecretPrefix + "default", Data: []byte("id-1,id-2\n# id-3\n")}
	other := &Secret{Mesh: "other", Name: RevocationSecretPrefix + "other", Data: []byte("id-9")}
	mesh := &Mesh{Name: "default", MTLS: &MTLS{Backends: []Backend{{Name: "ca-1", Type: BackendBuiltin}}}}

	rm, err := ResolveMesh(mesh, secretMap(rev, other), testNow, ResolveOptions{})
	require.Error(t, err, "builtin fails")
	require.Equal(t, map[string]struct{}{"id-1": {}, "id-2": {}}, rm.RevokedTokenIDs, "revocations are filled even when the CA fails")

	rm, err = ResolveMesh(&Mesh{Name: "default"}, secretMap(other), testNow, ResolveOptions{})
	require.NoError(t, err)
	require.Empty(t, rm.RevokedTokenIDs, "another mesh's revocations do not apply")
}

func TestParseRevocations(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "empty"},
		{name: "commas", in: "a,b,,c", want: []string{"a", "b", "c"}},
		{name: "newlines and spaces", in: "a\nb c\r\n\td\n", want: []string{"a", "b", "c", "d"}},
		{name: "comments", in: "# revoked on 2030-01-01\na, b\n  # indented comment x\nc # not a comment\n", want: []string{"a", "b", "c", "#", "not", "a", "comment"}},
		{name: "duplicates", in: "a,a\na", want: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseRevocations([]byte(tt.in))
			require.NotNil(t, got)
			want := map[string]struct{}{}
			for _, id := range tt.want {
				want[id] = struct{}{}
			}
			require.Equal(t, want, got)
		})
	}
}

// resolverFixture holds two working meshes and their secrets.
type resolverFixture struct {
	rootA, rootB *pki.KeyPair
	secrets      map[SecretKey]*Secret
	meshes       map[string]*Mesh
}

func newResolverFixture(t *testing.T) *resolverFixture {
	f := &resolverFixture{
		rootA: newCert(t, pkitest.Spec{CN: "root-a"}),
		rootB: newCert(t, pkitest.Spec{CN: "root-b"}),
	}
	cfg := `{"cert":{"secret":"ca-cert"},"key":{"secret":"ca-key"}}`
	f.secrets = secretMap(
		&Secret{Mesh: "a", Name: "ca-cert", Data: pkitest.CertsPEM(f.rootA)},
		&Secret{Mesh: "a", Name: "ca-key", Data: pkitest.KeyPEM(t, f.rootA.Key, pkitest.PKCS8)},
		&Secret{Mesh: "b", Name: "ca-cert", Data: pkitest.CertsPEM(f.rootB)},
		&Secret{Mesh: "b", Name: "ca-key", Data: pkitest.KeyPEM(t, f.rootB.Key, pkitest.PKCS8)},
	)
	f.meshes = map[string]*Mesh{"a": providedMesh("a", cfg), "b": providedMesh("b", cfg)}
	return f
}

// resources returns a view of the fixture's current content.
func (f *resolverFixture) resources() Resources {
	meshes := make(map[string]*Mesh, len(f.meshes))
	for k, v := range f.meshes {
		meshes[k] = v
	}
	secrets := make(map[SecretKey]*Secret, len(f.secrets))
	for k, v := range f.secrets {
		secrets[k] = v
	}
	return Resources{Meshes: meshes, Secrets: secrets}
}

func TestResolverKeepsLastGood(t *testing.T) {
	f := newResolverFixture(t)
	r := NewResolver(ResolveOptions{})

	first := r.Resolve(f.resources(), testNow)
	require.Len(t, first, 2)
	require.NoError(t, first["a"].Err)
	require.NoError(t, first["b"].Err)
	goodA := first["a"].CA
	require.NotNil(t, goodA)

	// Break mesh a: its cert secret now holds garbage.
	f.secrets[SecretKey{Mesh: "a", Name: "ca-cert"}] = &Secret{Mesh: "a", Name: "ca-cert", Data: []byte("garbage")}
	f.secrets[SecretKey{Mesh: "a", Name: RevocationSecretPrefix + "a"}] = &Secret{Mesh: "a", Name: RevocationSecretPrefix + "a", Data: []byte("tok-1")}
	broken := r.Resolve(f.resources(), testNow)
	require.ErrorContains(t, broken["a"].Err, "mtls.backends[0].config.cert: no PEM-encoded certificate found")
	require.Same(t, goodA, broken["a"].CA, "a broken mesh keeps its last good CA")
	require.Equal(t, "ca-1", broken["a"].Backend)
	require.Equal(t, DefaultDPCertValidity, broken["a"].DPCertValidity)
	require.Equal(t, map[string]struct{}{"tok-1": {}}, broken["a"].RevokedTokenIDs, "revocations follow the current secrets")
	require.NoError(t, broken["b"].Err, "another mesh is unaffected")
	require.Same(t, first["b"], broken["b"], "an unchanged mesh keeps its result pointer")
	require.NoError(t, first["a"].Err, "earlier results are not modified")

	// Still broken in the same way: same result.
	again := r.Resolve(f.resources(), testNow)
	require.Same(t, broken["a"], again["a"])

	// Fixed again with the same CA: the CA pointer is reused.
	f.secrets[SecretKey{Mesh: "a", Name: "ca-cert"}] = &Secret{Mesh: "a", Name: "ca-cert", Data: pkitest.CertsPEM(f.rootA)}
	fixed := r.Resolve(f.resources(), testNow)
	require.NoError(t, fixed["a"].Err)
	require.Same(t, goodA, fixed["a"].CA)

	// A new CA gives a new pointer and becomes the last good one.
	newRoot := newCert(t, pkitest.Spec{CN: "root-a2"})
	f.secrets[SecretKey{Mesh: "a", Name: "ca-cert"}] = &Secret{Mesh: "a", Name: "ca-cert", Data: pkitest.CertsPEM(newRoot)}
	f.secrets[SecretKey{Mesh: "a", Name: "ca-key"}] = &Secret{Mesh: "a", Name: "ca-key", Data: pkitest.KeyPEM(t, newRoot.Key, pkitest.PKCS8)}
	rotated := r.Resolve(f.resources(), testNow)
	require.NoError(t, rotated["a"].Err)
	require.NotSame(t, goodA, rotated["a"].CA)
	require.Equal(t, newRoot.Cert.Raw, rotated["a"].CA.Chain[0].Raw)
	require.Same(t, first["b"], rotated["b"])
}

func TestResolverWithoutLastGood(t *testing.T) {
	f := newResolverFixture(t)
	delete(f.secrets, SecretKey{Mesh: "a", Name: "ca-key"})
	r := NewResolver(ResolveOptions{})
	got := r.Resolve(f.resources(), testNow)
	require.ErrorContains(t, got["a"].Err, `secret "ca-key" not found in mesh "a"`)
	require.Nil(t, got["a"].CA)
	require.NotNil(t, got["a"].RevokedTokenIDs)
	require.NoError(t, got["b"].Err)
	require.NotNil(t, got["b"].CA)
}

func TestResolverForgetsDeletedMesh(t *testing.T) {
	f := newResolverFixture(t)
	r := NewResolver(ResolveOptions{})
	first := r.Resolve(f.resources(), testNow)
	require.NotNil(t, first["a"].CA)

	delete(f.meshes, "a")
	got := r.Resolve(f.resources(), testNow)
	require.NotContains(t, got, "a")
	require.Len(t, got, 1)

	// Mesh a comes back broken: its old CA is not resurrected.
	f.meshes["a"] = providedMesh("a", `{"cert":{"secret":"missing"},"key":{"secret":"ca-key"}}`)
	got = r.Resolve(f.resources(), testNow)
	require.Error(t, got["a"].Err)
	require.Nil(t, got["a"].CA)
}

func TestResolverDropsExpiredLastGood(t *testing.T) {
	f := newResolverFixture(t)
	r := NewResolver(ResolveOptions{})
	first := r.Resolve(f.resources(), testNow)
	require.NotNil(t, first["a"].CA)

	// Two years later every CA has expired: the last good one is no longer
	// good enough to fall back on.
	later := testNow.AddDate(2, 0, 0)
	got := r.Resolve(f.resources(), later)
	require.ErrorContains(t, got["a"].Err, "expired at")
	require.Nil(t, got["a"].CA)
	require.Equal(t, "ca-1", got["a"].Backend)
}

func TestResolverMTLSOff(t *testing.T) {
	r := NewResolver(ResolveOptions{})
	res := Resources{Meshes: map[string]*Mesh{"default": {Name: "default"}}}
	first := r.Resolve(res, testNow)
	require.NoError(t, first["default"].Err)
	require.Empty(t, first["default"].Backend)
	require.Nil(t, first["default"].CA)
	require.Same(t, first["default"], r.Resolve(res, testNow)["default"])
}
