package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshsds/meshsds/internal/testing/pgtest"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/internal/testing/testenv"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// replicaLease is short in these tests, so that a killed replica stops
// being waited for, and a killed leader is replaced, within seconds.
const replicaLease = "3s"

// startReplicas runs n replicas on one PostgreSQL database.
func startReplicas(t *testing.T, n int, dbURL string, extra ...string) []*server {
	t.Helper()
	var out []*server
	for range n {
		out = append(out, start(t, t.TempDir(), append([]string{
			"--store", "postgres", "--postgres-url", dbURL, "--replica-lease", replicaLease, "--ca-rotation-timeout", "2m",
		}, extra...)...))
	}
	return out
}

// handshakes runs mutual TLS handshakes between every pair of data planes
// (each identified by its SPIFFE id) until stop is called, which returns
// how many ran and every failure.
func handshakes(dps map[string]*sdstest.Live) (stop func() (int, []error)) {
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range dps {
			if !yield(id) {
				return
			}
		}
	})
	quit := make(chan struct{})
	var (
		mu       sync.Mutex
		n        int
		failures []error
		wg       sync.WaitGroup
	)
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			a, b := ids[i], ids[j]
			wg.Go(func() {
				k, f := sdstest.HandshakeLoop(dps[a], dps[b], a, b, quit)
				mu.Lock()
				n += k
				failures = append(failures, f...)
				mu.Unlock()
			})
		}
	}
	return func() (int, []error) {
		close(quit)
		wg.Wait()
		return n, failures
	}
}

// meshStatus reads GET /meshes/{mesh}'s status from s.
func meshStatus(t *testing.T, s *server, mesh string) (phase string, waitingReplicas []string) {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/meshes/" + mesh)
	require.NoError(t, err)
	defer resp.Body.Close()
	var m struct {
		Status struct {
			Phase           string   `json:"phase"`
			WaitingReplicas []string `json:"waitingReplicas"`
		} `json:"status"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return m.Status.Phase, m.Status.WaitingReplicas
}

// replicaID is the id a replica logged at start.
func replicaID(t *testing.T, s *server) string {
	t.Helper()
	var id string
	require.Eventually(t, func() bool {
		m := regexp.MustCompile(`sharing CA changes with the other replicas" replica=(\S+)`).FindStringSubmatch(s.logs.String())
		if m != nil {
			id = m[1]
		}
		return m != nil
	}, 10*time.Second, 10*time.Millisecond)
	return id
}

// allOn waits until every data plane holds a certificate of ca and trusts
// ca alone, and returns how long that took from since.
func allOn(t *testing.T, dps map[string]*sdstest.Live, cond func(*sdstest.Workload) bool, since time.Time) time.Duration {
	t.Helper()
	for id, dp := range dps {
		dp.WaitFor(id+" on the new CA alone", cond)
	}
	return time.Since(since)
}

// TestThreeReplicasChangeCAsAsOne runs three replicas on one PostgreSQL
// database with a data plane on each, handshaking with each other all the
// time: a provided CA replaced through one replica, then a switch to a
// builtin CA through another, break not one handshake.
func TestThreeReplicasChangeCAsAsOne(t *testing.T) {
	dbURL := pgtest.Start(t).NewDatabase(t)
	r := startReplicas(t, 3, dbURL)
	oldCA := pkitest.NewRootCA(t, "provided, old")
	r[0].mustCLI(t, caManifests("default", oldCA), "apply", "-f", "-")
	dps := map[string]*sdstest.Live{}
	for i, svc := range []string{"web", "backend", "api"} {
		dps[sdstest.SPIFFE("default", svc)] = follow(t, r[i], r[0], "default", svc+"-1", svc)
	}
	allOn(t, dps, sdstest.SignedBy(oldCA), time.Now())

	stop := handshakes(dps)
	newCA := pkitest.NewRootCA(t, "provided, new")
	start := time.Now()
	r[1].mustCLI(t, caManifests("default", newCA), "apply", "-f", "-")
	t.Logf("provided CA change across three replicas: every data plane on the new CA alone after %s", allOn(t, dps, sdstest.SignedBy(newCA), start))

	start = time.Now()
	r[2].mustCLI(t, `type: Mesh
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
	builtin := func(w *sdstest.Workload) bool {
		return w.Leaf.CheckSignatureFrom(newCA.Cert) != nil && !strings.Contains(string(w.BundlePEM), string(newCA.CertPEM))
	}
	t.Logf("switch to a builtin CA across three replicas: every data plane on it alone after %s", allOn(t, dps, builtin, start))
	time.Sleep(200 * time.Millisecond)
	n, failures := stop()
	require.Empty(t, failures, "no handshake between data planes of different replicas may fail")
	require.Greater(t, n, 10)
	for _, s := range r {
		phase, _ := meshStatus(t, s, "default")
		require.Equal(t, "steady", phase)
		require.Regexp(t, `(?m)^meshsds_cluster_replicas 3$`, s.scrape(t))
	}
}

// TestAReplicaKilledMidChange kills one of three replicas with SIGKILL while
// a CA change waits for a data plane on it: once its lease expires the
// change completes without it, no handshake between the other replicas'
// data planes fails, and its data plane, reconnecting to another replica,
// gets the new CA.
func TestAReplicaKilledMidChange(t *testing.T) {
	dbURL := pgtest.Start(t).NewDatabase(t)
	r := startReplicas(t, 3, dbURL)
	oldCA := pkitest.NewRootCA(t, "old")
	r[0].mustCLI(t, caManifests("default", oldCA), "apply", "-f", "-")
	dps := map[string]*sdstest.Live{
		sdstest.SPIFFE("default", "web"):     follow(t, r[0], r[0], "default", "web-1", "web"),
		sdstest.SPIFFE("default", "backend"): follow(t, r[1], r[0], "default", "backend-1", "backend"),
	}
	allOn(t, dps, sdstest.SignedBy(oldCA), time.Now())
	// A data plane on the third replica that never ACKs holds the change.
	tok := strings.TrimSpace(r[0].mustCLI(t, "", "generate", "dataplane-token", "--mesh", "default", "--name", "stuck-1", "--tag", "kuma.io/service=stuck"))
	stuck := sdstest.Follow(t, sdstest.Dial(t, r[2].sds, tok), "default.stuck-1", "identity_cert", "mesh_ca", false)
	stuck.WaitFor("a certificate", sdstest.SignedBy(oldCA))
	doomed := replicaID(t, r[2])

	stop := handshakes(dps)
	newCA := pkitest.NewRootCA(t, "new")
	r[0].mustCLI(t, caManifests("default", newCA), "apply", "-f", "-")
	require.Eventually(t, func() bool {
		phase, waiting := meshStatus(t, r[0], "default")
		return phase == "trust-new-ca" && slices.Equal(waiting, []string{doomed})
	}, 30*time.Second, 20*time.Millisecond, "the change waits for the third replica")

	killed := time.Now()
	r[2].kill(t)
	t.Logf("the change completed %s after the replica it waited for was killed (lease %s)",
		allOn(t, dps, sdstest.SignedBy(newCA), killed), replicaLease)
	time.Sleep(200 * time.Millisecond)
	n, failures := stop()
	require.Empty(t, failures)
	require.Greater(t, n, 10)

	// The killed replica's data plane reconnects to a live one.
	again := follow(t, r[1], r[0], "default", "stuck-1", "stuck").WaitFor("the new CA", sdstest.SignedBy(newCA))
	web, err := dps[sdstest.SPIFFE("default", "web")].Current()
	require.NoError(t, err)
	require.NoError(t, sdstest.Handshake(web, again, sdstest.SPIFFE("default", "web"), sdstest.SPIFFE("default", "stuck")))
}

var leaderLine = regexp.MustCompile(`(?m)^meshsds_cluster_leader 1$`)

// leaderOf returns the index of the replica that reports leading.
func leaderOf(t *testing.T, r []*server, skip int) int {
	t.Helper()
	found := -1
	require.Eventually(t, func() bool {
		found = -1
		for i, s := range r {
			if i != skip && leaderLine.MatchString(s.scrape(t)) {
				if found >= 0 {
					return false // two at once: wait for it to settle
				}
				found = i
			}
		}
		return found >= 0
	}, 30*time.Second, 50*time.Millisecond, "one replica leads")
	return found
}

// TestALeaderKilledIsReplaced kills the leader of three replicas serving a
// builtin mesh from their files: another takes over within the lease, and
// does the leader's work: a builtin mesh added to the files gets its CA
// generated, once.
func TestALeaderKilledIsReplaced(t *testing.T) {
	dbURL := pgtest.Start(t).NewDatabase(t)
	dir := t.TempDir()
	writeAtomic(t, dir+"/one.yaml", []byte(builtinMeshNamed("one")))
	var r []*server
	for range 3 {
		r = append(r, start(t, dir, "--store", "postgres", "--postgres-url", dbURL, "--replica-lease", replicaLease))
	}
	first := leaderOf(t, r, -1)
	dp := follow(t, r[(first+1)%3], r[0], "one", "web-1", "web").WaitFor("a certificate", func(*sdstest.Workload) bool { return true })
	require.NotNil(t, dp)

	killed := time.Now()
	r[first].kill(t)
	next := leaderOf(t, r, first)
	t.Logf("replica %d leads %s after leader %d was killed (lease %s)", next, time.Since(killed).Round(time.Millisecond), first, replicaLease)
	require.Contains(t, r[next].logs.String(), "leading the replicas")

	writeAtomic(t, dir+"/two.yaml", []byte(builtinMeshNamed("two")))
	for i, s := range r {
		if i == first {
			continue
		}
		follow(t, s, r[next], "two", fmt.Sprintf("web-%d", i), "web").WaitFor("a certificate of the generated CA", func(*sdstest.Workload) bool { return true })
	}
	out := r[next].mustCLI(t, "", "get", "secrets", "-m", "two")
	require.Equal(t, 1, strings.Count(out, "ca-builtin-cert-"), out)
	generated := 0
	for _, s := range r {
		generated += strings.Count(s.logs.String(), "generated the builtin CA")
	}
	require.Equal(t, 2, generated, "each builtin CA is generated once, by the leader")
}

func builtinMeshNamed(name string) string {
	return "type: Mesh\nname: " + name + "\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n"
}

// propagation measures, as a test log, how soon a write through one
// replica reaches a data plane on another.
func TestPropagationAcrossReplicas(t *testing.T) {
	dbURL := pgtest.Start(t).NewDatabase(t)
	r := startReplicas(t, 2, dbURL)
	ca := pkitest.NewRootCA(t, "first")
	r[0].mustCLI(t, caManifests("default", ca), "apply", "-f", "-")
	dp := follow(t, r[1], r[0], "default", "web-1", "web")
	dp.WaitFor("a certificate", sdstest.SignedBy(ca))
	var took []time.Duration
	for i := range 5 {
		next := pkitest.NewRootCA(t, fmt.Sprintf("ca %d", i))
		start := time.Now()
		// A trust bundle change alone (the same key re-signed would do;
		// a new CA is simplest): the first push to the data plane on the
		// other replica is what propagation is.
		pushes := dp.Pushes()
		r[0].mustCLI(t, caManifests("default", next), "apply", "-f", "-")
		require.Eventually(t, func() bool { return dp.Pushes() > pushes }, 30*time.Second, time.Millisecond)
		took = append(took, time.Since(start))
		dp.WaitFor("the new CA", sdstest.SignedBy(next))
	}
	slices.Sort(took)
	t.Logf("write through one replica to the first push on another's data plane (CLI included): min %s, max %s", took[0], took[len(took)-1])
	require.Less(t, took[len(took)-1], 5*time.Second, "well within the 5 s poll: the write was notified")
}

// TestKubernetesThreeReplicas runs three replicas on one API server, as
// their ServiceAccount: a CA change by updating its Secrets breaks no
// handshake between their data planes; a bad Secret gets one Event, from
// the leader, not one per replica; a killed leader is replaced within the
// lease.
func TestKubernetesThreeReplicas(t *testing.T) {
	e := newKubeEnv(t)
	ctx := context.Background()
	oldCA := pkitest.NewRootCA(t, "kubernetes, old")
	e.putCA(t, "ca", "default", oldCA)
	e.cluster.Apply(filepath.Join(testenv.ModuleRoot(t), "examples", "kubernetes", "mesh.yaml"))
	var r []*server
	for range 3 {
		r = append(r, e.startKube(t, "--replica-lease", replicaLease))
	}
	dps := map[string]*sdstest.Live{}
	for i, svc := range []string{"web", "backend", "api"} {
		dps[sdstest.SPIFFE("default", svc)] = follow(t, r[i], r[0], "default", svc+"-1", svc)
	}
	allOn(t, dps, sdstest.SignedBy(oldCA), time.Now())
	require.Eventually(t, func() bool {
		return regexp.MustCompile(`(?m)^meshsds_cluster_replicas 3$`).MatchString(r[0].scrape(t))
	}, 30*time.Second, 50*time.Millisecond, "the replicas see each other")

	stop := handshakes(dps)
	newCA := pkitest.NewRootCA(t, "kubernetes, new")
	start := time.Now()
	e.putCA(t, "ca", "default", newCA)
	t.Logf("CA change across three replicas on Kubernetes: every data plane on the new CA alone after %s", allOn(t, dps, sdstest.SignedBy(newCA), start))

	// Then to a builtin CA, which the leader generates as Secrets.
	mesh, err := e.dynamic.Resource(kubeMeshes).Get(ctx, "default", metav1.GetOptions{})
	require.NoError(t, err)
	backends, _, _ := unstructured.NestedSlice(mesh.Object, "spec", "mtls", "backends")
	backends = append(backends, map[string]any{"name": "ca-2", "type": "builtin"})
	require.NoError(t, unstructured.SetNestedSlice(mesh.Object, backends, "spec", "mtls", "backends"))
	require.NoError(t, unstructured.SetNestedField(mesh.Object, "ca-2", "spec", "mtls", "enabledBackend"))
	start = time.Now()
	_, err = e.dynamic.Resource(kubeMeshes).Update(ctx, mesh, metav1.UpdateOptions{})
	require.NoError(t, err)
	builtin := func(w *sdstest.Workload) bool {
		return w.Leaf.CheckSignatureFrom(newCA.Cert) != nil && !strings.Contains(string(w.BundlePEM), string(newCA.CertPEM))
	}
	t.Logf("switch to a builtin CA across three replicas on Kubernetes: every data plane on it alone after %s", allOn(t, dps, builtin, start))
	time.Sleep(200 * time.Millisecond)
	n, failures := stop()
	require.Empty(t, failures, "no handshake between data planes of different replicas may fail")
	require.Greater(t, n, 10)

	generated := 0
	for _, s := range r {
		generated += strings.Count(s.logs.String(), "generated the builtin CA")
	}
	require.Equal(t, 1, generated, "the builtin CA is generated once, by the leader")

	// A bad Secret: one Event, however many replicas read it.
	_, err = e.client.CoreV1().Secrets(kubeNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "broken", Namespace: kubeNS, Labels: map[string]string{"kuma.io/mesh": "default"}},
		Type:       "system.kuma.io/secret",
		Data:       map[string][]byte{"wrong-key": []byte("x")},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	events := func() int32 {
		list, err := e.client.CoreV1().Events(kubeNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=broken,reason=InvalidSecret"})
		require.NoError(t, err)
		var n int32
		for _, ev := range list.Items {
			n += max(ev.Count, 1)
		}
		return n
	}
	require.Eventually(t, func() bool { return events() > 0 }, 30*time.Second, 100*time.Millisecond)
	time.Sleep(2 * time.Second) // the other replicas would have written theirs by now
	require.EqualValues(t, 1, events(), "one Event for one bad object")
	for _, s := range r {
		require.Contains(t, s.logs.String(), "broken", "every replica still logs it")
	}

	first := leaderOf(t, r, -1)
	killed := time.Now()
	r[first].kill(t)
	next := leaderOf(t, r, first)
	t.Logf("replica %d leads %s after leader %d was killed (lease %s)", next, time.Since(killed).Round(time.Millisecond), first, replicaLease)
}
