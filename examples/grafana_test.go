package examples_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/grafanatest"
)

// TestGrafanaDashboard checks the structure of grafana/meshsds.json (what
// Grafana needs to import it) and that it shows what operators asked for.
// test/e2e/grafana_test.go checks every query against a real meshsds.
func TestGrafanaDashboard(t *testing.T) {
	d := grafanatest.Load(t, "grafana/meshsds.json")

	t.Run("mesh variable", func(t *testing.T) {
		var mesh *grafanatest.Variable
		for i, v := range d.Templating.List {
			if v.Name == "mesh" {
				mesh = &d.Templating.List[i]
			}
		}
		require.NotNil(t, mesh)
		require.Equal(t, "query", mesh.Type)
		require.Regexp(t, `^label_values\(meshsds_[a-z_]+(\{.*\})?, mesh\)$`, mesh.QueryString())
	})

	exprs := map[string]string{}
	for _, q := range d.Queries() {
		exprs[q.Where] = q.Expr
	}
	uses := func(pattern string) bool {
		re := regexp.MustCompile(pattern)
		for _, e := range exprs {
			if re.MatchString(e) {
				return true
			}
		}
		return false
	}
	t.Run("asked-for panels", func(t *testing.T) {
		for what, pattern := range map[string]string{
			"connected data planes":       `meshsds_sds_connected_dataplanes`,
			"pushes as a rate":            `rate\(meshsds_sds_responses_total`,
			"NACKs per mesh as a rate":    `sum by \(mesh\) \(rate\(meshsds_sds_nacks_total`,
			"ACKs":                        `meshsds_sds_acks_total`,
			"CA rotation phase per mesh":  `by \(mesh\) \(meshsds_ca_rotation_phase\{[^}]*mesh=~"\$mesh"`,
			"rotation timeouts":           `meshsds_ca_rotation_timeouts_total`,
			"time until CA expiry":        `meshsds_ca_expiry_timestamp_seconds\{[^}]*\}\) - time\(\)`,
			"time until workload expiry":  `meshsds_workload_cert_expiry_timestamp_seconds\{[^}]*\}\) - time\(\)`,
			"CA expiring within validity": `meshsds_ca_expires_within_workload_validity`,
			"auth failures by reason":     `by \(reason\) \(rate\(meshsds_sds_auth_failures_total`,
			"source sync errors":          `meshsds_source_sync_errors_total`,
			"last sync age":               `time\(\) - meshsds_source_last_sync_timestamp_seconds`,
			"conflicts":                   `meshsds_source_conflicts`,
			"mesh resolution failing":     `meshsds_mesh_resolution_failing`,
			"SDS connections open":        `meshsds_sds_connections\{`,
			"why connections close":       `by \(reason\) \(rate\(meshsds_sds_connections_closed_total`,
			"push latency p99":            `histogram_quantile\(0\.99, sum by \(le\) \(rate\(meshsds_sds_push_latency_seconds_bucket`,
			"certificates issued":         `rate\(meshsds_certificates_issued_total`,
			"issue latency":               `histogram_quantile\(0\.99, sum by \(le\) \(rate\(meshsds_certificate_issue_duration_seconds_bucket`,
			"admin API requests":          `meshsds_api_requests_total`,
		} {
			require.True(t, uses(pattern), "no query shows %s (%s)", what, pattern)
		}
	})

	t.Run("every query follows the instance variable", func(t *testing.T) {
		for where, e := range exprs {
			for _, s := range grafanatest.Selectors(e) {
				if where == "variable instance" {
					continue
				}
				require.Contains(t, s.Labels, "instance", "%s: %s ignores $instance", where, s.Metric)
			}
		}
	})

	t.Run("rotation phase value mappings", func(t *testing.T) {
		raw, err := os.ReadFile("grafana/meshsds.json")
		require.NoError(t, err)
		var model struct {
			Panels []struct {
				Targets     []struct{ Expr string }
				FieldConfig struct {
					Defaults struct {
						Mappings []struct {
							Type    string
							Options map[string]struct{ Text string }
						}
					}
				}
			}
		}
		require.NoError(t, json.Unmarshal(raw, &model))
		found := false
		for _, p := range model.Panels {
			if len(p.Targets) == 0 || !strings.Contains(p.Targets[0].Expr, "meshsds_ca_rotation_phase") {
				continue
			}
			found = true
			require.Len(t, p.FieldConfig.Defaults.Mappings, 1)
			m := p.FieldConfig.Defaults.Mappings[0]
			require.Equal(t, "value", m.Type)
			require.Equal(t, "steady", m.Options["0"].Text)
			require.Equal(t, "trust-new-ca", m.Options["1"].Text)
			require.Equal(t, "reissue", m.Options["2"].Text)
		}
		require.True(t, found)
	})
}
