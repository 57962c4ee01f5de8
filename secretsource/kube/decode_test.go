package kube

import (
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshsds/meshsds/meshconfig"
)

func TestDecodeSecret(t *testing.T) {
	tests := []struct {
		name    string
		secret  *corev1.Secret
		max     int
		want    *meshconfig.Secret
		wantErr string
	}{
		{
			name:   "labelled",
			secret: kumaSecret("ns", "ca-cert", "other", []byte("pem")),
			want:   &meshconfig.Secret{Mesh: "other", Name: "ca-cert", Data: []byte("pem")},
		},
		{
			name:   "no label means default",
			secret: kumaSecret("ns", "ca-cert", "", []byte("pem")),
			want:   &meshconfig.Secret{Mesh: "default", Name: "ca-cert", Data: []byte("pem")},
		},
		{
			name: "global",
			secret: func() *corev1.Secret {
				s := kumaSecret("ns", "signing-key", "", []byte("key"))
				s.Type = GlobalSecretType
				return s
			}(),
			want: &meshconfig.Secret{Name: "signing-key", Global: true, Data: []byte("key")},
		},
		{
			name: "other key",
			secret: func() *corev1.Secret {
				s := kumaSecret("ns", "x", "", nil)
				s.Data = map[string][]byte{"tls.crt": []byte("pem")}
				return s
			}(),
			wantErr: `data: unexpected key "tls.crt": only "value" is allowed; data.value: cannot be empty`,
		},
		{
			name:    "empty value",
			secret:  kumaSecret("ns", "x", "", []byte{}),
			wantErr: "data.value: cannot be empty",
		},
		{
			name:    "bad mesh label",
			secret:  kumaSecret("ns", "x", "Not_A_Mesh", []byte("v")),
			wantErr: `metadata.labels["kuma.io/mesh"]: must be a valid RFC 1123 subdomain`,
		},
		{
			name:    "too large",
			secret:  kumaSecret("ns", "x", "", []byte("12345")),
			max:     4,
			wantErr: "data.value: must be at most 4 bytes (decoded), got 5",
		},
		{
			name: "opaque",
			secret: func() *corev1.Secret {
				s := kumaSecret("ns", "x", "", []byte("v"))
				s.Type = corev1.SecretTypeOpaque
				return s
			}(),
			wantErr: `type: unsupported Secret type "Opaque"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := DecodeSecret(tc.secret, tc.max)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, obj.Secret)
		})
	}
}

func TestDecodeMesh(t *testing.T) {
	withSpec := func(spec map[string]any) *unstructured.Unstructured {
		u := providedMesh("m", "c", "k")
		u.Object["spec"] = spec
		return u
	}
	tests := []struct {
		name    string
		mesh    *unstructured.Unstructured
		wantErr string
	}{
		{name: "provided", mesh: providedMesh("m", "c", "k")},
		{
			name: "metadata and status are ignored",
			mesh: func() *unstructured.Unstructured {
				u := providedMesh("m", "c", "k")
				u.SetUID("1234")
				u.SetResourceVersion("7")
				u.SetAnnotations(map[string]string{"a": "b"})
				u.Object["status"] = map[string]any{"x": 1}
				return u
			}(),
		},
		{name: "no spec", mesh: func() *unstructured.Unstructured {
			u := providedMesh("m", "c", "k")
			delete(u.Object, "spec")
			return u
		}()},
		{name: "kuma sections", mesh: withSpec(map[string]any{"logging": map[string]any{"backends": []any{}}, "routing": map[string]any{"localityAwareLoadBalancing": true}})},
		{name: "unknown spec key", mesh: withSpec(map[string]any{"bogus": 1}), wantErr: `spec: unknown field "bogus"`},
		{
			name: "unknown enabled backend",
			mesh: withSpec(map[string]any{"mtls": map[string]any{"enabledBackend": "nope", "backends": []any{
				map[string]any{"name": "ca-1", "type": "provided", "config": map[string]any{"cert": map[string]any{"secret": "c"}, "key": map[string]any{"secret": "k"}}},
			}}}),
			wantErr: `spec.mtls.enabledBackend: has to be set to one of the backends of the mesh: backend "nope" is not defined`,
		},
		{
			name: "missing key",
			mesh: withSpec(map[string]any{"mtls": map[string]any{"backends": []any{
				map[string]any{"name": "ca-1", "type": "provided", "config": map[string]any{"cert": map[string]any{"secret": "c"}}},
			}}}),
			wantErr: "spec.mtls.backends[0].config.key: cannot be empty",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := DecodeMesh(tc.mesh)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "m", obj.Mesh.Name)
		})
	}
}
