package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// tableRows splits a CLI table into its rows of fields, keyed by the first
// field.
func tableRows(t *testing.T, out string) (header []string, rows map[string][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.NotEmpty(t, lines)
	rows = map[string][]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		rows[f[0]] = f
	}
	return strings.Fields(lines[0]), rows
}

// TestCLIShowsEverySourceWithItsOrigin: meshes and secrets from a secrets
// directory and from the admin API, side by side, each with its origin;
// what files hold cannot be changed through the API.
func TestCLIShowsEverySourceWithItsOrigin(t *testing.T) {
	dir, _ := secretsDir(t) // meshes default and other, from files
	s := start(t, dir)
	s.mustCLI(t, caManifests("payments", pkitest.NewRootCA(t, "payments")), "apply", "-f", "-")

	header, rows := tableRows(t, s.mustCLI(t, "", "get", "meshes"))
	require.Equal(t, []string{"NAME", "MTLS", "ORIGIN", "AGE"}, header)
	require.Len(t, rows, 3, "every mesh served, whichever source holds it")
	meshesFile := "file:" + filepath.Join(dir, "meshes.yaml")
	require.Equal(t, []string{"default", "provided/ca-1", meshesFile}, rows["default"][:3])
	require.Equal(t, []string{"other", "provided/ca-1", meshesFile}, rows["other"][:3])
	require.Equal(t, []string{"payments", "provided/ca-1", "api"}, rows["payments"][:3])

	out := s.mustCLI(t, "", "get", "secrets")
	header, _ = tableRows(t, out)
	require.Equal(t, []string{"MESH", "NAME", "ORIGIN", "AGE"}, header)
	require.Contains(t, out, "file:"+filepath.Join(dir, "default", "ca-cert"))
	require.Contains(t, out, "file:"+filepath.Join(dir, "other", "ca-key"))
	require.Regexp(t, `payments\s+ca-key\s+api\s`, out)
	require.Equal(t, 6, strings.Count(out, "\n")-1, "two secrets of each of the three meshes: %s", out)

	out = s.mustCLI(t, "", "get", "secret", "ca-cert", "-m", "other", "-o", "yaml")
	require.Contains(t, out, "meshsds.io/origin: file")
	require.Contains(t, out, "meshsds.io/path: "+filepath.Join(dir, "other", "ca-cert"))

	var list struct {
		Total int `json:"total"`
		Items []struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"items"`
	}
	require.NoError(t, json.Unmarshal([]byte(s.mustCLI(t, "", "get", "meshes", "-o", "json")), &list))
	require.Equal(t, 3, list.Total)

	header, rows = tableRows(t, s.mustCLI(t, "", "inspect", "meshes"))
	require.Equal(t, []string{"MESH", "ORIGIN", "MTLS", "SIGNING", "CA", "CA", "EXPIRES", "PHASE", "PROBLEM"}, header)
	require.Equal(t, []string{"default", meshesFile, "provided/ca-1", "CN=default"}, rows["default"][:4])
	require.Contains(t, rows["payments"], "steady")

	// Read-only where files hold it: the error names the file.
	out, err := s.cli(t, "", "delete", "secret", "ca-key", "-m", "default")
	require.Error(t, err)
	require.Contains(t, out, "comes from file "+filepath.Join(dir, "default", "ca-key")+": it is read-only through the API")
	out, err = s.cli(t, caManifests("other", pkitest.NewRootCA(t, "elsewhere")), "apply", "-f", "-")
	require.Error(t, err)
	require.Contains(t, out, "Conflict")
	_, err = os.Stat(filepath.Join(dir, "default", "ca-key"))
	require.NoError(t, err)
	out = s.mustCLI(t, "", "get", "secret", "ca-key", "-m", "default")
	require.Contains(t, out, "file:"+filepath.Join(dir, "default", "ca-key"))

	// Global secrets: the signing key meshsds keeps, then one of ours.
	s.mustCLI(t, "type: GlobalSecret\nname: mine\ndata: eA==\n", "apply", "-f", "-")
	_, rows = tableRows(t, s.mustCLI(t, "", "get", "global-secrets"))
	require.Equal(t, []string{"mine", "api"}, rows["mine"][:2])
	require.Contains(t, rows, "dataplane-token-signing-key")
	out, err = s.cli(t, "", "delete", "global-secret", "dataplane-token-signing-key")
	require.Error(t, err)
	require.Contains(t, out, "meshsds keeps for itself")
	require.Contains(t, s.mustCLI(t, "", "delete", "global-secret", "mine"), `global secret "mine" deleted`)
}

// TestKumaIndex: GET / is Kuma's index, as kumactl reads it.
func TestKumaIndex(t *testing.T) {
	s := start(t, t.TempDir())
	resp, err := http.Get("http://" + s.admin + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var idx map[string]string
	require.NoError(t, json.Unmarshal(body, &idx))
	host, err := os.Hostname()
	require.NoError(t, err)
	require.Equal(t, host, idx["hostname"])
	require.Equal(t, "meshsds", idx["product"])
	require.Equal(t, "Kuma", idx["tagline"])
	require.Contains(t, idx["version"], "preview", "kumactl compares no preview with its own version")
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, idx["clusterId"])
	require.True(t, strings.HasPrefix(idx["instanceId"], host+"-"))
	require.Equal(t, "/ui", idx["gui"])

	// The cluster id comes from the signing key in the store: the same
	// after a restart (and for replicas sharing the store).
	s.kill(t)
	again := start(t, t.TempDir(), "--data-dir", s.dataDir)
	resp, err = http.Get("http://" + again.admin + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	var idx2 map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&idx2))
	require.Equal(t, idx["clusterId"], idx2["clusterId"])
}
