package reconcile

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	errors        *prometheus.CounterVec
	failing       *prometheus.GaugeVec
	conflicts     prometheus.Gauge
	lastReconcile prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_mesh_resolution_errors_total", Help: "Times a mesh's CA backend failed to resolve with a new error, by mesh.",
		}, []string{"mesh"}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshsds_mesh_resolution_failing", Help: "1 while a mesh's current definition cannot be resolved (its last good CA is served).",
		}, []string{"mesh"}),
		conflicts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshsds_source_conflicts", Help: "Resources defined by more than one source.",
		}),
		lastReconcile: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshsds_reconcile_last_timestamp_seconds", Help: "When the served meshes were last recomputed.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.errors, m.failing, m.conflicts, m.lastReconcile} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering reconcile metrics: %w", err)
			}
		}
	}
	return m, nil
}
