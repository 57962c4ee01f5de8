package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshsds/meshsds/internal/testing/kubetest"
	"github.com/meshsds/meshsds/internal/testing/testenv"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/secretsource/kube"
)

// TestKubernetesResourcesAreReadOnly: against a real kube-apiserver, the
// Kuma Secrets and Meshes of Kubernetes are listed and shown with origin
// kubernetes, beside the API's own, and every write of them through the API
// is refused, naming Kubernetes.
func TestKubernetesResourcesAreReadOnly(t *testing.T) {
	const ns = "kuma-system"
	c := kubetest.Start(t, kubetest.Options{})
	c.Apply(filepath.Join(testenv.ModuleRoot(t), "examples", "kubernetes", "crd.yaml"))
	c.CreateNamespace(ns)
	ctx := context.Background()

	ca := pkitest.NewRootCA(t, "kubernetes")
	for name, data := range map[string][]byte{"ca-cert": ca.CertPEM, "ca-key": ca.KeyPEM} {
		_, err := c.Client().CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{kube.MeshLabel: "kmesh"}},
			Type:       kube.SecretType,
			Data:       map[string][]byte{kube.DataKey: data},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err := c.Dynamic().Resource(kube.MeshGVR).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "metadata": map[string]any{"name": "kmesh"},
		"spec": map[string]any{"mtls": map[string]any{"backends": []any{map[string]any{
			"name": "ca-1", "type": "provided",
			"config": map[string]any{"cert": map[string]any{"secret": "ca-cert"}, "key": map[string]any{"secret": "ca-key"}},
		}}}},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)

	client, err := kubernetes.NewForConfig(c.Config())
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(c.Config())
	require.NoError(t, err)
	src, err := kube.New(kube.Config{Client: client, Dynamic: dyn, Namespace: ns, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)

	f := newFixture(t)
	code, body := f.do("PUT", "/meshes/api-mesh", "type: Mesh\nname: api-mesh\n")
	require.Equal(t, http.StatusCreated, code, body)
	wire(t, f, src)

	require.Equal(t, []string{"api-mesh api", "kmesh kubernetes"}, f.listed("/meshes"))
	require.Equal(t, []string{"kmesh/ca-cert kubernetes", "kmesh/ca-key kubernetes"}, f.listed("/meshes/kmesh/secrets"))
	code, v := f.getRaw("GET", "/meshes/kmesh/secrets/ca-key", "")
	require.Equal(t, http.StatusOK, code, "%v", v)
	s := v.(map[string]any)
	require.Equal(t, base64.StdEncoding.EncodeToString(ca.KeyPEM), s["data"], "Kubernetes secrets are shown as API secrets are")
	require.Equal(t, map[string]any{LabelOrigin: "kubernetes"}, s["labels"])
	created, err := time.Parse(time.RFC3339, s["creationTime"].(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), created, 5*time.Minute, "the object's creation time")

	const where = "comes from Kubernetes (kubernetes:" + ns + ")"
	f.requireReadOnly("PUT", "/meshes/kmesh/secrets/ca-cert", secretBody("kmesh", "ca-cert", []byte("x")), where)
	f.requireReadOnly("DELETE", "/meshes/kmesh/secrets/ca-key", "", where)
	f.requireReadOnly("PUT", "/meshes/kmesh", "type: Mesh\nname: kmesh\n", where)
	f.requireReadOnly("DELETE", "/meshes/kmesh", "", where)

	// The API's own resources stay writable, also in a mesh Kubernetes
	// holds.
	code, body = f.do("PUT", "/meshes/kmesh/secrets/extra", secretBody("kmesh", "extra", []byte("x")))
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, []string{"kmesh/ca-cert kubernetes", "kmesh/ca-key kubernetes", "kmesh/extra api"}, f.listed("/meshes/kmesh/secrets"))
	code, _ = f.do("DELETE", "/meshes/api-mesh", "")
	require.Equal(t, http.StatusOK, code)
}
