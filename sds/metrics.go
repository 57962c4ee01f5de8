package sds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the SDS server's Prometheus metrics of streams. Labels are
// bounded: API kind, resource kind and reason, never a data plane.
type Metrics struct {
	activeStreams   *prometheus.GaugeVec
	dataplanes      prometheus.Gauge
	requests        *prometheus.CounterVec
	acks            *prometheus.CounterVec
	nacks           *prometheus.CounterVec
	responses       *prometheus.CounterVec
	unknownNames    prometheus.Counter
	pushLatency     prometheus.Histogram
	authFailures    *prometheus.CounterVec
	revokedClosures prometheus.Counter
}

// authReasons are the values of meshsds_sds_auth_failures_total's reason
// label, each exported at 0 from the start so that a rate or an alert over
// it has a series before the first refusal: token.Reason's, the
// Authenticators' and revoked.
var authReasons = []string{
	"missing_token", "malformed", "bad_signature", "missing_claim", "not_yet_valid", "expired",
	"missing_node", "bad_identity", "other_mesh", "other_name", "revoked", "other",
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
			Name: "meshsds_sds_acks_total", Help: "Responses acknowledged by data planes, by API and mesh.",
		}, []string{"api", "mesh"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_nacks_total", Help: "Responses rejected by data planes, by API and mesh.",
		}, []string{"api", "mesh"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_responses_total", Help: "Secrets sent, by resource (identity_cert, mesh_ca) and mesh.",
		}, []string{"resource", "mesh"}),
		unknownNames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshsds_sds_unknown_resource_names_total", Help: "Requested secret names meshsds does not serve (not answered).",
		}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshsds_sds_push_latency_seconds", Help: "Time from a source change (or renewal) to the response written on a stream.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_auth_failures_total", Help: "Refused SDS streams and requests, by reason.",
		}, []string{"reason"}),
		revokedClosures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshsds_sds_revoked_streams_closed_total", Help: "Streams closed because their dataplane token was revoked.",
		}),
	}
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			m.activeStreams, m.dataplanes, m.requests, m.acks, m.nacks, m.responses, m.unknownNames,
			m.pushLatency, m.authFailures, m.revokedClosures,
		} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering sds metrics: %w", err)
			}
		}
	}
	return m, nil
}
