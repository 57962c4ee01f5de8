// Package secretsource holds what every secret source shares: the Source
// interface, one debouncer, the metrics each source keeps under its own name
// and the log keys. The sources live in the sub-packages file (a watched
// directory), kube (the Kubernetes API) and store (the admin API's durable
// store); reconcile merges what they publish and feeds the SDS state; api is
// the admin HTTP API, which writes to the store.
package secretsource

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are one source's series. The vectors behind them are shared by
// every source on the same Registerer (one series per source name), so that
// several sources, and several --secrets-dir flags, coexist.
type Metrics struct {
	// SyncErrors counts failures: unparsable files or objects, duplicates,
	// watcher and store errors.
	SyncErrors prometheus.Counter
	// LastSync is the time of the last complete, successful read.
	LastSync prometheus.Gauge
	rescans  *prometheus.CounterVec
	source   string
}

// Rescans returns the counter of full rescans for reason (e.g. event,
// overflow, periodic).
func (m *Metrics) Rescans(reason string) prometheus.Counter {
	return m.rescans.WithLabelValues(m.source, reason)
}

// NewMetrics registers (or reuses) the source metric vectors on reg and
// returns the series of source. A nil reg yields working, unexported series.
func NewMetrics(reg prometheus.Registerer, source string) (*Metrics, error) {
	syncErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshsds_source_sync_errors_total",
		Help: "Errors while syncing a secret source: unparsable files or objects, duplicate resources, watcher or store errors.",
	}, []string{"source"})
	lastSync := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshsds_source_last_sync_timestamp_seconds",
		Help: "Unix time of the last complete read of a secret source.",
	}, []string{"source"})
	rescans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshsds_source_rescans_total",
		Help: "Full rescans of a secret source by reason.",
	}, []string{"source", "reason"})
	if reg != nil {
		var err error
		if syncErrors, err = Register(reg, syncErrors); err != nil {
			return nil, err
		}
		if lastSync, err = Register(reg, lastSync); err != nil {
			return nil, err
		}
		if rescans, err = Register(reg, rescans); err != nil {
			return nil, err
		}
	}
	return &Metrics{
		SyncErrors: syncErrors.WithLabelValues(source),
		LastSync:   lastSync.WithLabelValues(source),
		rescans:    rescans,
		source:     source,
	}, nil
}

// Register registers c with reg, or returns the collector already registered
// under the same descriptor, so that several sources (or replicas of one
// component) in one process share a metric.
func Register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
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
