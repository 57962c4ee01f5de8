package kube

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshsds/meshsds/internal/testing/kubetest"
	"github.com/meshsds/meshsds/internal/testing/testenv"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

const testNS = "kuma-system"

// testCluster is a real API server with the Mesh CRD of examples/kubernetes
// (unless noCRD) and the namespace testNS, and direct clients.
type testCluster struct {
	*kubetest.Cluster
	client  kubernetes.Interface
	dynamic dynamic.Interface
}

func startCluster(t *testing.T, opts kubetest.Options, noCRD bool) *testCluster {
	t.Helper()
	c := kubetest.Start(t, opts)
	if !noCRD {
		applyCRD(t, c)
	}
	c.CreateNamespace(testNS)
	return &testCluster{Cluster: c, client: c.Client(), dynamic: c.Dynamic()}
}

func applyCRD(t *testing.T, c *kubetest.Cluster) {
	t.Helper()
	c.Apply(filepath.Join(testenv.ModuleRoot(t), "examples", "kubernetes", "crd.yaml"))
}

// newSource returns a Source that reaches the API server through the
// cluster's proxy, as the system under test.
func (c *testCluster) newSource(t *testing.T, reg prometheus.Registerer, log *logBuffer) *Source {
	t.Helper()
	cfg := c.Config()
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	src, err := New(Config{Client: client, Dynamic: dyn, Namespace: testNS, Logger: log.logger(), Registerer: reg})
	require.NoError(t, err)
	return src
}

func (c *testCluster) createSecret(t *testing.T, s *corev1.Secret) *corev1.Secret {
	t.Helper()
	out, err := c.client.CoreV1().Secrets(s.Namespace).Create(context.Background(), s, metav1.CreateOptions{})
	require.NoError(t, err)
	return out
}

// updateSecret reads the Secret name, applies change and writes it back.
func (c *testCluster) updateSecret(t *testing.T, name string, change func(*corev1.Secret)) *corev1.Secret {
	t.Helper()
	s, err := c.client.CoreV1().Secrets(testNS).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	change(s)
	out, err := c.client.CoreV1().Secrets(testNS).Update(context.Background(), s, metav1.UpdateOptions{})
	require.NoError(t, err)
	return out
}

func (c *testCluster) deleteSecret(t *testing.T, name string) {
	t.Helper()
	require.NoError(t, c.client.CoreV1().Secrets(testNS).Delete(context.Background(), name, metav1.DeleteOptions{}))
}

// events returns the messages of the Events with reason about the object
// name in namespace ns.
func (c *testCluster) events(t *testing.T, ns, name, reason string) []string {
	t.Helper()
	list, err := c.client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": name, "reason": reason}.String(),
	})
	require.NoError(t, err)
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Type+" "+e.InvolvedObject.Kind+": "+e.Message)
	}
	return out
}

// secretKeys lists a view's secrets as sorted "mesh/name".
func secretKeys(view meshconfig.Resources) []string {
	var out []string
	for k := range view.Secrets {
		out = append(out, k.Mesh+"/"+k.Name)
	}
	sort.Strings(out)
	return out
}

// TestSourceFollowsTheAPIServer runs the source against a real API server:
// it is not synced while the Mesh CRD is missing, reads only Kuma Secrets,
// follows updates, label moves and deletions, keeps the last good version
// of bad objects and reports them as Events, and creates global secrets
// once for every caller.
func TestSourceFollowsTheAPIServer(t *testing.T) {
	c := startCluster(t, kubetest.Options{}, true)
	ctx := context.Background()
	ca := pkitest.NewRootCA(t, "m1 CA")

	c.createSecret(t, kumaSecret(testNS, "ca-cert", "m1", ca.CertPEM))
	c.createSecret(t, kumaSecret(testNS, "ca-key", "m1", ca.KeyPEM))
	c.createSecret(t, kumaSecret(testNS, "no-label", "", []byte("d")))
	opaque := kumaSecret(testNS, "unrelated", "", []byte("x"))
	opaque.Type = corev1.SecretTypeOpaque
	c.createSecret(t, opaque)
	c.CreateNamespace("elsewhere")
	c.createSecret(t, kumaSecret("elsewhere", "foreign", "m1", []byte("x")))

	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	src := c.newSource(t, reg, logs)
	v := newViews()
	run(t, src, v)

	// Without the CRD the Mesh informer cannot list: no view, and the
	// failure is counted and explained.
	require.Eventually(t, func() bool { return testutil.ToFloat64(src.metrics.SyncErrors) > 0 }, 60*time.Second, 50*time.Millisecond)
	require.Contains(t, logs.String(), "is the kuma.io Mesh CustomResourceDefinition installed?")
	v.expectNone(t, 500*time.Millisecond)
	_, synced := src.Current()
	require.False(t, synced)

	applyCRD(t, c.Cluster)
	_, err := c.dynamic.Resource(MeshGVR).Create(ctx, providedMesh("m1", "ca-cert", "ca-key"), metav1.CreateOptions{})
	require.NoError(t, err)
	view := v.waitFor(t, "mesh m1", func(r meshconfig.Resources) bool { return r.Meshes["m1"] != nil })
	require.Equal(t, []string{"default/no-label", "m1/ca-cert", "m1/ca-key"}, secretKeys(view))
	require.True(t, hasSecret(view, "m1", "ca-cert", ca.CertPEM))
	_, synced = src.Current()
	require.True(t, synced)

	// Only Kuma Secrets of the namespace were ever listed into the cache.
	src.informersMu.Lock()
	var cached []string
	for _, inf := range src.informers[:2] {
		cached = append(cached, inf.GetStore().ListKeys()...)
	}
	src.informersMu.Unlock()
	sort.Strings(cached)
	require.Equal(t, []string{testNS + "/ca-cert", testNS + "/ca-key", testNS + "/no-label"}, cached)

	// An update of the payload.
	ca2 := pkitest.NewRootCA(t, "m1 CA 2")
	c.updateSecret(t, "ca-cert", func(s *corev1.Secret) { s.Data[DataKey] = ca2.CertPEM })
	v.waitFor(t, "the new ca-cert", func(r meshconfig.Resources) bool { return hasSecret(r, "m1", "ca-cert", ca2.CertPEM) })

	// Changing the label moves the secret: gone from the old mesh in the
	// same view that adds it to the new one.
	c.updateSecret(t, "no-label", func(s *corev1.Secret) { s.Labels = map[string]string{MeshLabel: "m2"} })
	view = v.waitFor(t, "no-label in m2", func(r meshconfig.Resources) bool { return hasSecret(r, "m2", "no-label", []byte("d")) })
	require.NotContains(t, secretKeys(view), "default/no-label")

	// A bad Secret keeps its last good version and is reported once.
	before := testutil.ToFloat64(src.metrics.SyncErrors)
	c.updateSecret(t, "ca-key", func(s *corev1.Secret) { s.Data = map[string][]byte{"tls.key": ca2.KeyPEM} })
	require.Eventually(t, func() bool { return len(c.events(t, testNS, "ca-key", ReasonInvalidSecret)) > 0 }, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, []string{`Warning Secret: data: unexpected key "tls.key": only "value" is allowed; data.value: cannot be empty; meshsds keeps serving its last good version`},
		c.events(t, testNS, "ca-key", ReasonInvalidSecret))
	require.Equal(t, before+1, testutil.ToFloat64(src.metrics.SyncErrors))
	cur, _ := src.Current()
	require.True(t, hasSecret(cur, "m1", "ca-key", ca.KeyPEM), "the last good ca-key is kept")
	c.updateSecret(t, "ca-key", func(s *corev1.Secret) { s.Data = map[string][]byte{DataKey: ca2.KeyPEM} })
	v.waitFor(t, "the fixed ca-key", func(r meshconfig.Resources) bool { return hasSecret(r, "m1", "ca-key", ca2.KeyPEM) })

	// A bad Mesh keeps its last good version; its Event is in "default",
	// where Kubernetes keeps Events about cluster-scoped objects.
	m, err := c.dynamic.Resource(MeshGVR).Get(ctx, "m1", metav1.GetOptions{})
	require.NoError(t, err)
	m.Object["spec"].(map[string]any)["mtls"].(map[string]any)["enabledBackend"] = "nope"
	_, err = c.dynamic.Resource(MeshGVR).Update(ctx, m, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(c.events(t, metav1.NamespaceDefault, "m1", ReasonInvalidMesh)) > 0 }, 30*time.Second, 50*time.Millisecond)
	require.Contains(t, c.events(t, metav1.NamespaceDefault, "m1", ReasonInvalidMesh)[0], `Warning Mesh: spec.mtls.enabledBackend: has to be set to one of the backends of the mesh: backend "nope" is not defined`)
	cur, _ = src.Current()
	require.Equal(t, "ca-1", cur.Meshes["m1"].MTLS.EnabledBackend)

	// Deletions.
	c.deleteSecret(t, "no-label")
	v.waitFor(t, "no-label deleted", func(r meshconfig.Resources) bool { return len(r.Secrets) == 2 })
	require.NoError(t, c.dynamic.Resource(MeshGVR).Delete(ctx, "m1", metav1.DeleteOptions{}))
	v.waitFor(t, "m1 deleted", func(r meshconfig.Resources) bool { return len(r.Meshes) == 0 })

	// Global secrets: created once, whoever asks first; the others read it.
	var (
		wg      sync.WaitGroup
		results = make([][]byte, 4)
		errs    = make([]error, 4)
	)
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = src.GetOrCreateGlobalSecret(ctx, "signing-key", func() ([]byte, error) {
				return fmt.Appendf(nil, "key-%d", i), nil
			})
		})
	}
	wg.Wait()
	for i := range results {
		require.NoError(t, errs[i])
		require.Equal(t, results[0], results[i], "every caller gets the same key")
	}
	again, err := src.GetOrCreateGlobalSecret(ctx, "signing-key", func() ([]byte, error) { return nil, errGenerate })
	require.NoError(t, err)
	require.Equal(t, results[0], again)
	v.waitFor(t, "the global secret", func(r meshconfig.Resources) bool {
		s := r.Secrets[meshconfig.SecretKey{Name: "signing-key"}]
		return s != nil && s.Global
	})
	_, err = src.GetOrCreateGlobalSecret(ctx, "ca-cert", func() ([]byte, error) { return nil, errGenerate })
	require.ErrorContains(t, err, `has type "system.kuma.io/secret", want "system.kuma.io/global-secret"; it is not replaced`)

	// A builtin backend's CA: generated once into two Kuma Secrets owned
	// by the Mesh, however many replicas ask at once.
	builtin := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "metadata": map[string]any{"name": "gen"},
		"spec": map[string]any{"mtls": map[string]any{"backends": []any{map[string]any{"name": "ca-1", "type": "builtin"}}}},
	}}
	created, err := c.dynamic.Resource(MeshGVR).Create(ctx, builtin, metav1.CreateOptions{})
	require.NoError(t, err)
	genMesh := v.waitFor(t, "mesh gen", func(r meshconfig.Resources) bool { return r.Meshes["gen"] != nil }).Meshes["gen"]
	for range 3 {
		wg.Go(func() { require.NoError(t, src.ProvisionBuiltinCA(ctx, "gen", genMesh.MTLS.Backends[0])) })
	}
	wg.Wait()
	certName, keyName := meshconfig.BuiltinSecretNames("gen", "ca-1")
	view = v.waitFor(t, "the builtin CA", func(r meshconfig.Resources) bool {
		_, hasCert := r.Secrets[meshconfig.SecretKey{Mesh: "gen", Name: certName}]
		_, hasKey := r.Secrets[meshconfig.SecretKey{Mesh: "gen", Name: keyName}]
		return hasCert && hasKey
	})
	rm, err := meshconfig.ResolveMesh(view.Meshes["gen"], view.Secrets, time.Now(), meshconfig.ResolveOptions{})
	require.NoError(t, err, "the generated certificate matches the generated key")
	require.NotNil(t, rm.CA)
	keySecret, err := c.client.CoreV1().Secrets(testNS).Get(ctx, keyName, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "gen", keySecret.Labels[MeshLabel])
	require.Len(t, keySecret.OwnerReferences, 1)
	require.Equal(t, created.GetUID(), keySecret.OwnerReferences[0].UID)

	for _, secret := range [][]byte{ca.KeyPEM, ca2.KeyPEM, results[0], keySecret.Data[DataKey]} {
		require.NotContains(t, logs.String(), string(secret), "secret material must never be logged")
	}
	require.NotContains(t, logs.String(), "PRIVATE KEY")
}

// TestSourceRecoversFromOutages cuts the source off the API server while
// objects change and etcd is compacted (so that resuming the watch gets 410
// Gone), then restarts the API server: the last known view is served
// throughout, and afterwards the view is exactly what the API server holds.
func TestSourceRecoversFromOutages(t *testing.T) {
	c := startCluster(t, kubetest.Options{DisableWatchCache: true, CompactionInterval: time.Second}, false)
	ctx := context.Background()
	_, err := c.dynamic.Resource(MeshGVR).Create(ctx, providedMesh("m1", "ca-cert", "ca-key"), metav1.CreateOptions{})
	require.NoError(t, err)
	c.createSecret(t, kumaSecret(testNS, "ca-cert", "m1", []byte("cert-1")))
	c.createSecret(t, kumaSecret(testNS, "ca-key", "m1", []byte("key-1")))
	c.createSecret(t, kumaSecret(testNS, "doomed", "m1", []byte("d")))
	c.createSecret(t, kumaSecret(testNS, "moving", "m1", []byte("m")))

	logs := &logBuffer{}
	src := c.newSource(t, prometheus.NewRegistry(), logs)
	v := newViews()
	run(t, src, v)
	initial := v.waitFor(t, "the initial view", func(r meshconfig.Resources) bool { return len(r.Secrets) == 4 })

	// Partition: the source loses its connections; meanwhile everything
	// changes and the old revisions are compacted away. The source never
	// saw the first change, so its resource version is older than that
	// change's: once a watch from there gets 410 Gone, so does the
	// source's.
	c.Partition()
	firstUnseen := c.updateSecret(t, "ca-cert", func(s *corev1.Secret) { s.Data[DataKey] = []byte("cert-2") })
	c.deleteSecret(t, "doomed")
	c.createSecret(t, kumaSecret(testNS, "newcomer", "m1", []byte("n")))
	c.updateSecret(t, "moving", func(s *corev1.Secret) { s.Labels[MeshLabel] = "m2" })
	_, err = c.dynamic.Resource(MeshGVR).Create(ctx, providedMesh("m2", "moving", "moving"), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		w, err := c.client.CoreV1().Secrets(testNS).Watch(ctx, metav1.ListOptions{ResourceVersion: firstUnseen.ResourceVersion})
		if err != nil {
			return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
		}
		defer w.Stop()
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Error {
				return false
			}
			err := apierrors.FromObject(ev.Object)
			return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
		case <-time.After(5 * time.Second):
			return false
		}
	}, 60*time.Second, 200*time.Millisecond, "etcd was not compacted past the changes made during the partition")

	// During the outage the last known view is still the current one.
	cur, ok := src.Current()
	require.True(t, ok)
	require.True(t, initial.Equal(cur))

	c.Heal()
	want := []string{"m1/ca-cert", "m1/ca-key", "m1/newcomer", "m2/moving"}
	view := v.waitFor(t, "the changes made during the partition", func(r meshconfig.Resources) bool {
		return strings.Join(secretKeys(r), ",") == strings.Join(want, ",") && len(r.Meshes) == 2
	})
	require.True(t, hasSecret(view, "m1", "ca-cert", []byte("cert-2")))

	// An API server restart: the view survives it unchanged, and changes
	// after it arrive.
	c.StopAPIServer()
	cur, _ = src.Current()
	require.True(t, view.Equal(cur))
	c.StartAPIServer()
	c.updateSecret(t, "ca-cert", func(s *corev1.Secret) { s.Data[DataKey] = []byte("cert-3") })
	c.deleteSecret(t, "newcomer")
	view = v.waitFor(t, "the changes after the restart", func(r meshconfig.Resources) bool {
		return hasSecret(r, "m1", "ca-cert", []byte("cert-3")) && len(r.Secrets) == 3
	})
	require.Equal(t, []string{"m1/ca-cert", "m1/ca-key", "m2/moving"}, secretKeys(view))
	require.Len(t, view.Meshes, 2)
}
