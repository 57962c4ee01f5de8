package e2e

import (
	"bytes"
	"context"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/internal/testing/testenv"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// ScreenshotEnv names a file the status page test also writes its
// screenshot to (make ui-screenshot: docs/ui.png).
const screenshotEnv = "MESHSDS_UI_SCREENSHOT"

// chromiumBinary finds Debian's headless-capable Chromium: the test is
// skipped locally without it, and fails in CI, which installs it.
func chromiumBinary(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Missing(t, "chromium not found: this test renders the status page in headless Chromium (apt-get install -y chromium; .ci/run does)")
	return ""
}

// exampleDir moves a secrets directory to /tmp/meshsds/secrets for the
// time of the test.
func exampleDir(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(os.TempDir(), "meshsds")
	require.NoError(t, os.RemoveAll(root))
	require.NoError(t, os.MkdirAll(root, 0o700))
	t.Cleanup(func() { os.RemoveAll(root) })
	to := filepath.Join(root, "secrets")
	require.NoError(t, os.Rename(dir, to))
	return to
}

// chromium runs headless Chromium on url with args (--dump-dom or
// --screenshot=FILE) and returns its standard output.
func chromium(t *testing.T, bin, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
		"--no-first-run", "--disable-extensions", "--user-data-dir=" + t.TempDir(), "--window-size=1400,1100",
	}, append(args, url)...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "chromium: %s", stderr.String())
	return stdout.String()
}

// TestStatusPageInChromium renders /ui of a real server in headless
// Chromium: meshes from files and the API, one of them in the middle of a
// CA change, connected data planes with their certificates, one NACK, a
// file that fails to decode. The DOM Chromium builds must hold all of it,
// and the screenshot must show the page's own styles (the
// Content-Security-Policy lets that one style sheet through, nothing else).
func TestStatusPageInChromium(t *testing.T) {
	bin := chromiumBinary(t)
	dir, _ := secretsDir(t)
	if os.Getenv(screenshotEnv) != "" {
		// For the README's picture, paths a reader would have.
		dir = exampleDir(t, dir)
	}
	s := start(t, dir, "--ca-rotation-timeout", "10m")
	s.mustCLI(t, caManifests("payments", pkitest.NewRootCA(t, "payments")), "apply", "-f", "-")

	connect(t, s, "default", "web-1", "web")
	connect(t, s, "default", "backend-1", "backend")
	connect(t, s, "payments", "billing-1", "billing")

	// A data plane of mesh other that takes its first secrets, then stops
	// answering: the CA change below waits for it.
	conn := sdstest.Dial(t, s.sds, s.token(t, "other", "legacy-1", "legacy"))
	stuck := sdstest.OpenStream(t, conn, "other.legacy-1", false, "identity_cert", "mesh_ca")
	stuck.Expect()
	next := pkitest.NewRootCA(t, "other CA 2")
	writeAtomic(t, filepath.Join(dir, "other", "ca-key"), next.KeyPEM)
	writeAtomic(t, filepath.Join(dir, "other", "ca-cert"), next.CertPEM)

	// A data plane that refuses what it is sent.
	nacker := sdstest.OpenStream(t, sdstest.Dial(t, s.sds, s.token(t, "payments", "billing-2", "billing")), "payments.billing-2", false, "mesh_ca")
	resp, err := nacker.Recv(10 * time.Second)
	require.NoError(t, err)
	require.NoError(t, nacker.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: "payments.billing-2"}, TypeUrl: sdstest.SecretTypeURL, ResourceNames: []string{"mesh_ca"},
		ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Code: 3, Message: "unable to load trusted CA"},
	}))

	// A manifest that does not decode.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("type: Secret\nname: x\ndata: '!!'\n"), 0o600))

	url := "http://" + s.admin + "/ui"
	var dom string
	require.Eventually(t, func() bool {
		dom = chromium(t, bin, url, "--dump-dom")
		return strings.Contains(dom, "trust-new-ca") && strings.Contains(dom, "unable to load trusted CA") &&
			strings.Contains(dom, "broken.yaml")
	}, 30*time.Second, 500*time.Millisecond, "the page shows the CA change, the NACK and the broken file")
	for _, want := range []string{
		`data-mesh="default"`, `data-mesh="other"`, `data-mesh="payments"`,
		filepath.Join(dir, "meshes.yaml"),
		`<span class="origin-file">file</span>`, `<span class="origin-api">api</span>`,
		`data-dataplane="default.web-1"`, `data-dataplane="default.backend-1"`, `data-dataplane="payments.billing-1"`,
		`data-dataplane="other.legacy-1"`, "waiting for 1 stream", "has to be valid base64 string",
		`id="ready">serving`,
	} {
		require.Contains(t, dom, want)
	}
	require.NotContains(t, dom, "<script")
	require.NotContains(t, dom, "PRIVATE KEY")

	shot := filepath.Join(t.TempDir(), "ui.png")
	chromium(t, bin, url, "--screenshot="+shot)
	data, err := os.ReadFile(shot)
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(data))
	require.NoError(t, err)
	require.Equal(t, 1400, img.Bounds().Dx())
	// The header is white on the page's grey: the style sheet applied.
	white := color.RGBAModel.Convert(color.White)
	require.Equal(t, white, color.RGBAModel.Convert(img.At(700, 10)), "header background")
	require.Equal(t, color.RGBA{0xf6, 0xf7, 0xf9, 0xff}, color.RGBAModel.Convert(img.At(5, img.Bounds().Dy()-5)), "page background")
	if out := os.Getenv(screenshotEnv); out != "" {
		require.NoError(t, os.WriteFile(out, data, 0o644))
		t.Logf("screenshot written to %s", out)
	}
}
