package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
)

func TestBuiltinCAFromFilesIsGeneratedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(`type: Mesh
name: default
mtls:
  backends:
  - name: ca-1
    type: builtin
`), 0o600))
	dataDir := t.TempDir()
	s := start(t, dir, "--data-dir", dataDir)
	web := connect(t, s, "default", "web-1", "web")
	backend := connect(t, s, "default", "backend-1", "backend")
	require.NoError(t, sdstest.Handshake(backend.held, web.held, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("default", "web")))
	first := web.held.Leaf.AuthorityKeyId
	require.NotEmpty(t, first)

	// The generated CA is in the store, visible through the API.
	out := s.mustCLI(t, "", "get", "secrets", "-m", "default")
	require.Contains(t, out, "default.ca-builtin-cert-ca-1")
	require.Contains(t, out, "default.ca-builtin-key-ca-1")

	s.kill(t)
	again := start(t, dir, "--data-dir", dataDir)
	later := connect(t, again, "default", "web-2", "web")
	require.Equal(t, first, later.held.Leaf.AuthorityKeyId, "a restart keeps the CA")
	// Certificates from before the restart are still trusted.
	require.NoError(t, sdstest.Handshake(backend.held, later.held, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("default", "web")))
}
