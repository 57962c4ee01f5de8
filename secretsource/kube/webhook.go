package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshsds/meshsds/meshconfig"
)

// WebhookPath is where the validating admission webhook is served.
const WebhookPath = "/validate"

// maxReviewBody bounds an AdmissionReview request: a Secret of the largest
// accepted payload, base64-encoded, twice (object and oldObject), plus
// metadata.
const maxReviewBody = 4*meshconfig.DefaultMaxSecretSize + 1<<20

// ResourceView gives the webhook the Meshes and Secrets meshsds currently
// knows from every source (the reconciler's merged view), to refuse
// deleting a Secret a Mesh uses and to admit a Mesh. Current may be called
// concurrently from any goroutine; it returns false until the view is
// complete, and the view must not be modified.
type ResourceView interface {
	Current() (meshconfig.Resources, bool)
}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// View is what deletions and Meshes are checked against. Required.
	View ResourceView
	// Namespace is the control plane's namespace: Secrets elsewhere are
	// allowed unchecked. It defaults to DefaultNamespace.
	Namespace string
	// MaxSecretSize is the largest Secret payload accepted. Zero means
	// meshconfig.DefaultMaxSecretSize.
	MaxSecretSize int
	// Now is the clock of CA validity checks; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per refused request. Nil discards them.
	Logger *slog.Logger
	// Registerer receives meshsds_webhook_admission_reviews_total. Nil
	// disables it.
	Registerer prometheus.Registerer
}

// Webhook is the validating admission webhook for Kuma Secrets and Meshes:
// an http.Handler for admission.k8s.io/v1 AdmissionReview requests. It
// applies the rules of the admin API:
//
//   - a Secret of type system.kuma.io/secret or system.kuma.io/global-secret,
//     and a Mesh, must pass meshconfig's validation (data.value present, not
//     empty and not too large, names, backend structure);
//   - a Mesh is admitted by meshconfig.AdmitMesh, the admin API's rule: its
//     enabled provided backend must resolve to a valid CA (key matches
//     certificate, every certificate a CA, not expired) with the Secrets
//     meshsds knows, and a referenced Secret that does not exist is refused
//     (create the Secrets first); before the first sync a Mesh is allowed
//     with a warning, as its Secrets cannot be looked up;
//   - a Secret's kuma.io/mesh label cannot change: delete and recreate it;
//   - a Secret that a backend of a Mesh of its mesh references cannot be
//     deleted; the refusal names the Mesh and backend.
//
// It is safe for concurrent use.
type Webhook struct {
	view          ResourceView
	namespace     string
	maxSecretSize int
	now           func() time.Time
	log           *slog.Logger
	metrics       *webhookMetrics
}

// NewWebhook validates cfg and returns a Webhook.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if cfg.View == nil {
		return nil, errors.New("webhook: a resource view is required")
	}
	w := &Webhook{view: cfg.View, namespace: cfg.Namespace, maxSecretSize: cfg.MaxSecretSize, now: cfg.Now, log: cfg.Logger}
	if w.namespace == "" {
		w.namespace = DefaultNamespace
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	m, err := newWebhookMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	w.metrics = m
	return w, nil
}

// ServeHTTP answers one AdmissionReview.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "use POST with an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		http.Error(rw, "content type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	var review admissionv1.AdmissionReview
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxReviewBody))
	if err == nil {
		err = json.Unmarshal(body, &review)
	}
	if err == nil && review.Request == nil {
		err = errors.New("the review has no request")
	}
	if err != nil {
		w.metrics.reviews.WithLabelValues("other", resultError).Inc()
		http.Error(rw, "bad AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	kind, resp := w.review(review.Request)
	resp.UID = review.Request.UID
	result := resultAllowed
	if !resp.Allowed {
		result = resultDenied
		req := review.Request
		w.log.Info("admission refused", "kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name,
			"operation", string(req.Operation), "user", req.UserInfo.Username, "reason", resp.Result.Message)
	}
	w.metrics.reviews.WithLabelValues(kind, result).Inc()
	out, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: resp,
	})
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	_, _ = rw.Write(out)
}

// review decides on one request. It returns the metric's kind label.
func (w *Webhook) review(req *admissionv1.AdmissionRequest) (string, *admissionv1.AdmissionResponse) {
	switch {
	case req.Kind.Group == "" && req.Kind.Kind == "Secret":
		return meshconfig.KindSecret, w.reviewSecret(req)
	case req.Kind.Group == MeshGVR.Group && req.Kind.Kind == "Mesh":
		return meshconfig.KindMesh, w.reviewMesh(req)
	default:
		return "other", allow()
	}
}

func (w *Webhook) reviewSecret(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Namespace != w.namespace {
		return allow()
	}
	var obj, old *corev1.Secret
	for _, x := range []struct {
		raw []byte
		dst **corev1.Secret
	}{{req.Object.Raw, &obj}, {req.OldObject.Raw, &old}} {
		if len(x.raw) == 0 {
			continue
		}
		s := &corev1.Secret{}
		if err := json.Unmarshal(x.raw, s); err != nil {
			return deny(http.StatusBadRequest, "cannot decode the Secret: "+err.Error())
		}
		*x.dst = s
	}
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update:
		if obj == nil || !isKumaSecret(obj.Type) {
			return allow()
		}
		if _, err := DecodeSecret(obj, w.maxSecretSize); err != nil {
			return deny(http.StatusUnprocessableEntity, "invalid Kuma Secret: "+err.Error())
		}
		if req.Operation == admissionv1.Update && old != nil && obj.Type == SecretType && old.Type == SecretType {
			if from, to := secretMesh(old), secretMesh(obj); from != to {
				return deny(http.StatusForbidden, fmt.Sprintf(
					"the %s label cannot be changed (from %q to %q): a Secret belongs to one mesh; delete it and create it again with the new label",
					MeshLabel, from, to))
			}
		}
		return allow()
	case admissionv1.Delete:
		if old == nil || old.Type != SecretType {
			return allow()
		}
		view, ok := w.view.Current()
		if !ok {
			return deny(http.StatusServiceUnavailable, "meshsds has not synced with the API server yet and cannot tell whether the Secret is in use; try again")
		}
		mesh := secretMesh(old)
		if err := meshconfig.SecretInUseError(mesh, old.Name, meshconfig.SecretUsers([]*meshconfig.Mesh{view.Meshes[mesh]}, mesh, old.Name)); err != nil {
			return deny(http.StatusForbidden, err.Error())
		}
		return allow()
	default:
		return allow()
	}
}

func (w *Webhook) reviewMesh(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return allow()
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(req.Object.Raw); err != nil {
		return deny(http.StatusBadRequest, "cannot decode the Mesh: "+err.Error())
	}
	obj, err := DecodeMesh(u)
	if err != nil {
		return deny(http.StatusUnprocessableEntity, "invalid Mesh: "+err.Error())
	}
	view, ok := w.view.Current()
	if !ok {
		resp := allow()
		resp.Warnings = []string{"meshsds has not synced with the API server yet: the mesh's CA was not checked"}
		return resp
	}
	lookup := func(mesh, name string) ([]byte, bool) {
		s, ok := view.Secrets[meshconfig.SecretKey{Mesh: mesh, Name: name}]
		if !ok {
			return nil, false
		}
		return s.Data, true
	}
	if err := meshconfig.AdmitMesh(obj.Mesh, lookup, w.now()); err != nil {
		// The admin API's causes, with the fields where the Kubernetes
		// object has them, as DecodeMesh's.
		var verr meshconfig.ValidationError
		verr.AddError("spec", err)
		return deny(http.StatusUnprocessableEntity, "invalid Mesh: "+verr.Error())
	}
	return allow()
}

// isKumaSecret reports whether t is one of the Secret types meshsds reads.
func isKumaSecret(t corev1.SecretType) bool {
	return t == SecretType || t == GlobalSecretType
}

// secretMesh is the mesh of a Kuma Secret: its label, or "default".
func secretMesh(s *corev1.Secret) string {
	if m := s.Labels[MeshLabel]; m != "" {
		return m
	}
	return meshconfig.DefaultMesh
}

func allow() *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: true}
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	reason := metav1.StatusReasonInvalid
	switch code {
	case http.StatusForbidden:
		reason = metav1.StatusReasonForbidden
	case http.StatusBadRequest:
		reason = metav1.StatusReasonBadRequest
	case http.StatusServiceUnavailable:
		reason = metav1.StatusReasonServiceUnavailable
	}
	return &admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg},
	}
}
