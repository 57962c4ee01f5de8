package kube

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshsds/meshsds/meshconfig"
)

// kumaSecret returns a Kuma Secret in ns; an empty mesh leaves the label out.
func kumaSecret(ns, name, mesh string, data []byte) *corev1.Secret {
	s := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       SecretType,
		Data:       map[string][]byte{DataKey: data},
	}
	if mesh != "" {
		s.Labels = map[string]string{MeshLabel: mesh}
	}
	return s
}

// providedMesh returns a Mesh custom resource with one provided backend
// "ca-1" using the Secrets cert and key.
func providedMesh(name, cert, key string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1",
		"kind":       "Mesh",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{"mtls": map[string]any{
			"enabledBackend": "ca-1",
			"backends": []any{map[string]any{
				"name": "ca-1", "type": "provided",
				"config": map[string]any{"cert": map[string]any{"secret": cert}, "key": map[string]any{"secret": key}},
			}},
		}},
	}}
}

// views collects what a Source publishes.
type views struct {
	ch chan meshconfig.Resources
}

func newViews() *views { return &views{ch: make(chan meshconfig.Resources, 1000)} }

func (v *views) publish(r meshconfig.Resources) { v.ch <- r }

// waitFor returns the first published view (from now on) for which ok
// holds, failing after 60s.
func (v *views) waitFor(t *testing.T, what string, ok func(meshconfig.Resources) bool) meshconfig.Resources {
	t.Helper()
	timeout := time.After(60 * time.Second)
	var last *meshconfig.Resources
	for {
		select {
		case r := <-v.ch:
			if ok(r) {
				return r
			}
			last = &r
		case <-timeout:
			t.Fatalf("no published view with %s within 60s; last view: %s", what, describe(last))
		}
	}
}

// expectNone fails if a view is published within d.
func (v *views) expectNone(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case r := <-v.ch:
		t.Fatalf("unexpected view published: %s", describe(&r))
	case <-time.After(d):
	}
}

func describe(r *meshconfig.Resources) string {
	if r == nil {
		return "none"
	}
	var b bytes.Buffer
	for name := range r.Meshes {
		b.WriteString("mesh " + name + "; ")
	}
	for k := range r.Secrets {
		b.WriteString("secret " + k.Mesh + "/" + k.Name + "; ")
	}
	return b.String()
}

// run runs src until the test ends and checks that Run returns nil.
func run(t *testing.T, src *Source, v *views) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, v.publish) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

// hasSecret reports whether view holds secret mesh/name with data.
func hasSecret(view meshconfig.Resources, mesh, name string, data []byte) bool {
	s, ok := view.Secrets[meshconfig.SecretKey{Mesh: mesh, Name: name}]
	return ok && bytes.Equal(s.Data, data)
}

// logBuffer is a concurrency-safe log sink for checking what is logged.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var errGenerate = errors.New("generate must not be called")
