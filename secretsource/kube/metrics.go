package kube

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshsds/meshsds/secretsource"
)

// Results of meshsds_webhook_admission_reviews_total.
const (
	resultAllowed = "allowed"
	resultDenied  = "denied"
	resultError   = "error"
)

// webhookMetrics are the admission webhook's series.
type webhookMetrics struct {
	reviews *prometheus.CounterVec
}

func newWebhookMetrics(reg prometheus.Registerer) (*webhookMetrics, error) {
	reviews := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "meshsds",
		Subsystem: "webhook",
		Name:      "admission_reviews_total",
		Help:      "Admission reviews answered by the validating webhook, by kind (Secret, Mesh, other) and result (allowed, denied, error).",
	}, []string{"kind", "result"})
	if reg != nil {
		var err error
		if reviews, err = secretsource.Register(reg, reviews); err != nil {
			return nil, err
		}
	}
	return &webhookMetrics{reviews: reviews}, nil
}
