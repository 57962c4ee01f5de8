package cache

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the serving state's Prometheus metrics: certificates issued,
// CA and workload certificate expiry, CA changes. The only label is the
// mesh.
type Metrics struct {
	issued           prometheus.Counter
	issueSeconds     prometheus.Histogram
	caExpiry         *prometheus.GaugeVec
	workloadExpiry   *prometheus.GaugeVec
	rotationPhase    *prometheus.GaugeVec
	rotationTimeouts *prometheus.CounterVec
	caExpiresSoon    *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg, which may be
// nil (metrics are then kept but not exported). It fails when reg already
// holds metrics of the same names.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshsds_certificates_issued_total", Help: "Workload certificates issued.",
		}),
		issueSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshsds_certificate_issue_duration_seconds", Help: "Time to generate a key and sign a workload certificate.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		caExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshsds_ca_expiry_timestamp_seconds", Help: "When the CA signing a mesh's workload certificates expires.",
		}, []string{"mesh"}),
		workloadExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshsds_workload_cert_expiry_timestamp_seconds", Help: "Expiry of the most recently issued workload certificate, by mesh.",
		}, []string{"mesh"}),
		rotationPhase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshsds_ca_rotation_phase", Help: "Phase of a mesh's CA change: 0 steady, 1 new CA trusted (old CA signs), 2 new CA signs (both trusted).",
		}, []string{"mesh"}),
		rotationTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_ca_rotation_timeouts_total", Help: "CA change phases that ended by timeout because data planes did not ACK.",
		}, []string{"mesh"}),
		caExpiresSoon: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshsds_ca_expires_within_workload_validity", Help: "1 when a mesh's signing CA expires before a certificate issued now would.",
		}, []string{"mesh"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			m.issued, m.issueSeconds, m.caExpiry, m.workloadExpiry, m.rotationPhase, m.rotationTimeouts, m.caExpiresSoon,
		} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering cache metrics: %w", err)
			}
		}
	}
	return m, nil
}
