package api

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshsds/meshsds/secretsource"
)

type metrics struct {
	requests   *prometheus.CounterVec
	syncErrors prometheus.Counter
	lastSync   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	shared, err := secretsource.NewMetrics(reg, "api")
	if err != nil {
		return nil, err
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_api_requests_total", Help: "Admin API requests by method and status code.",
		}, []string{"method", "code"}),
		syncErrors: shared.SyncErrors,
		lastSync:   shared.LastSync,
	}
	if reg != nil {
		if err := reg.Register(m.requests); err != nil {
			return nil, fmt.Errorf("registering admin API metrics: %w", err)
		}
	}
	return m, nil
}
