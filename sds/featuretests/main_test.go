package featuretests

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a stream or receive goroutine outlives its
// test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
