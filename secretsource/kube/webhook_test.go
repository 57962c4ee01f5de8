package kube

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// fakeView is a fixed ResourceView.
type fakeView struct {
	res meshconfig.Resources
	ok  bool
}

func (f fakeView) Current() (meshconfig.Resources, bool) { return f.res, f.ok }

func raw(t *testing.T, obj runtime.Object) runtime.RawExtension {
	t.Helper()
	if obj == nil {
		return runtime.RawExtension{}
	}
	b, err := json.Marshal(obj)
	require.NoError(t, err)
	return runtime.RawExtension{Raw: b}
}

var (
	secretKind = metav1.GroupVersionKind{Version: "v1", Kind: "Secret"}
	meshKind   = metav1.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: "Mesh"}
)

func TestWebhookReview(t *testing.T) {
	const ns = "kuma-system"
	ca := pkitest.NewRootCA(t, "m1 CA")
	other := pkitest.NewRootCA(t, "unrelated")
	m1, err := DecodeMesh(providedMesh("m1", "ca-cert", "ca-key"))
	require.NoError(t, err)
	synced := fakeView{ok: true, res: meshconfig.Resources{
		Meshes: map[string]*meshconfig.Mesh{"m1": m1.Mesh},
		Secrets: map[meshconfig.SecretKey]*meshconfig.Secret{
			{Mesh: "m1", Name: "ca-cert"}: {Mesh: "m1", Name: "ca-cert", Data: ca.CertPEM},
			{Mesh: "m1", Name: "ca-key"}:  {Mesh: "m1", Name: "ca-key", Data: ca.KeyPEM},
			{Mesh: "m1", Name: "bad-key"}: {Mesh: "m1", Name: "bad-key", Data: other.KeyPEM},
		},
	}}
	withLabels := func(s *corev1.Secret, labels map[string]string) *corev1.Secret {
		s.Labels = labels
		return s
	}
	otherKeys := kumaSecret(ns, "x", "m1", nil)
	otherKeys.Data = map[string][]byte{"tls.crt": []byte("pem")}
	opaque := kumaSecret(ns, "x", "m1", nil)
	opaque.Type = corev1.SecretTypeOpaque
	opaque.Data = map[string][]byte{"anything": []byte("goes")}
	emptyGlobal := kumaSecret(ns, "g", "", nil)
	emptyGlobal.Type = GlobalSecretType
	badMesh := providedMesh("m2", "ca-cert", "ca-key")
	badMesh.Object["spec"].(map[string]any)["mtls"].(map[string]any)["enabledBackend"] = "nope"

	tests := []struct {
		name        string
		view        fakeView
		kind        metav1.GroupVersionKind
		op          admissionv1.Operation
		namespace   string
		obj, old    runtime.Object
		wantAllowed bool
		wantCode    int32
		wantMsg     string
		wantWarning string
	}{
		{name: "valid secret", kind: secretKind, op: admissionv1.Create, obj: kumaSecret(ns, "x", "m1", []byte("v")), wantAllowed: true},
		{name: "secret with another key", kind: secretKind, op: admissionv1.Create, obj: otherKeys, wantCode: 422, wantMsg: `invalid Kuma Secret: data: unexpected key "tls.crt"`},
		{name: "secret with a bad mesh label", kind: secretKind, op: admissionv1.Update, obj: kumaSecret(ns, "x", "M!", []byte("v")), old: kumaSecret(ns, "x", "M!", []byte("v")), wantCode: 422, wantMsg: "must be a valid RFC 1123 subdomain"},
		{name: "global secret without value", kind: secretKind, op: admissionv1.Create, obj: emptyGlobal, wantCode: 422, wantMsg: "data.value: cannot be empty"},
		{name: "opaque secret", kind: secretKind, op: admissionv1.Create, obj: opaque, wantAllowed: true},
		{name: "bad secret in another namespace", kind: secretKind, op: admissionv1.Create, namespace: "elsewhere", obj: otherKeys, wantAllowed: true},
		{
			name: "mesh label change", kind: secretKind, op: admissionv1.Update,
			obj: kumaSecret(ns, "x", "m2", []byte("v")), old: kumaSecret(ns, "x", "m1", []byte("v")),
			wantCode: 403, wantMsg: `the kuma.io/mesh label cannot be changed (from "m1" to "m2")`,
		},
		{
			name: "label added with the same mesh", kind: secretKind, op: admissionv1.Update,
			obj: kumaSecret(ns, "x", "default", []byte("v")), old: withLabels(kumaSecret(ns, "x", "", []byte("v")), nil),
			wantAllowed: true,
		},
		{
			name: "delete of a secret in use", view: synced, kind: secretKind, op: admissionv1.Delete,
			old: kumaSecret(ns, "ca-key", "m1", ca.KeyPEM), wantCode: 403,
			wantMsg: `secret "ca-key" of mesh "m1" is in use by Mesh "m1", backend "ca-1" (mtls.backends[0].config.key.secret): change the Mesh first`,
		},
		{name: "delete of an unused secret", view: synced, kind: secretKind, op: admissionv1.Delete, old: kumaSecret(ns, "bad-key", "m1", other.KeyPEM), wantAllowed: true},
		{name: "delete of a same-named secret of another mesh", view: synced, kind: secretKind, op: admissionv1.Delete, old: kumaSecret(ns, "ca-key", "m2", ca.KeyPEM), wantAllowed: true},
		{name: "delete before sync", kind: secretKind, op: admissionv1.Delete, old: kumaSecret(ns, "ca-key", "m1", ca.KeyPEM), wantCode: 503, wantMsg: "not synced"},
		{name: "invalid mesh", view: synced, kind: meshKind, op: admissionv1.Create, obj: badMesh, wantCode: 422, wantMsg: `invalid Mesh: spec.mtls.enabledBackend`},
		{name: "mesh with a good CA", view: synced, kind: meshKind, op: admissionv1.Update, obj: providedMesh("m1", "ca-cert", "ca-key"), wantAllowed: true},
		{
			name: "mesh with a key that does not match", view: synced, kind: meshKind, op: admissionv1.Update,
			obj: providedMesh("m1", "ca-cert", "bad-key"), wantCode: 422, wantMsg: "invalid Mesh: spec.mtls.backends[0].config.key: key does not match the certificate",
		},
		{
			name: "mesh before its key", view: synced, kind: meshKind, op: admissionv1.Create, obj: providedMesh("m1", "ca-cert", "next-key"),
			wantCode: 422, wantMsg: `invalid Mesh: spec.mtls.backends[0].config.key.secret: secret "next-key" of backend "ca-1" does not exist in mesh "m1": create the Secret first`,
		},
		{
			name: "mesh before its secrets, which exist in another mesh", view: synced, kind: meshKind, op: admissionv1.Create, obj: providedMesh("m3", "ca-cert", "ca-key"),
			wantCode: 422, wantMsg: `invalid Mesh: spec.mtls.backends[0].config.cert.secret: secret "ca-cert" of backend "ca-1" does not exist in mesh "m3": create the Secret first; ` +
				`spec.mtls.backends[0].config.key.secret: secret "ca-key" of backend "ca-1" does not exist in mesh "m3": create the Secret first`,
		},
		{
			name: "mesh whose secret is not a CA", view: synced, kind: meshKind, op: admissionv1.Create, obj: providedMesh("m1", "bad-key", "ca-key"),
			wantCode: 422, wantMsg: "invalid Mesh: spec.mtls.backends[0].config.cert: ",
		},
		{name: "mesh before sync", kind: meshKind, op: admissionv1.Create, obj: providedMesh("m3", "ca-cert", "ca-key"), wantAllowed: true, wantWarning: "not synced"},
		{name: "mesh delete", view: synced, kind: meshKind, op: admissionv1.Delete, old: providedMesh("m1", "ca-cert", "ca-key"), wantAllowed: true},
		{name: "other kind", kind: metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, op: admissionv1.Create, obj: &corev1.ConfigMap{}, wantAllowed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wh, err := NewWebhook(WebhookConfig{View: tc.view, Namespace: ns})
			require.NoError(t, err)
			namespace := ns
			if tc.namespace != "" {
				namespace = tc.namespace
			}
			if tc.kind == meshKind {
				namespace = ""
			}
			review := admissionv1.AdmissionReview{
				TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
				Request: &admissionv1.AdmissionRequest{
					UID: types.UID("uid-1"), Kind: tc.kind, Operation: tc.op, Namespace: namespace,
					Object: raw(t, tc.obj), OldObject: raw(t, tc.old),
				},
			}
			resp := post(t, wh, review)
			require.Equal(t, types.UID("uid-1"), resp.UID)
			require.Equal(t, tc.wantAllowed, resp.Allowed, "result: %+v", resp.Result)
			if !tc.wantAllowed {
				require.Equal(t, tc.wantCode, resp.Result.Code)
				require.Contains(t, resp.Result.Message, tc.wantMsg)
			}
			if tc.wantWarning != "" {
				require.Contains(t, strings.Join(resp.Warnings, "\n"), tc.wantWarning)
			}
		})
	}
}

// post sends review to wh over HTTP and returns the response.
func post(t *testing.T, wh http.Handler, review admissionv1.AdmissionReview) *admissionv1.AdmissionResponse {
	t.Helper()
	body, err := json.Marshal(review)
	require.NoError(t, err)
	req := httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	wh.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var out admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	require.Equal(t, "admission.k8s.io/v1", out.APIVersion)
	require.Equal(t, "AdmissionReview", out.Kind)
	require.NotNil(t, out.Response)
	return out.Response
}

func TestWebhookRefusesBadRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	wh, err := NewWebhook(WebhookConfig{View: fakeView{}, Registerer: reg})
	require.NoError(t, err)
	tests := []struct {
		name, method, contentType, body string
		wantCode                        int
	}{
		{"get", http.MethodGet, "application/json", "", http.StatusMethodNotAllowed},
		{"yaml", http.MethodPost, "application/yaml", "{}", http.StatusUnsupportedMediaType},
		{"not json", http.MethodPost, "application/json", "{", http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, WebhookPath, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.contentType)
			rec := httptest.NewRecorder()
			wh.ServeHTTP(rec, req)
			require.Equal(t, tc.wantCode, rec.Code)
		})
	}
	require.Equal(t, 2.0, testutil.ToFloat64(wh.metrics.reviews.WithLabelValues("other", resultError)))

	// A denial is counted by kind and result.
	resp := post(t, wh, admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{
		UID: "u", Kind: meshKind, Operation: admissionv1.Create,
		Object: raw(t, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "metadata": map[string]any{"name": "m"}, "spec": map[string]any{"x": 1}}}),
	}})
	require.False(t, resp.Allowed)
	require.Equal(t, 1.0, testutil.ToFloat64(wh.metrics.reviews.WithLabelValues(meshconfig.KindMesh, resultDenied)))
}
