package e2e

import (
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshsds/meshsds/internal/testing/kubetest"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/internal/testing/testenv"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds/token"
)

// kubeNS is the control plane's namespace of examples/kubernetes.
const kubeNS = "kuma-system"

var kubeMeshes = schema.GroupVersionResource{Group: "kuma.io", Version: "v1alpha1", Resource: "meshes"}

// kubeEnv is a real API server set up with examples/kubernetes (namespace,
// Mesh CRD, RBAC), and the test's own (admin, direct) clients.
type kubeEnv struct {
	cluster *kubetest.Cluster
	client  kubernetes.Interface
	dynamic dynamic.Interface
	// kubeconfig makes meshsds act as its ServiceAccount, so that the RBAC
	// of examples/kubernetes is what it gets.
	kubeconfig string
}

func newKubeEnv(t *testing.T) *kubeEnv {
	t.Helper()
	c := kubetest.Start(t, kubetest.Options{})
	examples := filepath.Join(testenv.ModuleRoot(t), "examples", "kubernetes")
	// Everything of the example but the webhook, registered by the test
	// once meshsds serves it. The Deployment is only stored: nothing runs
	// pods here.
	for _, f := range []string{"namespace.yaml", "crd.yaml", "rbac.yaml", "service.yaml", "deployment.yaml"} {
		c.Apply(filepath.Join(examples, f))
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	c.WriteKubeconfig(kc, "system:serviceaccount:"+kubeNS+":meshsds")
	return &kubeEnv{cluster: c, client: c.Client(), dynamic: c.Dynamic(), kubeconfig: kc}
}

// startKube runs meshsds in Kubernetes mode against env.
func (e *kubeEnv) startKube(t *testing.T, extra ...string) *server {
	t.Helper()
	return start(t, t.TempDir(), append([]string{"--kubernetes", "--kubeconfig", e.kubeconfig, "--namespace", kubeNS}, extra...)...)
}

// putSecret creates or replaces the Kuma Secret name of mesh.
func (e *kubeEnv) putSecret(t *testing.T, name, mesh string, data []byte) {
	t.Helper()
	ctx := context.Background()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: kubeNS, Labels: map[string]string{"kuma.io/mesh": mesh}},
		Type:       "system.kuma.io/secret",
		Data:       map[string][]byte{"value": data},
	}
	old, err := e.client.CoreV1().Secrets(kubeNS).Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = old.ResourceVersion
		_, err = e.client.CoreV1().Secrets(kubeNS).Update(ctx, s, metav1.UpdateOptions{})
	} else {
		_, err = e.client.CoreV1().Secrets(kubeNS).Create(ctx, s, metav1.CreateOptions{})
	}
	require.NoError(t, err)
}

// putCA stores ca as the Secrets name-cert and name-key of mesh.
func (e *kubeEnv) putCA(t *testing.T, name, mesh string, ca *pki.KeyPair) {
	t.Helper()
	e.putSecret(t, name+"-cert", mesh, ca.CertPEM)
	e.putSecret(t, name+"-key", mesh, ca.KeyPEM)
}

// meshObject is a Mesh with one provided backend "ca-1" using the Secrets
// cert and key.
func meshObject(name, cert, key string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"mtls": map[string]any{"backends": []any{map[string]any{
			"name": "ca-1", "type": "provided",
			"config": map[string]any{"cert": map[string]any{"secret": cert}, "key": map[string]any{"secret": key}},
		}}}},
	}}
}

// registerWebhook registers examples/kubernetes/webhook.yaml with the API
// server, pointed at url and trusting caPEM instead of the in-cluster
// Service.
func (e *kubeEnv) registerWebhook(t *testing.T, url string, caPEM []byte) {
	t.Helper()
	objs := kubetest.DecodeManifest(t, mustRead(t, filepath.Join(testenv.ModuleRoot(t), "examples", "kubernetes", "webhook.yaml")))
	require.Len(t, objs, 1)
	webhooks, _, err := unstructured.NestedSlice(objs[0].Object, "webhooks")
	require.NoError(t, err)
	for _, w := range webhooks {
		w.(map[string]any)["clientConfig"] = map[string]any{"url": url, "caBundle": base64.StdEncoding.EncodeToString(caPEM)}
	}
	require.NoError(t, unstructured.SetNestedSlice(objs[0].Object, webhooks, "webhooks"))
	e.cluster.ApplyObject(objs[0])
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// signedBy returns a WaitFor condition: the workload certificate is signed
// by ca.
func signedBy(ca *pki.KeyPair) func(*sdstest.Workload) bool {
	return func(w *sdstest.Workload) bool { return w.Leaf.CheckSignatureFrom(ca.Cert) == nil }
}

// TestKubernetesMode runs meshsds against a real API server as its
// ServiceAccount with the example RBAC: data planes get certificates from
// a Mesh and Secrets created with client-go and complete TLS handshakes; a
// CA rotation, a secret moved between meshes by its label and a deletion
// reach them; an API server restart changes nothing for them; two replicas
// share one token signing key; bad objects are reported as Events, and
// once the example webhook is registered, the API server refuses them.
func TestKubernetesMode(t *testing.T) {
	e := newKubeEnv(t)
	ctx := context.Background()

	// The Mesh of examples/kubernetes and its CA, created with client-go.
	ca1 := pkitest.NewRootCA(t, "default CA 1")
	e.putCA(t, "ca", "default", ca1)
	e.cluster.Apply(filepath.Join(testenv.ModuleRoot(t), "examples", "kubernetes", "mesh.yaml"))

	// The webhook's certificate as examples/kubernetes/README.md makes it:
	// self-signed, so it is its own caBundle.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	out, err := exec.Command(binary, "generate", "tls-certificate", "--type", "server", "--hostname", "127.0.0.1",
		"--cert-file", certFile, "--key-file", keyFile).CombinedOutput()
	require.NoError(t, err, string(out))
	whAddr := freeAddr(t)
	a := e.startKube(t, "--webhook-address", whAddr, "--webhook-tls-cert", certFile, "--webhook-tls-key", keyFile)

	// The token signing key is a global secret in the namespace.
	keySecret, err := e.client.CoreV1().Secrets(kubeNS).Get(ctx, "dataplane-token-signing-key", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, corev1.SecretType("system.kuma.io/global-secret"), keySecret.Type)
	_, err = token.ParseSigningKey(keySecret.Data["value"])
	require.NoError(t, err)

	web := follow(t, a, a, "default", "web-1", "web")
	backend := follow(t, a, a, "default", "backend-1", "backend")
	webHeld := web.WaitFor("a certificate from CA 1", signedBy(ca1))
	backendHeld := backend.WaitFor("a certificate from CA 1", signedBy(ca1))
	require.NoError(t, sdstest.Handshake(backendHeld, webHeld, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("default", "web")))

	// A second replica: it finds the same signing key (tokens of one are
	// accepted by the other) and serves the same mesh.
	b := e.startKube(t)
	onB := follow(t, b, a, "default", "web-2", "web").WaitFor("a certificate from CA 1 on the second replica", signedBy(ca1))
	require.NoError(t, sdstest.Handshake(webHeld, onB, sdstest.SPIFFE("default", "web"), sdstest.SPIFFE("default", "web")))

	// Rotate the CA by updating the Secrets: the push reaches both data
	// planes, which trust each other again.
	ca2 := pkitest.NewRootCA(t, "default CA 2")
	e.putCA(t, "ca", "default", ca2)
	webHeld = web.WaitFor("a certificate from CA 2", signedBy(ca2))
	backendHeld = backend.WaitFor("a certificate from CA 2", signedBy(ca2))
	require.NoError(t, sdstest.Handshake(backendHeld, webHeld, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("default", "web")))

	// Mesh "payments" uses Secrets that are in mesh "staging": it has no
	// CA until their label moves them.
	caP := pkitest.NewRootCA(t, "payments CA")
	e.putCA(t, "pay", "staging", caP)
	_, err = e.dynamic.Resource(kubeMeshes).Create(ctx, meshObject("payments", "pay-cert", "pay-key"), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return strings.Contains(a.scrape(t), `meshsds_mesh_resolution_failing{mesh="payments"} 1`)
	}, 30*time.Second, 100*time.Millisecond)
	pay := follow(t, a, a, "payments", "api-1", "api")
	for _, name := range []string{"pay-cert", "pay-key"} {
		s, err := e.client.CoreV1().Secrets(kubeNS).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		s.Labels["kuma.io/mesh"] = "payments"
		_, err = e.client.CoreV1().Secrets(kubeNS).Update(ctx, s, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	pay.WaitFor("a certificate from the moved CA", signedBy(caP))
	require.Error(t, sdstest.Handshake(webHeld, mustCurrent(t, pay), sdstest.SPIFFE("default", "web"), sdstest.SPIFFE("payments", "api")),
		"a data plane of another mesh must not be trusted")

	// Deleting a Secret a Mesh uses breaks that Mesh (visible in metrics);
	// its data planes keep their last good certificate.
	require.NoError(t, e.client.CoreV1().Secrets(kubeNS).Delete(ctx, "pay-key", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		return strings.Contains(a.scrape(t), `meshsds_mesh_resolution_failing{mesh="payments"} 1`)
	}, 30*time.Second, 100*time.Millisecond)
	require.Contains(t, a.logs.String(), "mesh cannot be resolved")

	// A bad Mesh is reported where Kubernetes users look: an Event, which
	// meshsds may write as its ServiceAccount (in "default", for a
	// cluster-scoped object).
	bad := meshObject("broken", "x", "y")
	bad.Object["spec"].(map[string]any)["mtls"].(map[string]any)["enabledBackend"] = "nope"
	_, err = e.dynamic.Resource(kubeMeshes).Create(ctx, bad, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		list, err := e.client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
			FieldSelector: fields.Set{"involvedObject.name": "broken", "reason": "InvalidMesh"}.String(),
		})
		// One Event per replica.
		return err == nil && len(list.Items) > 0 && strings.Contains(list.Items[0].Message, `backend "nope" is not defined`)
	}, 30*time.Second, 100*time.Millisecond)

	// The API server goes away: connected data planes keep their secrets,
	// meshsds stays ready, and a data plane that connects meanwhile is
	// served from the last known state.
	e.cluster.StopAPIServer()
	resp, err := http.Get("http://" + a.metrics + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	late := follow(t, a, a, "default", "late-1", "late").WaitFor("a certificate from CA 2 during the outage", signedBy(ca2))
	require.NoError(t, sdstest.Handshake(backendHeld, late, sdstest.SPIFFE("default", "backend"), sdstest.SPIFFE("default", "late")))
	e.cluster.StartAPIServer()

	// After the restart, changes are followed again.
	ca3 := pkitest.NewRootCA(t, "default CA 3")
	e.putCA(t, "ca", "default", ca3)
	web.WaitFor("a certificate from CA 3 after the restart", signedBy(ca3))
	backend.WaitFor("a certificate from CA 3 after the restart", signedBy(ca3))

	// The webhook of examples/kubernetes, served by meshsds: the API
	// server itself now refuses what meshsds would.
	e.registerWebhook(t, "https://"+whAddr+"/validate", mustRead(t, certFile))
	denied := func(err error, want string) bool {
		return err != nil && strings.Contains(err.Error(), "denied the request") && strings.Contains(err.Error(), want)
	}
	bad2 := meshObject("broken-2", "x", "y")
	bad2.Object["spec"].(map[string]any)["mtls"].(map[string]any)["enabledBackend"] = "nope"
	require.Eventually(t, func() bool { // the API server picks the configuration up asynchronously
		_, err := e.dynamic.Resource(kubeMeshes).Create(ctx, bad2, metav1.CreateOptions{})
		return denied(err, `spec.mtls.enabledBackend: has to be set to one of the backends of the mesh: backend "nope" is not defined`)
	}, 30*time.Second, 200*time.Millisecond)

	// A Mesh before its Secrets: refused, in the admin API's words.
	_, err = e.dynamic.Resource(kubeMeshes).Create(ctx, meshObject("later", "later-cert", "later-key"), metav1.CreateOptions{})
	require.True(t, denied(err, `spec.mtls.backends[0].config.cert.secret: secret "later-cert" of backend "ca-1" does not exist in mesh "later": create the Secret first`), "got %v", err)

	err = e.client.CoreV1().Secrets(kubeNS).Delete(ctx, "ca-key", metav1.DeleteOptions{})
	require.True(t, denied(err, `secret "ca-key" of mesh "default" is in use by Mesh "default", backend "ca-1"`), "got %v", err)

	s, err := e.client.CoreV1().Secrets(kubeNS).Get(ctx, "ca-cert", metav1.GetOptions{})
	require.NoError(t, err)
	s.Labels["kuma.io/mesh"] = "payments"
	_, err = e.client.CoreV1().Secrets(kubeNS).Update(ctx, s, metav1.UpdateOptions{})
	require.True(t, denied(err, `the kuma.io/mesh label cannot be changed (from "default" to "payments")`), "got %v", err)

	_, err = e.client.CoreV1().Secrets(kubeNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "empty", Namespace: kubeNS},
		Type:       "system.kuma.io/secret",
		Data:       map[string][]byte{"tls.crt": []byte("x")},
	}, metav1.CreateOptions{})
	require.True(t, denied(err, `data: unexpected key "tls.crt": only "value" is allowed`), "got %v", err)

	// Other Secrets are not the webhook's business.
	_, err = e.client.CoreV1().Secrets(kubeNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Namespace: kubeNS},
		Data:       map[string][]byte{"tls.crt": []byte("x")},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	for _, srv := range []*server{a, b} {
		for _, ca := range []*pki.KeyPair{ca1, ca2, ca3, caP} {
			require.NotContains(t, srv.logs.String(), string(ca.KeyPEM))
		}
		require.NotContains(t, srv.logs.String(), "PRIVATE KEY", "key material must never be logged")
	}
}

func mustCurrent(t *testing.T, l *sdstest.Live) *sdstest.Workload {
	t.Helper()
	w, err := l.Current()
	require.NoError(t, err)
	require.NotNil(t, w)
	return w
}

// TestKubernetesExamples checks what the API server does not: the example
// Deployment runs meshsds with flags it has, hardened, with probes on
// /healthz and /readyz; RBAC grants no more than it says; kustomization.yaml
// lists every manifest but the example Mesh.
func TestKubernetesExamples(t *testing.T) {
	dir := filepath.Join(testenv.ModuleRoot(t), "examples", "kubernetes")
	objs := map[string]*unstructured.Unstructured{}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	require.NoError(t, err)
	var manifests []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" && filepath.Base(f) != "mesh.yaml" {
			manifests = append(manifests, filepath.Base(f))
		}
		for _, o := range kubetest.DecodeManifest(t, mustRead(t, f)) {
			objs[o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()] = o
		}
	}
	kust := kubetest.DecodeManifest(t, mustRead(t, filepath.Join(dir, "kustomization.yaml")))[0]
	resources, _, _ := unstructured.NestedStringSlice(kust.Object, "resources")
	require.ElementsMatch(t, manifests, resources)

	help, err := exec.Command(binary, "serve", "--help").CombinedOutput()
	require.NoError(t, err)
	dep := objs["Deployment/kuma-system/meshsds"]
	require.NotNil(t, dep)
	pod, _, _ := unstructured.NestedMap(dep.Object, "spec", "template", "spec")
	nonRoot, _, _ := unstructured.NestedBool(pod, "securityContext", "runAsNonRoot")
	require.True(t, nonRoot)
	require.Equal(t, "meshsds", pod["serviceAccountName"])
	containers, _, _ := unstructured.NestedSlice(pod, "containers")
	require.Len(t, containers, 1)
	c := containers[0].(map[string]any)
	readOnly, _, _ := unstructured.NestedBool(c, "securityContext", "readOnlyRootFilesystem")
	escalation, _, _ := unstructured.NestedBool(c, "securityContext", "allowPrivilegeEscalation")
	require.True(t, readOnly)
	require.False(t, escalation)
	liveness, _, _ := unstructured.NestedString(c, "livenessProbe", "httpGet", "path")
	readiness, _, _ := unstructured.NestedString(c, "readinessProbe", "httpGet", "path")
	require.Equal(t, "/healthz", liveness)
	require.Equal(t, "/readyz", readiness)
	args, _, _ := unstructured.NestedStringSlice(c, "args")
	require.Equal(t, "serve", args[0])
	require.Contains(t, args, "--kubernetes")
	for _, a := range args[1:] {
		flag, _, _ := strings.Cut(a, "=")
		require.Contains(t, string(help), flag+" ", "meshsds serve has no flag %s", flag)
	}
	env, _, _ := unstructured.NestedSlice(c, "env")
	for _, v := range env {
		name := v.(map[string]any)["name"].(string)
		flag := "--" + strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "MESHSDS_")), "_", "-")
		require.Contains(t, string(help), flag+" ", "%s sets no flag", name)
	}

	metricsSvc := objs["Service/kuma-system/meshsds-metrics"]
	require.Equal(t, "true", metricsSvc.GetAnnotations()["prometheus.io/scrape"])

	// RBAC: read and create Secrets, delete them (the builtin CAs of meshes
	// gone), never update them; read Meshes; write Events; Leases and
	// ConfigMaps for the replicas' shared state.
	role := objs["Role/kuma-system/meshsds"]
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	verbs := map[string][]string{}
	for _, r := range rules {
		res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
		v, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "verbs")
		for _, name := range res {
			verbs[name] = append(verbs[name], v...)
		}
	}
	require.ElementsMatch(t, []string{"get", "list", "watch", "create", "delete"}, verbs["secrets"])
	require.ElementsMatch(t, []string{"create", "patch"}, verbs["events"])
	require.ElementsMatch(t, []string{"get", "list", "watch", "create", "update", "delete"}, verbs["leases"])
	require.ElementsMatch(t, []string{"get", "list", "watch", "create", "update"}, verbs["configmaps"])
	meshRules, _, _ := unstructured.NestedSlice(objs["ClusterRole//meshsds-meshes"].Object, "rules")
	require.Len(t, meshRules, 1)
	meshVerbs, _, _ := unstructured.NestedStringSlice(meshRules[0].(map[string]any), "verbs")
	require.ElementsMatch(t, []string{"get", "list", "watch"}, meshVerbs)
}
