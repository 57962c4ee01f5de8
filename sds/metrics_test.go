package sds

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/sds/token"
)

// Every reason a token can be refused for is exported, at 0, before the
// first refusal (the other reasons are checked by featuretests' table of
// refusals).
func TestAuthFailureReasonsAreExportedFromTheStart(t *testing.T) {
	for _, err := range []error{
		token.ErrMalformed, token.ErrBadSignature, token.ErrExpired, token.ErrNotYetValid,
		token.ErrMissingClaim, fmt.Errorf("wrapped: %w", token.ErrExpired), errors.New("anything else"),
	} {
		require.Contains(t, authReasons, token.Reason(err), "token.Reason(%v)", err)
	}
	require.Contains(t, authReasons, errRevoked.Reason)

	reg := prometheus.NewRegistry()
	_, err := NewMetrics(reg)
	require.NoError(t, err)
	n, err := testutil.GatherAndCount(reg, "meshsds_sds_auth_failures_total")
	require.NoError(t, err)
	require.Equal(t, len(authReasons), n)
	require.Len(t, slices.Compact(slices.Sorted(slices.Values(authReasons))), len(authReasons), "a reason listed twice")
}
