package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/meshsds/meshsds/meshconfig"
)

// TestSourceWithFakes is a fast check of the source's bookkeeping with
// client-go's fakes (which ignore field selectors, so the source's own type
// filter is exercised too). The tests against a real API server are in
// source_test.go.
func TestSourceWithFakes(t *testing.T) {
	const ns = "mesh-system"
	opaque := kumaSecret(ns, "unrelated", "", []byte("x"))
	opaque.Type = corev1.SecretTypeOpaque
	client := fake.NewClientset(kumaSecret(ns, "ca-cert", "m1", []byte("cert")), kumaSecret(ns, "ca-key", "m1", []byte("key")), opaque)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{MeshGVR: "MeshList"})
	ctx := context.Background()
	_, err := dyn.Resource(MeshGVR).Create(ctx, providedMesh("m1", "ca-cert", "ca-key"), metav1.CreateOptions{})
	require.NoError(t, err)
	recorder := record.NewFakeRecorder(10)
	src, err := New(Config{Client: client, Dynamic: dyn, Namespace: ns, Recorder: recorder, Debounce: time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, "kubernetes:"+ns, src.Name())
	v := newViews()
	run(t, src, v)

	view := v.waitFor(t, "the first view", func(meshconfig.Resources) bool { return true })
	require.Equal(t, []string{"m1/ca-cert", "m1/ca-key"}, secretKeys(view))
	require.NotNil(t, view.Meshes["m1"])

	bad := kumaSecret(ns, "ca-key", "m1", nil)
	bad.Data = nil
	_, err = client.CoreV1().Secrets(ns).Update(ctx, bad, metav1.UpdateOptions{})
	require.NoError(t, err)
	select {
	case e := <-recorder.Events:
		require.Equal(t, "Warning InvalidSecret data.value: cannot be empty; meshsds keeps serving its last good version", e)
	case <-time.After(30 * time.Second):
		t.Fatal("no Event for the bad Secret")
	}
	cur, _ := src.Current()
	require.True(t, hasSecret(cur, "m1", "ca-key", []byte("key")))

	moved := kumaSecret(ns, "ca-cert", "m2", []byte("cert"))
	_, err = client.CoreV1().Secrets(ns).Update(ctx, moved, metav1.UpdateOptions{})
	require.NoError(t, err)
	view = v.waitFor(t, "ca-cert in m2", func(r meshconfig.Resources) bool { return hasSecret(r, "m2", "ca-cert", []byte("cert")) })
	require.Equal(t, "m1/ca-key,m2/ca-cert", strings.Join(secretKeys(view), ","))

	require.NoError(t, dyn.Resource(MeshGVR).Delete(ctx, "m1", metav1.DeleteOptions{}))
	v.waitFor(t, "m1 deleted", func(r meshconfig.Resources) bool { return len(r.Meshes) == 0 })

	require.ErrorContains(t, src.Run(ctx, v.publish), "already running")
}

func TestNewRefusesBadConfig(t *testing.T) {
	client, dyn := fake.NewClientset(), dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no clients", Config{}, "a client and a dynamic client are required"},
		{"bad namespace", Config{Client: client, Dynamic: dyn, Namespace: "Kuma_System"}, "namespace: must be a valid RFC 1123 subdomain"},
		{"negative debounce", Config{Client: client, Dynamic: dyn, Debounce: -1}, "debounce must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
	src, err := New(Config{Client: client, Dynamic: dyn})
	require.NoError(t, err)
	require.Equal(t, DefaultNamespace, src.Namespace())
}
