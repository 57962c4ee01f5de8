package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// cliWithConfig runs the CLI with only the config file at path to tell it
// which admin API to call.
func cliWithConfig(t *testing.T, path, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "MESHSDS_CONFIG="+path, "MESHSDS_API_URL=")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestCLIConfigAndCompletionAgainstARealServer: a control plane added with
// "meshsds config add" is what every verb and the shell completion then
// call, without any flag.
func TestCLIConfigAndCompletionAgainstARealServer(t *testing.T) {
	s := start(t, t.TempDir())
	path := filepath.Join(t.TempDir(), "config.yaml")

	out, err := cliWithConfig(t, path, "", "config", "add", "down", "--api-url", "http://127.0.0.1:1")
	require.Error(t, err, "a server that does not answer is not added")
	require.Contains(t, out, "add --skip-verify to add it anyway")
	_, err = os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "nothing written")

	out, err = cliWithConfig(t, path, "", "config", "add", "local", "--api-url", "http://"+s.admin)
	require.NoError(t, err, out)
	require.Contains(t, out, `switched to control plane "local"`)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	out, err = cliWithConfig(t, path, caManifests("payments", pkitest.NewRootCA(t, "payments CA")), "apply", "-f", "-")
	require.NoError(t, err, out)
	require.Contains(t, out, `mesh "payments" created`)
	out, err = cliWithConfig(t, path, "", "get", "meshes")
	require.NoError(t, err, out)
	require.Contains(t, out, "payments")

	// Completion asks the same admin API, as the shell script would.
	out, err = cliWithConfig(t, path, "", "__complete", "get", "secrets", "-m", "")
	require.NoError(t, err, out)
	require.Equal(t, "payments", strings.Split(out, "\n")[0])
	out, err = cliWithConfig(t, path, "", "__complete", "delete", "secret", "-m", "payments", "")
	require.NoError(t, err, out)
	require.Equal(t, []string{"ca-cert", "ca-key"}, strings.Split(out, "\n")[:2])

	// A flag still wins over the file.
	out, err = cliWithConfig(t, path, "", "get", "meshes", "--api-url", "http://127.0.0.1:1")
	require.Error(t, err)
	require.Contains(t, out, "cannot reach the meshsds admin API at http://127.0.0.1:1 (from --api-url)")

	// Once the server is gone, completion offers nothing and says nothing.
	s.kill(t)
	out, err = cliWithConfig(t, path, "", "__complete", "get", "mesh", "")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out, ":4\n"), "no candidates, no error: %q", out)
	out, err = cliWithConfig(t, path, "", "get", "meshes")
	require.Error(t, err)
	require.Contains(t, out, `(from control plane "local" of `+path+`): connection refused`)
}
