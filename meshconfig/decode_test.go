package meshconfig

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// goodFiles lists, for each testdata/*.good.* file, the objects it decodes to.
func goodFiles() map[string][]Object {
	providedDefault := &Mesh{Name: "default", MTLS: &MTLS{
		EnabledBackend: "ca-1",
		Backends: []Backend{{
			Name:   "ca-1",
			Type:   BackendProvided,
			DPCert: &DPCert{Rotation: &Rotation{Expiration: "1d"}},
			Config: json.RawMessage(`{"cert":{"secret":"my-cert"},"key":{"secret":"my-key"}}`),
		}},
	}}
	return map[string][]Object{
		"secret.good.yaml": {{Secret: &Secret{Mesh: "default", Name: "sample-secret", Data: []byte("test\n")}}},
		"secret.good.json": {{Secret: &Secret{Mesh: "payments", Name: "sample-secret", Data: []byte("test\n")}}},
		"multi.good.yaml": {
			{Secret: &Secret{Mesh: "default", Name: "my-cert", Data: []byte("cert")}},
			{Secret: &Secret{Mesh: "default", Name: "my-key", Data: []byte("key")}},
			{Mesh: providedDefault},
		},
		"global-secret.good.yaml": {{Secret: &Secret{Name: "token-signing-key", Global: true, Data: []byte("key")}}},
		"mesh-no-mtls.good.yaml":  {{Mesh: &Mesh{Name: "default"}}},
		"mesh-conf-alias.good.yaml": {{Mesh: &Mesh{Name: "payments", MTLS: &MTLS{Backends: []Backend{{
			Name:   "ca-1",
			Type:   BackendProvided,
			Config: json.RawMessage(`{"cert":{"file":"/etc/meshsds/ca.pem"},"key":{"inline":"a2V5"}}`),
		}}}}}},
		"mesh-several-backends.good.yaml": {{Mesh: &Mesh{Name: "default", MTLS: &MTLS{
			EnabledBackend: "ca-2",
			Backends: []Backend{
				{Name: "ca-1", Type: BackendBuiltin, Config: json.RawMessage(`{"caCert":{"RSAbits":2048,"expiration":"10y"}}`)},
				{
					Name:   "ca-2",
					Type:   BackendProvided,
					DPCert: &DPCert{Rotation: &Rotation{Expiration: "90m"}},
					Config: json.RawMessage(`{"cert":{"inlineString":"-----BEGIN CERTIFICATE-----\nnot parsed while decoding\n-----END CERTIFICATE-----\n"},"key":{"secret":"my-key"}}`),
				},
			},
		}}}},
		"kuma-mesh-extras.good.yaml": {{Mesh: &Mesh{Name: "default", MTLS: &MTLS{
			EnabledBackend: "ca-1",
			Backends: []Backend{{
				Name:   "ca-1",
				Type:   BackendProvided,
				DPCert: &DPCert{Rotation: &Rotation{Expiration: "1d"}},
				Config: json.RawMessage(`{"cert":{"secret":"my-cert"},"key":{"secret":"my-key"}}`),
			}},
		}}}},
		"k8s-secret.good.yaml":              {{Secret: &Secret{Mesh: "payments", Name: "sample-secret", Data: []byte("test\n")}}},
		"k8s-secret-default-mesh.good.yaml": {{Secret: &Secret{Mesh: "default", Name: "sample-secret", Data: []byte("test")}}},
		"k8s-global-secret.good.yaml":       {{Secret: &Secret{Name: "token-signing-key", Global: true, Data: []byte("key")}}},
		"k8s-mesh.good.yaml": {{Mesh: &Mesh{Name: "default", MTLS: &MTLS{Backends: []Backend{{
			Name:   "ca-1",
			Type:   BackendProvided,
			Config: json.RawMessage(`{"cert":{"secret":"my-cert"},"key":{"secret":"my-key"}}`),
		}}}}}},
		"comments-only.good.yaml": nil,
		"printed-by-kumactl.good.json": {{Mesh: &Mesh{Name: "payments", MTLS: &MTLS{
			EnabledBackend: "ca-1", Backends: []Backend{{Name: "ca-1", Type: BackendBuiltin}},
		}}}},
		"printed-by-meshsds.good.yaml": {
			{Mesh: &Mesh{Name: "default", MTLS: &MTLS{EnabledBackend: "ca-1", Backends: []Backend{{
				Name: "ca-1", Type: BackendProvided, Config: json.RawMessage(`{"cert":{"secret":"my-cert"},"key":{"secret":"my-key"}}`),
			}}}}},
			{Secret: &Secret{Mesh: "default", Name: "my-cert", Data: []byte("test\n")}},
		},
	}
}

// badFiles lists, for each testdata/*.bad.* file, the text its error must
// contain.
func badFiles() map[string]string {
	return map[string]string{
		"secret-bad-base64.bad.yaml":                `data: has to be valid base64 string`,
		"secret-key-case.bad.yaml":                  `unknown field "DATA": keys are case-sensitive, did you mean "data"?`,
		"mesh-key-case.bad.yaml":                    `mtls: unknown field "Backends": keys are case-sensitive, did you mean "backends"?`,
		"mesh-config-key-case.bad.yaml":             `mtls.backends[0].config: unknown field "Key": keys are case-sensitive, did you mean "key"?`,
		"k8s-mesh-spec-key-case.bad.yaml":           `spec: unknown field "MTLS": keys are case-sensitive, did you mean "mtls"?`,
		"k8s-secret-metadata-key-case.bad.yaml":     `metadata: unknown field "Labels": keys are case-sensitive, did you mean "labels"?`,
		"secret-empty-data.bad.yaml":                `data: cannot be empty`,
		"secret-missing-data.bad.yaml":              `data: cannot be empty`,
		"secret-bad-name.bad.yaml":                  `name: must be a valid RFC 1123 subdomain`,
		"secret-bad-mesh.bad.yaml":                  `mesh: must be a valid RFC 1123 subdomain`,
		"secret-long-name.bad.yaml":                 `name: must be at most 253 characters long, got 254`,
		"secret-unknown-key.bad.yaml":               `unknown field "dat"`,
		"secret-name-not-string.bad.yaml":           `name: must be a string, got array`,
		"global-secret-with-mesh.bad.yaml":          `mesh: must not be set on a global secret`,
		"second-document.bad.yaml":                  `document 2: data: has to be valid base64 string`,
		"duplicate-secret.bad.yaml":                 `document 2: secret "same" in mesh "default" is already defined in document 1`,
		"unknown-type.bad.yaml":                     `type: unsupported resource type "Dataplane"`,
		"missing-type.bad.yaml":                     `type: cannot be empty`,
		"not-a-mapping.bad.yaml":                    `a document must be a YAML mapping or a JSON object`,
		"invalid-yaml.bad.yaml":                     `invalid YAML: yaml: line 3`,
		"invalid.bad.json":                          `invalid YAML`,
		"k8s-secret-opaque.bad.yaml":                `type: unsupported Secret type "Opaque"`,
		"k8s-configmap.bad.yaml":                    `kind: unsupported kind "ConfigMap" of apiVersion "v1"`,
		"k8s-secret-no-value.bad.yaml":              `data.value: cannot be empty`,
		"k8s-secret-other-key.bad.yaml":             `data: unexpected key "tls.crt": only "value" is allowed`,
		"k8s-secret-bad-base64.bad.yaml":            `data.value: has to be valid base64 string`,
		"k8s-secret-bad-mesh-label.bad.yaml":        `metadata.labels["kuma.io/mesh"]: must be a valid RFC 1123 subdomain`,
		"k8s-mesh-unknown-spec-key.bad.yaml":        `spec: unknown field "mtl"`,
		"k8s-mesh-bad-backend.bad.yaml":             `spec.mtls.backends[0].config.key: cannot be empty`,
		"mesh-several-backends-no-enabled.bad.yaml": `mtls.enabledBackend: must be set when there is more than one backend`,
		"mesh-enabled-unknown.bad.yaml":             `mtls.enabledBackend: has to be set to one of the backends of the mesh: backend "ca-9" is not defined`,
		"mesh-duplicate-backend.bad.yaml":           `mtls.backends[1].name: must be unique: "ca-1" is also the name of mtls.backends[0]`,
		"mesh-backend-no-name.bad.yaml":             `mtls.backends[0].name: cannot be empty`,
		"mesh-bad-backend-type.bad.yaml":            `mtls.backends[0].type: unsupported backend type "vault"`,
		"mesh-conf-and-config.bad.yaml":             `mtls.backends[0]: "config" and "conf" are aliases: set only one`,
		"mesh-provided-no-config.bad.yaml":          `mtls.backends[0].config: cannot be empty: cert and key are required`,
		"mesh-provided-missing-key.bad.yaml":        `mtls.backends[0].config.key: cannot be empty`,
		"mesh-datasource-two-sources.bad.yaml":      `mtls.backends[0].config.cert: must set exactly one of secret, inline, inlineString or file`,
		"mesh-datasource-empty.bad.yaml":            `mtls.backends[0].config.cert: must set exactly one of secret, inline, inlineString or file`,
		"mesh-inline-bad-base64.bad.yaml":           `mtls.backends[0].config.cert.inline: has to be valid base64 string`,
		"mesh-file-relative.bad.yaml":               `mtls.backends[0].config.cert.file: must be an absolute path`,
		"mesh-secret-bad-name.bad.yaml":             `mtls.backends[0].config.cert.secret: must be a valid RFC 1123 subdomain`,
		"mesh-config-unknown-key.bad.yaml":          `mtls.backends[0].config: unknown field "chain"`,
		"mesh-bad-expiration.bad.yaml":              `mtls.backends[0].dpCert.rotation.expiration: must be a valid duration`,
		"mesh-short-expiration.bad.yaml":            `mtls.backends[0].dpCert.rotation.expiration: must be at least 1m0s, got 30s`,
		"mesh-negative-expiration.bad.yaml":         `mtls.backends[0].dpCert.rotation.expiration: must be positive`,
		"mesh-unknown-dpcert-key.bad.yaml":          `unknown field "expiry"`,
		"mesh-bad-name.bad.yaml":                    `name: must be a valid RFC 1123 subdomain`,
		"mesh-several-errors.bad.yaml": `name: must be a valid RFC 1123 subdomain: lowercase alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character; ` +
			`mtls.backends[0].config.cert.file: must be an absolute path; ` +
			`mtls.backends[0].config.key: must set exactly one of secret, inline, inlineString or file; ` +
			`mtls.enabledBackend: has to be set to one of the backends of the mesh: backend "nope" is not defined`,
	}
}

// testdataFiles returns the names of testdata files matching pattern.
func testdataFiles(t testing.TB, pattern string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", pattern))
	require.NoError(t, err)
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = filepath.Base(p)
	}
	return names
}

func TestDecodeGoodFiles(t *testing.T) {
	want := goodFiles()
	files := testdataFiles(t, "*.good.*")
	require.ElementsMatch(t, keys(want), files, "every good file needs an expectation and every expectation a file")
	for _, name := range files {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", name))
			require.NoError(t, err)
			got, err := Decode(data, DecodeOptions{})
			require.NoError(t, err)
			require.Equal(t, want[name], got)
		})
	}
}

func TestDecodeBadFiles(t *testing.T) {
	want := badFiles()
	files := testdataFiles(t, "*.bad.*")
	require.ElementsMatch(t, keys(want), files, "every bad file needs an expected error and every expected error a file")
	for _, name := range files {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", name))
			require.NoError(t, err)
			got, err := Decode(data, DecodeOptions{})
			require.Error(t, err)
			require.Contains(t, err.Error(), want[name])
			require.Nil(t, got, "a bad file yields no objects")
		})
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDecodeErrorShape(t *testing.T) {
	t.Run("single document has no document prefix and exposes causes", func(t *testing.T) {
		_, err := Decode([]byte("type: Secret\nname: Bad\ndata: '%%'\n"), DecodeOptions{})
		var verr *ValidationError
		require.ErrorAs(t, err, &verr)
		require.Equal(t, []FieldError{
			{Field: "name", Message: msgInvalidName},
			{Field: "data", Message: msgInvalidBase64},
		}, verr.Causes)
		require.NotContains(t, err.Error(), "document")
	})
	t.Run("every bad document is reported", func(t *testing.T) {
		in := "type: Secret\nname: a\ndata: '%%'\n---\ntype: Secret\nname: b\ndata: dGVzdAo=\n---\ntype: Mesh\nname: B\n"
		_, err := Decode([]byte(in), DecodeOptions{})
		require.EqualError(t, err, "document 1: data: has to be valid base64 string\ndocument 3: name: "+msgInvalidName)
		var derr *DocumentError
		require.ErrorAs(t, err, &derr)
		require.Equal(t, 1, derr.Document)
		var verr *ValidationError
		require.ErrorAs(t, err, &verr)
	})
	t.Run("documents are numbered among non-empty documents", func(t *testing.T) {
		in := "---\n# comment\n---\ntype: Secret\nname: a\ndata: dGVzdAo=\n---\n\n---\ntype: Secret\nname: b\ndata: ''\n"
		_, err := Decode([]byte(in), DecodeOptions{})
		require.EqualError(t, err, "document 2: data: cannot be empty")
	})
	t.Run("YAML errors carry the line number in the file", func(t *testing.T) {
		in := "type: Secret\nname: a\ndata: dGVzdAo=\n---\ntype: Secret\nname: b\n  data: : x\n"
		_, err := Decode([]byte(in), DecodeOptions{})
		require.ErrorContains(t, err, "document 2: invalid YAML: yaml: line 7")
	})
}

func TestDecodeMaxSecretSize(t *testing.T) {
	doc := func(n int) []byte {
		return []byte("type: Secret\nname: s\ndata: " + base64.StdEncoding.EncodeToString(make([]byte, n)) + "\n")
	}
	tests := []struct {
		name    string
		opts    DecodeOptions
		size    int
		wantErr string
	}{
		{name: "at the custom limit", opts: DecodeOptions{MaxSecretSize: 16}, size: 16},
		{name: "over the custom limit", opts: DecodeOptions{MaxSecretSize: 16}, size: 17, wantErr: "data: must be at most 16 bytes (decoded), got 17"},
		{name: "at the default limit", size: DefaultMaxSecretSize},
		{name: "over the default limit", size: DefaultMaxSecretSize + 1, wantErr: "data: must be at most 1048576 bytes (decoded), got 1048577"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode(doc(tt.size), tt.opts)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Len(t, objs, 1)
			require.Len(t, objs[0].Secret.Data, tt.size)
		})
	}
}

func TestDecodeForms(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Object
		wantErr string
	}{
		{name: "empty input", in: ""},
		{
			name: "JSON mesh", in: `{"type":"Mesh","name":"m","mtls":{"backends":[{"name":"b","type":"builtin"}]}}`,
			want: []Object{{Mesh: &Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{Name: "b", Type: BackendBuiltin}}}}}},
		},
		{
			name: "byte order mark", in: "\ufefftype: Secret\nname: s\ndata: YQ==\n",
			want: []Object{{Secret: &Secret{Mesh: DefaultMesh, Name: "s", Data: []byte("a")}}},
		},
		{
			name: "CRLF line ends", in: "type: Secret\r\nname: s\r\ndata: YQ==\r\n---\r\ntype: Secret\r\nname: t\r\ndata: YQ==\r\n",
			want: []Object{
				{Secret: &Secret{Mesh: DefaultMesh, Name: "s", Data: []byte("a")}},
				{Secret: &Secret{Mesh: DefaultMesh, Name: "t", Data: []byte("a")}},
			},
		},
		{
			name: "same name in two meshes is no duplicate", in: "type: Secret\nname: s\ndata: YQ==\n---\ntype: Secret\nname: s\nmesh: other\ndata: YQ==\n",
			want: []Object{
				{Secret: &Secret{Mesh: DefaultMesh, Name: "s", Data: []byte("a")}},
				{Secret: &Secret{Mesh: "other", Name: "s", Data: []byte("a")}},
			},
		},
		{
			name: "separator inside a block scalar is content", in: "type: Mesh\nname: m\nmtls:\n  backends:\n  - name: b\n    type: provided\n    config:\n      cert:\n        inlineString: |\n          ---\n          x\n      key:\n        secret: k\n",
			want: []Object{{Mesh: &Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{
				Name: "b", Type: BackendProvided,
				Config: json.RawMessage(`{"cert":{"inlineString":"---\nx\n"},"key":{"secret":"k"}}`),
			}}}}}},
		},
		{name: "type that is not a string", in: "type: [Secret]\n", wantErr: "type: must be a string"},
		{name: "k8s metadata of the wrong shape", in: "apiVersion: v1\nkind: Secret\nmetadata: [x]\ntype: system.kuma.io/secret\n", wantErr: "metadata: must be an object, got array"},
		{name: "k8s mesh without name", in: "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {}\n", wantErr: "metadata.name: cannot be empty"},
		{name: "k8s mesh unknown top-level key", in: "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nstatus: {}\n", wantErr: `unknown field "status"`},
		{name: "k8s mesh of another apiVersion", in: "apiVersion: kuma.io/v1\nkind: Mesh\nmetadata: {name: m}\n", wantErr: `kind: unsupported kind "Mesh" of apiVersion "kuma.io/v1"`},
		{
			name: "k8s secret data and stringData", in: "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: system.kuma.io/secret\ndata: {value: YQ==}\nstringData: {value: a}\n",
			wantErr: "data.value: set only one of data.value and stringData.value",
		},
		{name: "trailing JSON after object", in: `{"type":"Secret","name":"s","data":"YQ=="} {"x":1}`, wantErr: "invalid YAML: unexpected content after the document"},
		{name: "content after a document end marker", in: "type: Secret\nname: s\ndata: YQ==\n...\ntype: Mesh\nname: m\n", wantErr: "invalid YAML: unexpected content after the document"},
		{name: "duplicate key", in: "type: Secret\nname: s\nname: t\ndata: YQ==\n", wantErr: `invalid YAML: yaml: unmarshal errors: line 3: key "name" already set in map`},
		{name: "k8s secret without metadata", in: "apiVersion: v1\nkind: Secret\ntype: system.kuma.io/secret\ndata: {value: YQ==}\n", wantErr: "metadata.name: cannot be empty"},
		{
			name: "duplicate mesh", in: "type: Mesh\nname: m\n---\napiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: m}\n",
			wantErr: `document 2: mesh "m" is already defined in document 1`,
		},
		{
			name: "duplicate global secret", in: "type: GlobalSecret\nname: g\ndata: YQ==\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: g}\ntype: system.kuma.io/global-secret\ndata: {value: YQ==}\n",
			wantErr: `document 2: global secret "g" is already defined in document 1`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.in), DecodeOptions{})
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, pattern := range []string{"*.good.*", "*.bad.*"} {
		for _, name := range testdataFiles(f, pattern) {
			data, err := os.ReadFile(filepath.Join("testdata", name))
			require.NoError(f, err)
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode(data, DecodeOptions{MaxSecretSize: 1 << 16})
		if err != nil {
			require.Nil(t, objs)
			require.NotEmpty(t, err.Error())
			return
		}
		for _, o := range objs {
			require.True(t, (o.Mesh == nil) != (o.Secret == nil), "exactly one of Mesh and Secret")
			if o.Mesh != nil {
				require.NoError(t, o.Mesh.Validate())
				continue
			}
			require.NoError(t, o.Secret.Validate(1<<16))
			require.False(t, strings.Contains(o.Secret.Name, "/"))
		}
		var verr *ValidationError
		require.False(t, errors.As(err, &verr))
	})
}

// TestStoredBackendConfigsKeepResolving: a backend config accepted before
// keys' case was checked (and stored as written) still parses when it is
// read again, at every resolution; only new manifests are held to the case.
func TestStoredBackendConfigsKeepResolving(t *testing.T) {
	cfg, err := ParseProvidedConfig(json.RawMessage(`{"Cert":{"secret":"c"},"key":{"Secret":"k"}}`))
	require.NoError(t, err)
	require.Equal(t, "c", cfg.Cert.Secret)
	require.Equal(t, "k", cfg.Key.Secret)
	b, err := ParseBuiltinConfig(json.RawMessage(`{"CACert":{"rsaBits":2048}}`))
	require.NoError(t, err)
	require.Equal(t, 2048, b.CACert.RSAbits)

	_, err = Decode([]byte("type: Mesh\nname: m\nmtls:\n  backends:\n  - name: b\n    type: provided\n    config: {Cert: {secret: c}, key: {secret: k}}\n"), DecodeOptions{})
	require.ErrorContains(t, err, `mtls.backends[0].config: unknown field "Cert": keys are case-sensitive, did you mean "cert"?`)
}
