package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// TestSwitchingToABuiltinCAWithoutAFailedHandshake switches a live mesh from
// a provided CA to a builtin one through the API while two data planes keep
// handshaking with whatever they hold: not one handshake may fail.
func TestSwitchingToABuiltinCAWithoutAFailedHandshake(t *testing.T) {
	for _, transport := range transportsToTest(t) {
		t.Run(transport, func(t *testing.T) {
			s := start(t, t.TempDir(), append(transportArgs(transport), "--ca-rotation-timeout", "30s")...)
			oldCA := pkitest.NewRootCA(t, "provided")
			s.mustCLI(t, caManifests("default", oldCA), "apply", "-f", "-")
			web := connect(t, s, "default", "web-1", "web")
			backend := connect(t, s, "default", "backend-1", "backend")

			stop := make(chan struct{})
			type result struct {
				n        int
				failures []error
			}
			done := make(chan result, 1)
			go func() {
				n, f := sdstest.HandshakeLoop(web.live, backend.live, sdstest.SPIFFE("default", "web"), sdstest.SPIFFE("default", "backend"), stop)
				done <- result{n, f}
			}()

			s.mustCLI(t, `type: Mesh
name: default
mtls:
  enabledBackend: ca-2
  backends:
  - name: ca-1
    type: provided
    config:
      cert: { secret: ca-cert }
      key: { secret: ca-key }
  - name: ca-2
    type: builtin
`, "apply", "-f", "-")

			onNewCA := func(w *sdstest.Workload) bool {
				return w.Leaf.CheckSignatureFrom(oldCA.Cert) != nil && !strings.Contains(string(w.BundlePEM), string(oldCA.CertPEM))
			}
			web.live.WaitFor("the builtin CA alone", onNewCA)
			backend.live.WaitFor("the builtin CA alone", onNewCA)
			time.Sleep(100 * time.Millisecond) // a few rounds in the final state
			close(stop)
			r := <-done
			require.Empty(t, r.failures, "no handshake may fail while the CA changes")
			require.Greater(t, r.n, 3)

			logs := s.logs.String()
			require.Contains(t, logs, "CA change started")
			require.Contains(t, logs, "phase=reissue")
			require.Contains(t, logs, "CA change complete")
			require.Contains(t, s.scrape(t), `meshsds_ca_rotation_phase{mesh="default"} 0`)

			resp, err := http.Get("http://" + s.admin + "/meshes/default")
			require.NoError(t, err)
			defer resp.Body.Close()
			var mesh struct {
				Status struct {
					Phase     string   `json:"phase"`
					SigningCA string   `json:"signingCA"`
					Trusted   []string `json:"trustedCAs"`
				} `json:"status"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&mesh))
			require.Equal(t, "steady", mesh.Status.Phase)
			require.Contains(t, mesh.Status.SigningCA, "builtin CA for mesh default", fmt.Sprint(mesh.Status))
			require.Len(t, mesh.Status.Trusted, 1)
		})
	}
}
