package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// complete runs cobra's hidden completion verb, as the shell scripts do,
// and returns the candidates (descriptions dropped) and the directive line.
func complete(t *testing.T, args ...string) ([]string, string) {
	t.Helper()
	out, err := runCLI(t, append([]string{"__complete"}, args...)...)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var got []string
	for _, l := range lines[:len(lines)-1] {
		name, _, _ := strings.Cut(l, "\t")
		got = append(got, name)
	}
	return got, lines[len(lines)-1]
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash":       "__start_meshsds",
		"zsh":        "#compdef meshsds",
		"fish":       "complete -c meshsds",
		"powershell": "Register-ArgumentCompleter",
	} {
		out, err := runCLI(t, "completion", shell)
		require.NoError(t, err)
		require.Contains(t, out, want, shell)
	}
}

func TestCompletionOfVerbsKindsAndFlags(t *testing.T) {
	isolateCLIConfig(t)
	got, _ := complete(t, "")
	require.Subset(t, got, []string{"apply", "completion", "config", "delete", "generate", "get", "inspect", "serve", "version"})

	got, directive := complete(t, "get", "")
	require.Equal(t, []string{"meshes", "secrets", "global-secrets", "mesh", "secret", "global-secret"}, got)
	require.Equal(t, ":4", directive, "no file names")
	got, _ = complete(t, "delete", "")
	require.Equal(t, []string{"secret", "mesh", "global-secret"}, got)
	got, _ = complete(t, "get", "meshes", "-o", "")
	require.Equal(t, []string{"table", "yaml", "json"}, got)
	got, _ = complete(t, "generate", "tls-certificate", "--type", "")
	require.Equal(t, []string{"server", "client"}, got)
	_, directive = complete(t, "apply", "-f", "")
	require.Equal(t, ":8", directive, "manifest files by extension")
}

func TestCompletionOfNamesFromTheAdminAPI(t *testing.T) {
	isolateCLIConfig(t)
	h, calls := fakeAdminAPI("default", "payments")
	srv := httptest.NewServer(h)
	defer srv.Close()

	got, _ := complete(t, "get", "secrets", "--api-url", srv.URL, "-m", "")
	require.Equal(t, []string{"default", "payments"}, got)
	got, _ = complete(t, "delete", "mesh", "--api-url", srv.URL, "")
	require.Equal(t, []string{"default", "payments"}, got)
	got, _ = complete(t, "get", "secret", "--api-url", srv.URL, "-m", "payments", "")
	require.Equal(t, []string{"ca-cert", "ca-key"}, got, "sorted")
	got, _ = complete(t, "generate", "dataplane-token", "--api-url", srv.URL, "--mesh", "")
	require.Equal(t, []string{"default", "payments"}, got)
	require.EqualValues(t, 4, calls.Load())

	// The current control plane of the config file is used as by the verbs.
	_, err := runCLI(t, "config", "add", "local", "--api-url", srv.URL)
	require.NoError(t, err)
	got, _ = complete(t, "get", "mesh", "")
	require.Equal(t, []string{"default", "payments"}, got)
}

func TestCompletionWithoutAServerIsQuietAndQuick(t *testing.T) {
	isolateCLIConfig(t)
	// Refused at once.
	start := time.Now()
	got, directive := complete(t, "get", "mesh", "--api-url", "http://127.0.0.1:1", "")
	require.Empty(t, got)
	require.Equal(t, ":4", directive)

	// A server that accepts and never answers: given up after a second.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	hung := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { time.Sleep(10 * time.Second) }), ReadHeaderTimeout: time.Second}
	go func() { _ = hung.Serve(lis) }()
	defer hung.Close()
	got, _ = complete(t, "delete", "mesh", "--api-url", "http://"+lis.Addr().String(), "")
	require.Empty(t, got)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestCompletionOfControlPlanes(t *testing.T) {
	path := isolateCLIConfig(t)
	require.NoError(t, saveCLIConfig(path, &cliConfig{Current: "prod", ControlPlanes: []controlPlane{
		{Name: "prod", URL: "https://prod:5682"}, {Name: "lab", URL: "http://127.0.0.1:15681"},
	}}))
	got, _ := complete(t, "config", "use", "")
	require.Equal(t, []string{"prod", "lab"}, got)
	got, _ = complete(t, "config", "remove", "")
	require.Equal(t, []string{"prod", "lab"}, got)
	got, _ = complete(t, "get", "meshes", "--control-plane", "")
	require.Equal(t, []string{"prod", "lab"}, got)
	got, _ = complete(t, "config", "use", "prod", "")
	require.Empty(t, got, "one name only")
}
