package file

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshsds/meshsds/secretsource"
)

// Reasons of meshsds_source_rescans_total.
const (
	reasonEvent    = "event"
	reasonOverflow = "overflow"
	reasonPeriodic = "periodic"
)

// metrics are one Source's series, shared with every other source on the
// same Registerer (see secretsource.Metrics).
type metrics struct {
	syncErrors prometheus.Counter
	lastSync   prometheus.Gauge
	rescans    map[string]prometheus.Counter
}

// newMetrics returns the series of the source named source.
func newMetrics(reg prometheus.Registerer, source string) (*metrics, error) {
	shared, err := secretsource.NewMetrics(reg, source)
	if err != nil {
		return nil, err
	}
	m := &metrics{syncErrors: shared.SyncErrors, lastSync: shared.LastSync, rescans: make(map[string]prometheus.Counter, 3)}
	for _, reason := range []string{reasonEvent, reasonOverflow, reasonPeriodic} {
		m.rescans[reason] = shared.Rescans(reason)
	}
	return m, nil
}
