package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/envoytest"
)

// What the tests with real Envoys share: the shipped bootstraps of
// examples/envoy made runnable on free ports, waits on an Envoy's /certs and
// SDS stats, and a client that sends requests through a sidecar, one new
// connection (so one new mTLS handshake between the sidecars) per request.

// examplesDir holds the shipped Envoy bootstraps.
const examplesDir = "../../examples/envoy"

// envoyWait bounds the waits for an Envoy to take a change.
const envoyWait = 30 * time.Second

// exampleBootstrap reads a shipped bootstrap and makes it what a user would
// run, on this test's ports: every placeholder substituted as the README's
// sed does (vars maps "${NAME}" to its value), then each of rewrite's
// literal strings (ports, addresses) replaced; each must occur.
func exampleBootstrap(t *testing.T, file string, vars, rewrite map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(examplesDir, file))
	require.NoError(t, err)
	text := string(raw)
	// The header comments show commands with placeholders; substitute the
	// configuration only, as sed would everywhere (comments do not matter).
	for k, v := range vars {
		require.Contains(t, text, k, "%s has no placeholder %s", file, k)
		text = strings.ReplaceAll(text, k, v)
	}
	for old, repl := range rewrite {
		require.Contains(t, text, old, "%s has no %q to rewrite", file, old)
		text = strings.ReplaceAll(text, old, repl)
	}
	var config []string
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			config = append(config, l)
		}
	}
	require.NotContains(t, strings.Join(config, "\n"), "${", "%s: a placeholder is left", file)
	return text
}

// startEnvoy runs an Envoy for the test with the given bootstrap.
func startEnvoy(t *testing.T, name, bootstrap string) *envoytest.Envoy {
	t.Helper()
	return envoytest.Start(t, envoytest.Config{Name: name, Bootstrap: bootstrap, ComponentLogLevel: "config:debug"})
}

// freePort returns a free loopback port, as a string.
func freePort(t *testing.T) string {
	t.Helper()
	_, p, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	return p
}

// waitHolds waits until n TLS contexts of e hold a certificate with the URI
// SAN uri, every one trusting exactly the CAs of the given serials.
func waitHolds(t *testing.T, e *envoytest.Envoy, n int, uri string, caSerials ...string) *envoytest.Certs {
	t.Helper()
	return waitCerts(t, e, fmt.Sprintf("%s trusting %v in %d contexts", uri, caSerials, n), func(c *envoytest.Certs) bool {
		return c.Holds(n, uri, caSerials...)
	})
}

// waitCerts waits until e's /certs satisfies ok.
func waitCerts(t *testing.T, e *envoytest.Envoy, what string, ok func(*envoytest.Certs) bool) *envoytest.Certs {
	t.Helper()
	var last *envoytest.Certs
	var lastErr error
	deadline := time.Now().Add(envoyWait)
	for time.Now().Before(deadline) {
		last, lastErr = e.Certs()
		if lastErr == nil && ok(last) {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s does not hold %s within %s: %+v %v", e.Name(), what, envoyWait, last, lastErr)
	return nil
}

// waitStat waits until a counter or gauge of e satisfies ok.
func waitStat(t *testing.T, e *envoytest.Envoy, name string, ok func(uint64) bool) uint64 {
	t.Helper()
	var v uint64
	var err error
	deadline := time.Now().Add(envoyWait)
	for time.Now().Before(deadline) {
		if v, err = e.Stat(name); err == nil && ok(v) {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: stat %s is %d (%v) after %s", e.Name(), name, v, err, envoyWait)
	return 0
}

// requireSDSClean checks that e's SDS subscriptions (want of them) all
// succeeded at least once and none was ever rejected.
func requireSDSClean(t *testing.T, e *envoytest.Envoy, want int) *envoytest.SDSStats {
	t.Helper()
	sds, err := e.SDS()
	require.NoError(t, err)
	require.Len(t, sds.Secrets, want, "%s subscribes to %v", e.Name(), sds.Secrets)
	require.GreaterOrEqual(t, sds.UpdateSuccess, uint64(want), "%s: update_success", e.Name())
	require.Zero(t, sds.UpdateRejected, "%s: update_rejected", e.Name())
	return sds
}

// httpGet sends one request on a new connection and returns the response's
// status, header and body.
func httpGet(url string) (int, http.Header, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body), err
}

// traffic sends requests to url one after another, each on a new
// connection, until stopped, and counts what came back.
type traffic struct {
	url  string
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	ok       int
	failures []string
}

// maxTraffic bounds a traffic loop that nobody stops.
const maxTraffic = 5 * time.Minute

func startTraffic(t *testing.T, url, wantBody string) *traffic {
	t.Helper()
	tr := &traffic{url: url, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		end := time.Now().Add(maxTraffic)
		for time.Now().Before(end) {
			select {
			case <-tr.stop:
				return
			default:
			}
			code, _, body, err := httpGet(url)
			tr.mu.Lock()
			switch {
			case err != nil:
				tr.failures = append(tr.failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			case code != http.StatusOK || body != wantBody:
				tr.failures = append(tr.failures, fmt.Sprintf("%s: %d %q", time.Now().Format("15:04:05.000"), code, body))
			default:
				tr.ok++
			}
			tr.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { tr.halt() })
	return tr
}

func (tr *traffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	<-tr.done
}

// counts returns the successes and failures so far.
func (tr *traffic) counts() (int, []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok, append([]string(nil), tr.failures...)
}

// waitMore waits until n more requests have succeeded, so that a step is
// known to have been crossed by traffic.
func (tr *traffic) waitMore(t *testing.T, n int) {
	t.Helper()
	start, _ := tr.counts()
	deadline := time.Now().Add(envoyWait)
	for time.Now().Before(deadline) {
		if ok, _ := tr.counts(); ok >= start+n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	ok, f := tr.counts()
	t.Fatalf("traffic stalled: %d ok (from %d), failures %v", ok, start, f)
}

// requireNoFailure stops the traffic and requires that not one request
// failed, and at least minOK succeeded.
func (tr *traffic) requireNoFailure(t *testing.T, minOK int) int {
	t.Helper()
	tr.halt()
	ok, failures := tr.counts()
	if len(failures) > 10 {
		failures = append(append(failures[:5:5], fmt.Sprintf("... %d more ...", len(failures)-10)), failures[len(failures)-5:]...)
	}
	require.Empty(t, failures, "not one request may fail (%d succeeded)", ok)
	require.GreaterOrEqual(t, ok, minOK)
	return ok
}

// transportsToTest are the SDS transports of meshsds (--sds-transport)
// every test that talks SDS runs on.
func transportsToTest(*testing.T) []string { return []string{"grpclite", "grpc-go"} }

// transportArgs are the serve flags selecting a transport; none for the
// default, so that the default is what is tested.
func transportArgs(transport string) []string {
	if transport == "grpclite" {
		return nil
	}
	return []string{"--sds-transport", transport}
}

// runEnvoyValidate runs Envoy's own check of a bootstrap file, in the
// file's directory (relative paths in it are relative to that).
func runEnvoyValidate(bin, path string) (string, error) {
	cmd := exec.Command(bin, "--mode", "validate", "-c", path, "-l", "warn")
	cmd.Dir = filepath.Dir(path)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
