package meshconfig

import (
	"testing"
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// testNow is the clock of every certificate test: certificates are built
// around it, so results do not depend on the wall clock.
var testNow = time.Date(2030, time.March, 1, 12, 0, 0, 0, time.UTC)

// newCert builds a test certificate valid around testNow unless spec says
// otherwise.
func newCert(t testing.TB, spec pkitest.Spec) *pki.KeyPair {
	t.Helper()
	spec.Now = testNow
	return pkitest.New(t, spec)
}
