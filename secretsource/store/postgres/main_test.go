package postgres_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshsds/meshsds/internal/testing/pgtest"
)

// TestMain shares one PostgreSQL server between the tests (each test has
// its own database), stops it, then checks for leaked goroutines: every
// Store must have closed its pool.
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
