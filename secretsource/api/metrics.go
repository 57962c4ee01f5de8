package api

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	audit    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_api_requests_total", Help: "Admin API requests by method and status code.",
		}, []string{"method", "code"}),
		audit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_api_audit_events_total", Help: "Admin API writes recorded in the audit log, by verb.",
		}, []string{"verb"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.audit} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering admin API metrics: %w", err)
			}
		}
	}
	return m, nil
}
