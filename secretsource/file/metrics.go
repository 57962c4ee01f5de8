package file

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons of meshsds_source_rescans_total.
const (
	reasonEvent    = "event"
	reasonOverflow = "overflow"
	reasonPeriodic = "periodic"
)

// metrics are one Source's series. The vectors are shared by every Source on
// the same Registerer (one series per source name), so that several
// --secrets-dir flags can coexist.
type metrics struct {
	syncErrors prometheus.Counter
	lastSync   prometheus.Gauge
	rescans    map[string]prometheus.Counter
}

// newMetrics registers (or reuses) the source metric vectors on reg and
// returns the series of the source named source. A nil reg yields working but
// unexported series.
func newMetrics(reg prometheus.Registerer, source string) (*metrics, error) {
	syncErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "meshsds",
		Subsystem: "source",
		Name:      "sync_errors_total",
		Help:      "Errors while syncing a secret source: files that fail to parse, duplicate resources, watcher errors.",
	}, []string{"source"})
	lastSync := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "meshsds",
		Subsystem: "source",
		Name:      "last_sync_timestamp_seconds",
		Help:      "Unix time of the last complete scan of a secret source.",
	}, []string{"source"})
	rescans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "meshsds",
		Subsystem: "source",
		Name:      "rescans_total",
		Help:      "Full rescans of a secret source by reason (event, overflow, periodic).",
	}, []string{"source", "reason"})

	if reg != nil {
		var err error
		if syncErrors, err = register(reg, syncErrors); err != nil {
			return nil, err
		}
		if lastSync, err = register(reg, lastSync); err != nil {
			return nil, err
		}
		if rescans, err = register(reg, rescans); err != nil {
			return nil, err
		}
	}

	m := &metrics{
		syncErrors: syncErrors.WithLabelValues(source),
		lastSync:   lastSync.WithLabelValues(source),
		rescans:    make(map[string]prometheus.Counter, 3),
	}
	for _, reason := range []string{reasonEvent, reasonOverflow, reasonPeriodic} {
		m.rescans[reason] = rescans.WithLabelValues(source, reason)
	}
	return m, nil
}

// register registers c with reg, or returns the collector already registered
// under the same descriptor.
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
	return zero, fmt.Errorf("registering source metrics: %w", err)
}
