package loadgen_test

import (
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/loadgen"
	"github.com/meshsds/meshsds/internal/testing/pgtest"
)

// TestBenchReplicas is the replicas row of "make bench-load": the
// benchmark of loadgen.Bench with three servers sharing a PostgreSQL that
// pgtest runs. It is a benchmark, not a test, and runs only when
// MESHSDS_BENCH_REPLICAS gives the fleet size (and MESHSDS_BENCH_MESHSDS
// and MESHSDS_BENCH_LOAD the binaries), as the Makefile sets them.
func TestBenchReplicas(t *testing.T) {
	size := os.Getenv("MESHSDS_BENCH_REPLICAS")
	if size == "" {
		t.Skip("a benchmark: make bench-load runs it (MESHSDS_BENCH_REPLICAS=<data planes>)")
	}
	n, err := strconv.Atoi(size)
	require.NoError(t, err)
	srv := pgtest.Start(t)
	rows, err := loadgen.Bench(t.Context(), loadgen.BenchConfig{
		Meshsds: os.Getenv("MESHSDS_BENCH_MESHSDS"), Load: os.Getenv("MESHSDS_BENCH_LOAD"),
		DataPlanes: []int{n}, Replicas: 3, API: loadgen.APISotW, Auth: "dataplane-token", Concurrency: 2000,
		NewDatabase: func() (string, error) { return srv.NewDatabase(t), nil },
		Log:         os.Stderr,
	})
	if len(rows) > 0 {
		loadgen.PrintTable(os.Stdout, rows)
	}
	require.NoError(t, err)
}
