package grafanatest

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSelectorsAndGroupLabels(t *testing.T) {
	expr := `histogram_quantile(0.99, sum by (le) (rate(meshsds_sds_push_latency_seconds_bucket{instance=~"$instance"}[$__rate_interval])))` +
		` / on() group_left max without (job, instance) (go_goroutines{job="a, b", x!~"}"} ) + time()`
	require.Equal(t, []Selector{
		{Metric: "meshsds_sds_push_latency_seconds_bucket", Labels: []string{"instance"}},
		{Metric: "go_goroutines", Labels: []string{"job", "x"}},
	}, Selectors(expr))
	require.Equal(t, []string{"le", "job", "instance"}, GroupLabels(expr))
	require.Equal(t, []string{"mesh"}, GroupLabels(`label_values(meshsds_ca_rotation_phase{instance=~"$instance"}, mesh)`))
	require.Empty(t, Selectors(`vector(0) + algo_x + histogram_quantile(0.5, x)`))
}

func TestParseExpositionAndCheck(t *testing.T) {
	e, err := ParseExposition(`# HELP meshsds_sds_push_latency_seconds Push latency.
# TYPE meshsds_sds_push_latency_seconds histogram
meshsds_sds_push_latency_seconds_bucket{le="0.001"} 0
meshsds_sds_push_latency_seconds_bucket{le="+Inf"} 3
meshsds_sds_push_latency_seconds_sum 0.2
meshsds_sds_push_latency_seconds_count 3
# TYPE meshsds_ca_rotation_phase gauge
meshsds_ca_rotation_phase{mesh="a \"quoted\", {braced}"} 0
# TYPE meshsds_source_conflicts gauge
meshsds_source_conflicts 0
`)
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"le": true}, e.Series["meshsds_sds_push_latency_seconds_bucket"])
	require.Equal(t, map[string]bool{"mesh": true}, e.Series["meshsds_ca_rotation_phase"])
	require.Equal(t, "meshsds_sds_push_latency_seconds", e.Family("meshsds_sds_push_latency_seconds_count"))

	d := &Dashboard{Panels: []Panel{{ID: 1, Title: "p", Targets: []Target{
		{RefID: "A", Expr: `histogram_quantile(0.5, sum by (le) (rate(meshsds_sds_push_latency_seconds_bucket[5m])))`},
		{RefID: "B", Expr: `max by (mesh) (meshsds_ca_rotation_phase{mesh=~"$mesh", instance=~"$instance"})`},
		{RefID: "C", Expr: `sum by (mesh) (meshsds_source_conflicts{mesh="x"})`},
		{RefID: "D", Expr: `meshsds_sds_push_latency_seconds`},
		{RefID: "E", Expr: `rate(meshsds_sds_push_latency_seconds_max[1m]) + meshsds_gone_total`},
		{RefID: "F", Expr: `vector(1)`},
	}}}}
	require.Equal(t, []string{
		`panel 1 "p" target C: meshsds_source_conflicts has no label "mesh" (it has none)`,
		`panel 1 "p" target C: groups by "mesh", which no metric of the expression carries: sum by (mesh) (meshsds_source_conflicts{mesh="x"})`,
		`panel 1 "p" target D: histogram meshsds_sds_push_latency_seconds directly (query its _bucket, _sum or _count) is not exported`,
		`panel 1 "p" target E: metric meshsds_sds_push_latency_seconds_max is not exported`,
		`panel 1 "p" target E: metric meshsds_gone_total is not exported`,
		`panel 1 "p" target F: queries no metric with a prefix of [meshsds_ process_ go_]: vector(1)`,
	}, Check(d, e))
}

func TestValidate(t *testing.T) {
	good := func() *Dashboard {
		ds := &Datasource{Type: "prometheus", UID: "${DS_PROMETHEUS}"}
		return &Dashboard{
			Title: "t", UID: "u", SchemaVersion: 39,
			Inputs: []Input{{Name: "DS_PROMETHEUS", Type: "datasource", PluginID: "prometheus"}},
			Templating: Templating{List: []Variable{
				{Name: "DS_PROMETHEUS", Type: "datasource", Query: json.RawMessage(`"prometheus"`)},
				{Name: "mesh", Type: "query", Datasource: ds, Query: json.RawMessage(`{"query":"label_values(meshsds_x, mesh)"}`)},
			}},
			Panels: []Panel{
				{ID: 1, Type: "row", Title: "r", GridPos: &GridPos{W: 24, H: 1}},
				{ID: 2, Type: "stat", Title: "s", Datasource: ds, GridPos: &GridPos{Y: 1, W: 12, H: 4}, Targets: []Target{{RefID: "A", Expr: "sum(meshsds_x)"}}},
			},
		}
	}
	require.Empty(t, good().Validate())
	require.Equal(t, "label_values(meshsds_x, mesh)", good().Templating.List[1].QueryString())

	d := good()
	d.Inputs = nil
	d.Panels[1].ID = 1
	d.Panels[1].Datasource = nil
	d.Panels[1].GridPos.Y = 0
	d.Panels[1].Targets = append(d.Panels[1].Targets, Target{RefID: "A", Expr: "sum(rate(meshsds_x[5m])"})
	require.Equal(t, []string{
		`__inputs: no datasource input DS_PROMETHEUS of plugin "prometheus"`,
		`panel 1 "s": id also used by "r"`,
		`panel 1 "s": datasource must be {type: prometheus, uid: ${DS_PROMETHEUS}}, got <nil>`,
		`panel 1 "s": every target needs its own refId, got "A"`,
		`panel 1 "s" target A: unclosed "(" in sum(rate(meshsds_x[5m])`,
		`panel 1 "s" overlaps panel 1 "r"`,
	}, d.Validate())

	d = good()
	d.Panels[1].Targets = nil
	d.Panels[1].GridPos = &GridPos{X: 20, Y: 1, W: 8, H: 4}
	require.Equal(t, []string{`panel 2 "s": gridPos must be set within the 24 columns, got &{X:20 Y:1 W:8 H:4}`}, d.Validate())
}
