package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runCLI runs the meshsds command tree in-process with args and returns
// what it printed on standard output and its error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// isolateCLIConfig points the CLI at a fresh config file and clears the
// variables that would override it.
func isolateCLIConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meshsds", "config.yaml")
	t.Setenv(envCLIConfig, path)
	for _, k := range []string{envAPIURL, envCACertFile, envClientCertFile, envClientKeyFile} {
		t.Setenv(k, "")
	}
	return path
}

// fakeAdminAPI answers GET /meshes like meshsds with the given mesh names,
// and counts the requests it gets.
func fakeAdminAPI(meshes ...string) (http.Handler, *atomic.Int64) {
	var calls atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/meshes":
			var items []string
			for _, m := range meshes {
				items = append(items, `{"type":"Mesh","name":"`+m+`"}`)
			}
			_, _ = w.Write([]byte(`{"total":` + strconv.Itoa(len(meshes)) + `,"items":[` + strings.Join(items, ",") + `],"next":null}`))
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/meshes/") && strings.HasSuffix(r.URL.Path, "/secrets"):
			_, _ = w.Write([]byte(`{"total":2,"items":[{"type":"Secret","name":"ca-key"},{"type":"Secret","name":"ca-cert"}],"next":null}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"title":"Not found"}`))
		}
	}), &calls
}

func TestConfigVerbs(t *testing.T) {
	path := isolateCLIConfig(t)
	h, _ := fakeAdminAPI("default")
	srv := httptest.NewServer(h)
	defer srv.Close()

	// Nothing configured: list is empty, not an error.
	out, err := runCLI(t, "config", "list")
	require.NoError(t, err)
	require.Equal(t, "CURRENT   NAME   URL   CA CERT   CLIENT CERT\n", out)

	out, err = runCLI(t, "config", "add", "local", "--api-url", srv.URL)
	require.NoError(t, err)
	require.Equal(t, `added control plane "local" (`+srv.URL+`) in `+path+"\nswitched to control plane \"local\"\n", out)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// The verbs now use it without any flag.
	out, err = runCLI(t, "get", "meshes")
	require.NoError(t, err)
	require.Contains(t, out, "default")

	// A second one, not answering: refused unless --skip-verify.
	_, err = runCLI(t, "config", "add", "down", "--api-url", "http://127.0.0.1:1")
	require.ErrorContains(t, err, `control plane "down" not added: cannot reach the meshsds admin API at http://127.0.0.1:1`)
	require.ErrorContains(t, err, "add --skip-verify to add it anyway")
	out, err = runCLI(t, "config", "add", "down", "--address", "http://127.0.0.1:1", "--skip-check")
	require.NoError(t, err, "kumactl's flag names work too")
	require.Contains(t, out, `added control plane "down"`)

	_, err = runCLI(t, "config", "add", "down", "--api-url", srv.URL)
	require.ErrorContains(t, err, `control plane "down" already exists in `+path+` (http://127.0.0.1:1): add --overwrite to replace it`)
	out, err = runCLI(t, "config", "add", "down", "--api-url", srv.URL, "--overwrite")
	require.NoError(t, err)
	require.Contains(t, out, `replaced control plane "down"`)

	_, err = runCLI(t, "config", "add", "bad name", "--api-url", srv.URL)
	require.ErrorContains(t, err, `control plane "bad name": controlPlanes[0].name: "bad name" must be 1 to 63 letters`)
	_, err = runCLI(t, "config", "add", "nourl")
	require.ErrorContains(t, err, "--api-url is required")

	out, err = runCLI(t, "config", "use", "local")
	require.NoError(t, err)
	require.Equal(t, `switched to control plane "local" (`+srv.URL+")\n", out)
	_, err = runCLI(t, "config", "use", "nope")
	require.ErrorContains(t, err, `no control plane "nope" in `+path)

	out, err = runCLI(t, "config", "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	require.Regexp(t, `^\*\s+local\s+`+srv.URL+`\s+-\s+-$`, lines[1])
	require.Regexp(t, `^\s+down\s+`+srv.URL, lines[2])

	out, err = runCLI(t, "config", "list", "-o", "yaml")
	require.NoError(t, err)
	require.Contains(t, out, "current: local\n")

	out, err = runCLI(t, "config", "remove", "local")
	require.NoError(t, err)
	require.Contains(t, out, `removed control plane "local"`)
	require.Contains(t, out, "there is no current control plane now")
	_, err = runCLI(t, "config", "remove", "local")
	require.ErrorContains(t, err, `no control plane "local" in `+path)
	cfg, err := loadCLIConfig(path)
	require.NoError(t, err)
	require.Equal(t, &cliConfig{ControlPlanes: []controlPlane{{Name: "down", URL: srv.URL}}}, cfg)
}

func TestConfigAddWithCertificates(t *testing.T) {
	path := isolateCLIConfig(t)
	dir := t.TempDir()
	t.Chdir(dir)

	clientCert, clientKey, err := selfSigned("client", nil, time.Hour, time.Now())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile("alice.pem", clientCert, 0o600))
	require.NoError(t, os.WriteFile("alice.key", clientKey, 0o600))
	block, _ := pem.Decode(clientCert)
	trusted, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)

	h, _ := fakeAdminAPI("default")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || !r.TLS.PeerCertificates[0].Equal(trusted) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"title":"Unauthorized","details":"a client certificate is required"}`))
			return
		}
		h.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below are expected
	srv.StartTLS()
	defer srv.Close()
	require.NoError(t, os.WriteFile("server-ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))

	// Without the server's CA: the check fails and says what to do.
	_, err = runCLI(t, "config", "add", "prod", "--api-url", srv.URL)
	require.ErrorContains(t, err, "presented a certificate this CLI does not trust")
	// With the wrong CA: the message names the file given, not a flag to add.
	_, err = runCLI(t, "config", "add", "prod", "--api-url", srv.URL, "--ca-cert-file", "alice.pem")
	require.ErrorContains(t, err, "presented a certificate that does not verify with the CA of "+filepath.Join(dir, "alice.pem"))
	// Without a client certificate: the server's refusal is reported.
	_, err = runCLI(t, "config", "add", "prod", "--api-url", srv.URL, "--ca-cert-file", "server-ca.crt")
	require.ErrorContains(t, err, "answered GET /meshes with 401")
	// A missing file is an error even with --skip-verify.
	_, err = runCLI(t, "config", "add", "prod", "--api-url", srv.URL, "--ca-cert-file", "nope.crt", "--skip-verify")
	require.ErrorContains(t, err, "nope.crt: no such file")

	_, err = runCLI(t, "config", "add", "prod", "--api-url", srv.URL, "--ca-cert-file", "server-ca.crt",
		"--client-cert-file", "alice.pem", "--client-key-file", "alice.key")
	require.NoError(t, err)
	cfg, err := loadCLIConfig(path)
	require.NoError(t, err)
	require.Equal(t, []controlPlane{{
		Name: "prod", URL: srv.URL, CACertFile: filepath.Join(dir, "server-ca.crt"),
		ClientCertFile: filepath.Join(dir, "alice.pem"), ClientKeyFile: filepath.Join(dir, "alice.key"),
	}}, cfg.ControlPlanes, "relative paths are stored absolute: the CLI runs from anywhere later")

	// From another directory, the stored control plane works.
	t.Chdir(t.TempDir())
	out, err := runCLI(t, "get", "meshes")
	require.NoError(t, err)
	require.Contains(t, out, "default")
}

// Several "meshsds config" commands at once (a script adding control
// planes in parallel) lose none of their changes.
func TestConcurrentConfigCommandsLoseNothing(t *testing.T) {
	path := isolateCLIConfig(t)
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := runCLI(t, "config", "add", "cp-"+strconv.Itoa(i), "--api-url", "http://127.0.0.1:"+strconv.Itoa(20000+i), "--skip-verify")
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	cfg, err := loadCLIConfig(path)
	require.NoError(t, err)
	require.Len(t, cfg.ControlPlanes, n, "every added control plane is in the file")

	for i := range n {
		go func() {
			_, err := runCLI(t, "config", "remove", "cp-"+strconv.Itoa(i))
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	cfg, err = loadCLIConfig(path)
	require.NoError(t, err)
	require.Empty(t, cfg.ControlPlanes, "every removed control plane is gone")
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no lock or temporary file is left behind")
}
