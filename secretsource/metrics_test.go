package secretsource

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestSourcesShareOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewMetrics(reg, "file:/a")
	require.NoError(t, err)
	b, err := NewMetrics(reg, "api")
	require.NoError(t, err)
	a.SyncErrors.Inc()
	b.SyncErrors.Add(2)
	a.Rescans("periodic").Inc()
	require.InDelta(t, 1, testutil.ToFloat64(a.SyncErrors), 0)
	require.InDelta(t, 2, testutil.ToFloat64(b.SyncErrors), 0)
	n, err := testutil.GatherAndCount(reg, "meshsds_source_sync_errors_total")
	require.NoError(t, err)
	require.Equal(t, 2, n)
}
