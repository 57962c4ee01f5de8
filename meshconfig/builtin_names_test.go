package meshconfig_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig"
)

func TestIsBuiltinSecretName(t *testing.T) {
	for _, tc := range []struct {
		mesh, name string
		want       bool
	}{
		{"default", "default.ca-builtin-cert-ca-1", true},
		{"default", "default.ca-builtin-key-ca-1", true},
		{"default", "other.ca-builtin-cert-ca-1", false},
		{"default", "default.ca-builtin-cert-", false},
		{"default", "default.ca-builtin-crt-ca-1", false},
		{"default", "ca-cert", false},
		{"a.b", "a.b.ca-builtin-key-x", true},
	} {
		require.Equal(t, tc.want, meshconfig.IsBuiltinSecretName(tc.mesh, tc.name), "%s %s", tc.mesh, tc.name)
	}
}
