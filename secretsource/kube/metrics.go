package kube

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
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
		if reviews, err = register(reg, reviews); err != nil {
			return nil, err
		}
	}
	return &webhookMetrics{reviews: reviews}, nil
}

// register registers c with reg, or returns the collector already registered
// under the same descriptor (package secretsource keeps its own copy for
// the source metrics).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	var zero T
	return zero, fmt.Errorf("registering metrics: %w", err)
}
