package meshconfig

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMerge(t *testing.T) {
	meshFile := &Mesh{Name: "default"}
	meshAPI := &Mesh{Name: "default"}
	meshPayments := &Mesh{Name: "payments"}
	s := func(mesh, name, data string) *Secret {
		return &Secret{Mesh: mesh, Name: name, Global: mesh == "", Data: []byte(data)}
	}
	fileCert := s("default", "cert", "file")
	apiCert := s("default", "cert", "api")
	kubeCert := s("default", "cert", "kube")
	apiOther := s("payments", "cert", "api")
	fileGlobal := s("", "signing-key", "file")
	apiGlobal := s("", "signing-key", "api")
	apiSameNameMesh := s("default", "signing-key", "api")

	views := []NamedView{
		{Source: "file", Resources: Resources{
			Meshes:  map[string]*Mesh{"default": meshFile},
			Secrets: secretMap(fileCert, fileGlobal),
		}},
		{Source: "api", Resources: Resources{
			Meshes:  map[string]*Mesh{"default": meshAPI, "payments": meshPayments},
			Secrets: secretMap(apiCert, apiOther, apiGlobal, apiSameNameMesh),
		}},
		{Source: "kube", Resources: Resources{Secrets: secretMap(kubeCert)}},
		{Source: "empty"},
	}
	got, conflicts := Merge(views)

	require.Equal(t, map[string]*Mesh{"default": meshFile, "payments": meshPayments}, got.Meshes)
	require.Same(t, meshFile, got.Meshes["default"], "the first view wins")
	require.Equal(t, map[SecretKey]*Secret{
		{Mesh: "default", Name: "cert"}:        fileCert,
		{Mesh: "payments", Name: "cert"}:       apiOther,
		{Mesh: "", Name: "signing-key"}:        fileGlobal,
		{Mesh: "default", Name: "signing-key"}: apiSameNameMesh,
	}, got.Secrets)
	require.Equal(t, []Conflict{
		{Kind: KindMesh, Name: "default", Winner: "file", Loser: "api"},
		{Kind: KindSecret, Mesh: "", Name: "signing-key", Winner: "file", Loser: "api"},
		{Kind: KindSecret, Mesh: "default", Name: "cert", Winner: "file", Loser: "api"},
		{Kind: KindSecret, Mesh: "default", Name: "cert", Winner: "file", Loser: "kube"},
	}, conflicts)

	// The result does not depend on map iteration order.
	for range 20 {
		_, again := Merge(views)
		require.Equal(t, conflicts, again)
	}
}

func TestMergeEmpty(t *testing.T) {
	got, conflicts := Merge(nil)
	require.NotNil(t, got.Meshes)
	require.NotNil(t, got.Secrets)
	require.Empty(t, conflicts)
}

// TestRevocationsAddUp: a revocation Secret defined by two sources is not a
// conflict whose loser is dropped: both lists count, so a revocation
// written through the API is not silently ignored because a file lists
// others; and the short name works for any mesh.
func TestRevocationsAddUp(t *testing.T) {
	long := "meshwithalongname"
	views := []NamedView{
		{Source: "file", Resources: Resources{Secrets: secretMap(
			&Secret{Mesh: "default", Name: "dataplane-token-revocations-default", Data: []byte("tok-file")},
		)}},
		{Source: "api", Resources: Resources{Secrets: secretMap(
			&Secret{Mesh: "default", Name: "dataplane-token-revocations-default", Data: []byte("tok-api")},
			&Secret{Mesh: "default", Name: "dataplane-token-revocations", Data: []byte("tok-short")},
			&Secret{Mesh: long, Name: "dataplane-token-revocations", Data: []byte("tok-long")},
		)}},
	}
	merged, conflicts := Merge(views)
	require.Empty(t, conflicts)
	require.Equal(t, map[string]struct{}{"tok-file": {}, "tok-api": {}, "tok-short": {}}, revocations("default", merged.Secrets))
	require.Equal(t, map[string]struct{}{"tok-long": {}}, revocations(long, merged.Secrets))
	require.Empty(t, revocations("other", merged.Secrets))
}
