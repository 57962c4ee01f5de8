package api

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/secretsource"
)

// statusByMesh is a hand-written MeshStatus.
type statusByMesh map[string]*sds.MeshStatus

func (s statusByMesh) MeshStatus(mesh string) *sds.MeshStatus { return s[mesh] }

type problemList []secretsource.Problem

func (p problemList) Problems() []secretsource.Problem { return p }

// TestStatusPage renders the page from hand-written parts (the headless
// browser test in test/e2e renders it from a real server): every mesh with
// its origin, CA and phase; every data plane with its certificate and last
// ACK/NACK; every source problem. Text is escaped, and nothing runs.
func TestStatusPage(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	others := &otherSources{meshes: []*meshconfig.Mesh{{
		Name: "payments", MTLS: &meshconfig.MTLS{Backends: []meshconfig.Backend{{Name: "ca-1", Type: meshconfig.BackendProvided}}},
		Meta: meshconfig.Meta{Path: "/etc/meshsds/payments.yaml"},
	}}}
	f := newFixture(t, func(c *Config) {
		c.Now = func() time.Time { return now }
		c.Others = others
		c.Index = Index{Hostname: "cp-1", Version: "v1.2.3"}
		c.Ready = func() bool { return true }
		c.Status = statusByMesh{
			"payments": {Phase: "reissue", Since: now.Add(-2 * time.Minute), Waiting: 3, SigningCA: "CN=payments CA 2 (sha256 0123456789abcdef)", TrustedCA: []string{"a", "b"}, CAExpiry: now.Add(90 * 24 * time.Hour)},
			"default":  {Phase: "steady", SigningCA: "CN=default CA (sha256 fedcba9876543210)", CAExpiry: now.Add(10 * 24 * time.Hour), Error: "mtls.backends[0].config.key: does not match"},
		}
		c.Dataplanes = dataplaneList{
			{Mesh: "default", Name: "web-1", Streams: []sds.StreamStatus{
				{API: "sotw", Resources: []string{"identity_cert"}, ConnectedAt: now.Add(-time.Hour), CertSerial: "1a2b", CertExpiry: now.Add(20 * time.Hour), LastACK: now.Add(-5 * time.Minute)},
				{API: "sotw", Resources: []string{"mesh_ca"}, ConnectedAt: now.Add(-time.Hour), LastACK: now.Add(-30 * time.Second), LastNACK: now.Add(-time.Minute), LastNACKMessage: "<b>bad</b> bundle"},
			}},
			{Mesh: "payments", Name: "pay-1", Streams: []sds.StreamStatus{
				{API: "ads", Resources: []string{"identity_cert", "mesh_ca"}, ConnectedAt: now.Add(-3 * time.Minute), CertSerial: "ffee", CertExpiry: now.Add(5 * time.Minute)},
			}},
		}
		c.Problems = problemList{{Source: "file:/etc/meshsds", Subject: "/etc/meshsds/broken.yaml", Message: `data: has to be valid base64 string <script>alert(1)</script>`, Since: now.Add(-time.Hour)}}
	})
	code, body := f.do("PUT", "/meshes/default", "type: Mesh\nname: default\n")
	require.Equal(t, http.StatusCreated, code, body)

	resp, err := http.Get(f.url + "/ui")
	require.NoError(t, err)
	defer resp.Body.Close()
	html, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	page := string(html)
	require.Equal(t, http.StatusOK, resp.StatusCode, page)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))

	// Nothing runs: the policy allows the page's own style sheet only,
	// which is the one in the page.
	csp := resp.Header.Get("Content-Security-Policy")
	sum := sha256.Sum256([]byte(uiCSS))
	require.Contains(t, csp, "default-src 'none'")
	require.Contains(t, csp, "style-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
	require.Contains(t, page, "<style>"+uiCSS+"</style>", "the style sheet is served byte for byte, or its hash would not match")
	require.NotContains(t, page, "<script")
	require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;", "text is escaped")
	require.Contains(t, page, "&lt;b&gt;bad&lt;/b&gt; bundle")

	for _, want := range []string{
		"cp-1", "version v1.2.3", `id="ready">serving`,
		// Meshes: origin, path, backend, CA, phase, error.
		`data-mesh="default"`, `<span class="origin-api">api</span>`, "CN=default CA (sha256 fedcba9876543210)", "in 10d", "mtls.backends[0].config.key: does not match",
		`data-mesh="payments"`, `<span class="origin-file">file</span>`, "/etc/meshsds/payments.yaml", "provided/ca-1",
		`<span class="badge warn phase">reissue</span>`, "since 2m ago, waiting for 3 streams", "trusting 2 CAs", "in 90d",
		// Data planes: streams, certificate, expiry, ACK, NACK.
		`data-dataplane="default.web-1"`, "sotw (identity_cert); sotw (mesh_ca)", "1a2b", "in 20h", "30s ago", `<span class="bad">1m ago</span>`,
		`data-dataplane="payments.pay-1"`, "ads (identity_cert, mesh_ca)", `<span class="warn">in 5m</span>`, "connected 3m ago",
		// Problems.
		"file:/etc/meshsds", "/etc/meshsds/broken.yaml", "1h ago",
	} {
		require.Contains(t, page, want)
	}
	require.Equal(t, 2, strings.Count(page, `<tr class="mesh"`))
	require.Equal(t, 2, strings.Count(page, `<tr class="dataplane"`))

	// The page is read-only: other methods are refused in Kuma's shape.
	code, body = f.do("POST", "/ui", "")
	require.Equal(t, http.StatusMethodNotAllowed, code)
	require.Equal(t, "Method not allowed", body["title"])
}

// TestStatusPageEmpty: a server with nothing yet says so in words.
func TestStatusPageEmpty(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Ready = func() bool { return false } })
	resp, err := http.Get(f.url + "/ui")
	require.NoError(t, err)
	defer resp.Body.Close()
	html, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	page := string(html)
	for _, want := range []string{"No mesh is defined", "No data plane is connected", "Every source reads cleanly", "sources not synced yet"} {
		require.Contains(t, page, want)
	}
}

// TestStatusPageCapsDataplanes: a fleet is counted, not listed whole.
func TestStatusPageCapsDataplanes(t *testing.T) {
	dps := make(dataplaneList, uiMaxDataplanes+7)
	for i := range dps {
		dps[i] = sds.DataplaneStatus{Mesh: "default", Name: "dp-" + strings.Repeat("x", i%3) + string(rune('a'+i%26))}
	}
	f := newFixture(t, func(c *Config) { c.Dataplanes = dps })
	resp, err := http.Get(f.url + "/ui")
	require.NoError(t, err)
	defer resp.Body.Close()
	html, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	page := string(html)
	require.Equal(t, uiMaxDataplanes, strings.Count(page, `<tr class="dataplane"`))
	require.Contains(t, page, "… and 7 more")
	require.Contains(t, page, "Connected data planes <span class=\"count\">(507)</span>")
}
