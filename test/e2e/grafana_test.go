package e2e

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/meshsds/meshsds/internal/testing/grafanatest"
	"github.com/meshsds/meshsds/internal/testing/pgtest"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// notOnDashboard lists the meshsds metrics the dashboard leaves out, each
// with the reason. Every other metric a running server exports must be on
// it, so that a new metric is not forgotten.
var notOnDashboard = map[string]string{
	"meshsds_webhook_admission_reviews_total": "only exported with --kubernetes --webhook-address, which this test does not run",
}

// onlyAfterFailure lists metrics of the dashboard that exist only once
// something failed in a way this test cannot cause; their queries are not
// checked when they are absent.
var onlyAfterFailure = map[string]string{
	"meshsds_cluster_errors_total": "counted only once an operation on the replicas' shared state fails",
}

// clusterQuery reports whether a query is about replicas sharing a store,
// which a server on its embedded store does not export.
func clusterQuery(q grafanatest.Query) bool { return strings.Contains(q.Expr, "meshsds_cluster_") }

// TestGrafanaDashboardQueriesExportedMetrics holds every query of
// examples/grafana/meshsds.json against what a real meshsds exports once it
// has seen what its panels show: data planes connected over SDS, a NACK, a
// refused token, a closed connection, an admin API request, a mesh that
// fails to resolve and a CA change whose steps time out on a data plane that
// never ACKs. Metric families with labels exist only once something set
// them, so each of these is needed for a series to be scraped.
func TestGrafanaDashboardQueriesExportedMetrics(t *testing.T) {
	d := grafanatest.Load(t, "../../examples/grafana/meshsds.json")

	dir, _ := secretsDir(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte(`type: Mesh
name: broken
mtls:
  backends:
  - name: ca-1
    type: provided
    config:
      cert: { secret: missing-cert }
      key: { secret: missing-key }
`), 0o600))
	s := start(t, dir, "--ca-rotation-timeout", "1s", "--audit-log", filepath.Join(t.TempDir(), "audit.log"))

	// Data planes of mesh default: one that ACKs, one stuck.
	web := connect(t, s, "default", "web-1", "web")
	stuckConn := sdstest.Dial(t, s.sds, s.token(t, "default", "stuck-1", "stuck"))
	sdstest.Follow(t, stuckConn, "default.stuck-1", "identity_cert", "mesh_ca", false)

	// A NACK, on a connection then closed by the client.
	nackConn := sdstest.Dial(t, s.sds, s.token(t, "other", "nack-1", "web"))
	st := sdstest.OpenStream(t, nackConn, "other.nack-1", false, "mesh_ca")
	resp, err := st.Recv(10 * time.Second)
	require.NoError(t, err)
	require.NoError(t, st.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: "other.nack-1"}, TypeUrl: sdstest.SecretTypeURL, ResourceNames: []string{"mesh_ca"},
		ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Code: 3, Message: "rejected by the test"},
	}))
	waitMetric(t, s, `meshsds_sds_nacks_total{api="sotw",mesh="other"}`, func(v float64) bool { return v >= 1 })
	st.Cancel()
	require.NoError(t, nackConn.Close())

	// A stream without a token is refused.
	anon := sdstest.Dial(t, s.sds, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refused, err := secretv3.NewSecretDiscoveryServiceClient(anon).StreamSecrets(ctx)
	require.NoError(t, err)
	_ = refused.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "default.anon"}, TypeUrl: sdstest.SecretTypeURL})
	_, err = refused.Recv()
	require.Error(t, err)

	// The admin API, through the CLI: a read and an audited write.
	require.Contains(t, s.mustCLI(t, "", "get", "meshes"), "NAME")
	require.Contains(t, s.mustCLI(t, "type: Secret\nmesh: other\nname: note\ndata: dGVzdAo=\n", "apply", "-f", "-"), "created")

	// A CA change the stuck data plane holds up until each step times out.
	newCA := pkitest.NewRootCA(t, "default CA 2")
	writeAtomic(t, filepath.Join(dir, "default", "ca-key"), newCA.KeyPEM)
	writeAtomic(t, filepath.Join(dir, "default", "ca-cert"), newCA.CertPEM)
	web.rotatedTo(t, newCA)
	waitMetric(t, s, `meshsds_ca_rotation_timeouts_total{mesh="default"}`, func(v float64) bool { return v >= 2 })
	waitMetric(t, s, `meshsds_sds_connections_closed_total{reason="client"}`, func(v float64) bool { return v >= 1 })

	scrape := s.scrape(t)
	exp, err := grafanatest.ParseExposition(scrape)
	require.NoError(t, err)
	require.Contains(t, scrape, `meshsds_mesh_resolution_failing{mesh="broken"} 1`)
	require.Contains(t, scrape, `meshsds_sds_auth_failures_total{reason="missing_token"} 1`)

	var single, cluster []grafanatest.Query
	for _, q := range d.Queries() {
		if clusterQuery(q) {
			cluster = append(cluster, q)
		} else {
			single = append(single, q)
		}
	}
	for _, problem := range grafanatest.CheckQueries(single, exp, nil) {
		t.Error(problem)
	}

	// The other way round: every meshsds metric is on the dashboard.
	queried := map[string]bool{}
	for _, name := range d.MetricNames() {
		queried[exp.Family(name)] = true
	}
	requireOnDashboard(t, exp, queried)

	// The replicas row, against a server sharing PostgreSQL (skipped
	// locally without PostgreSQL, like the other PostgreSQL tests).
	t.Run("replicas", func(t *testing.T) {
		require.NotEmpty(t, cluster)
		dbURL := pgtest.Start(t).NewDatabase(t)
		cdir, _ := secretsDir(t)
		r := start(t, cdir, "--store", "postgres", "--postgres-url", dbURL)
		dp := follow(t, r, r, "default", "web-1", "web")
		dp.WaitFor("its first certificate", func(*sdstest.Workload) bool { return true })
		newCA := pkitest.NewRootCA(t, "default CA 3")
		writeAtomic(t, filepath.Join(cdir, "default", "ca-key"), newCA.KeyPEM)
		writeAtomic(t, filepath.Join(cdir, "default", "ca-cert"), newCA.CertPEM)
		dp.WaitFor("the end of the CA change", sdstest.SignedBy(newCA))
		waitMetric(t, r, `meshsds_cluster_leader`, func(v float64) bool { return v == 1 })
		cexp, err := grafanatest.ParseExposition(r.scrape(t))
		require.NoError(t, err)
		for _, problem := range grafanatest.CheckQueries(cluster, cexp, func(m string) bool { return onlyAfterFailure[m] != "" }) {
			t.Error(problem)
		}
		requireOnDashboard(t, cexp, queried)
	})
	t.Logf("the dashboard queries %d metrics, all exported", len(d.MetricNames()))
}

// requireOnDashboard fails for a meshsds metric of exp that no query uses
// and notOnDashboard does not excuse.
func requireOnDashboard(t *testing.T, exp *grafanatest.Exposition, queried map[string]bool) {
	t.Helper()
	var missing []string
	for family := range exp.Types {
		if strings.HasPrefix(family, "meshsds_") && !queried[family] && notOnDashboard[family] == "" {
			missing = append(missing, family)
		}
	}
	sort.Strings(missing)
	require.Empty(t, missing, "exported but on no panel of the dashboard: add a panel, or a reason to notOnDashboard")
}
