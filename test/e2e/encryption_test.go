package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// genKey writes a key file of one new key, id, to path, before the keys of
// keep (if any): how an operator prepares a rotation.
func genKey(t *testing.T, path, id string, keep []byte) {
	t.Helper()
	out, err := exec.Command(binary, "generate", "encryption-key", "--id", id).Output()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, append(out, keep...), 0o600))
}

// TestSecretsEncryptedAtRest: with --encryption-key-file no secret reaches
// the database in plain text; without the key, or with another, the server
// refuses to start instead of seeming empty; a key rotation runs online.
func TestSecretsEncryptedAtRest(t *testing.T) {
	dataDir := t.TempDir()
	keys := filepath.Join(t.TempDir(), "keys")
	genKey(t, keys, "k1", nil)
	s := start(t, t.TempDir(), "--data-dir", dataDir, "--encryption-key-file", keys)
	s.mustCLI(t, "type: Secret\nmesh: default\nname: top\ndata: VE9QLVNFQ1JFVC1NQVRFUklBTA==\n", "apply", "-f", "-") // TOP-SECRET-MATERIAL
	out := s.mustCLI(t, "", "get", "secret", "top", "-m", "default", "-o", "yaml")
	require.Contains(t, out, "VE9QLVNFQ1JFVC1NQVRFUklBTA==", "read back decrypted")
	require.Contains(t, s.logs.String(), "secrets are encrypted at rest")
	s.kill(t)
	files, err := filepath.Glob(filepath.Join(dataDir, "meshsds.db*"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		require.False(t, bytes.Contains(data, []byte("TOP-SECRET-MATERIAL")), "%s holds the secret in plain text", f)
		require.False(t, bytes.Contains(data, []byte("BEGIN PRIVATE KEY")), "%s holds the signing key in plain text", f)
	}

	// Without the key, or with another, meshsds does not start.
	out2, err := exec.Command(binary, "serve", "--data-dir", dataDir, "--metrics-address", freeAddr(t), "--admin-address", freeAddr(t), "--sds-address", freeAddr(t)).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out2), "no --encryption-key-file is given")
	other := filepath.Join(t.TempDir(), "other")
	genKey(t, other, "k1", nil)
	out2, err = exec.Command(binary, "serve", "--data-dir", dataDir, "--encryption-key-file", other, "--metrics-address", freeAddr(t), "--admin-address", freeAddr(t), "--sds-address", freeAddr(t)).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out2), `key "k1" does not decrypt it`)

	// Rotation, online: k2 first, k1 kept; rotate; then k1 can go.
	old, err := os.ReadFile(keys)
	require.NoError(t, err)
	genKey(t, keys, "k2", old)
	s = start(t, t.TempDir(), "--data-dir", dataDir, "--encryption-key-file", keys)
	out2, err = exec.Command(binary, "admin", "rotate-encryption-key", "--data-dir", dataDir, "--encryption-key-file", keys).CombinedOutput()
	require.NoError(t, err, string(out2))
	require.Regexp(t, `(?m)^re-encrypted \d+ records; \d+ were encrypted with the first key already\n\z`, string(out2), "one line, as a shell prints it")
	s.kill(t)
	onlyNew, err := os.ReadFile(keys)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keys, bytes.SplitAfter(onlyNew, []byte("\n"))[0], 0o600))
	s = start(t, t.TempDir(), "--data-dir", dataDir, "--encryption-key-file", keys)
	out = s.mustCLI(t, "", "get", "secret", "top", "-m", "default", "-o", "yaml")
	require.Contains(t, out, "VE9QLVNFQ1JFVC1NQVRFUklBTA==", "readable with the new key alone")
}
