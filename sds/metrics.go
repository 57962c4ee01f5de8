package sds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the SDS server's Prometheus metrics. Labels are bounded: API
// kind, resource kind, reason and mesh, never a data plane.
type Metrics struct {
	activeStreams    *prometheus.GaugeVec
	dataplanes       prometheus.Gauge
	requests         *prometheus.CounterVec
	acks             *prometheus.CounterVec
	nacks            *prometheus.CounterVec
	responses        *prometheus.CounterVec
	unknownNames     prometheus.Counter
	pushLatency      prometheus.Histogram
	issued           prometheus.Counter
	issueSeconds     prometheus.Histogram
	authFailures     *prometheus.CounterVec
	caExpiry         *prometheus.GaugeVec
	workloadExpiry   *prometheus.GaugeVec
	revokedClosures  prometheus.Counter
	rotationPhase    *prometheus.GaugeVec
	rotationTimeouts *prometheus.CounterVec
	caExpiresSoon    *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg, which may be
// nil (metrics are then kept but not exported). It fails when reg already
// holds metrics of the same names.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		activeStreams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshsds_sds_active_streams", Help: "Open SDS streams by API (sotw, delta, ads, ads_delta).",
		}, []string{"api"}),
		dataplanes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshsds_sds_connected_dataplanes", Help: "Data planes with at least one open SDS stream.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_requests_total", Help: "Discovery requests received, by API.",
		}, []string{"api"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_acks_total", Help: "Responses acknowledged by data planes, by API.",
		}, []string{"api"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_nacks_total", Help: "Responses rejected by data planes, by API.",
		}, []string{"api"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_responses_total", Help: "Secrets sent, by resource (identity_cert, mesh_ca).",
		}, []string{"resource"}),
		unknownNames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshsds_sds_unknown_resource_names_total", Help: "Requested secret names meshsds does not serve (not answered).",
		}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshsds_sds_push_latency_seconds", Help: "Time from a source change (or renewal) to the response written on a stream.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshsds_certificates_issued_total", Help: "Workload certificates issued.",
		}),
		issueSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshsds_certificate_issue_duration_seconds", Help: "Time to generate a key and sign a workload certificate.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_auth_failures_total", Help: "Refused SDS streams and requests, by reason.",
		}, []string{"reason"}),
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
		revokedClosures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshsds_sds_revoked_streams_closed_total", Help: "Streams closed because their dataplane token was revoked.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			m.activeStreams, m.dataplanes, m.requests, m.acks, m.nacks, m.responses, m.unknownNames,
			m.pushLatency, m.issued, m.issueSeconds, m.authFailures, m.caExpiry, m.workloadExpiry, m.revokedClosures,
			m.rotationPhase, m.rotationTimeouts, m.caExpiresSoon,
		} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering sds metrics: %w", err)
			}
		}
	}
	return m, nil
}
