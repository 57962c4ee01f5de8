package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateStoreSettings(t *testing.T) {
	base := func() *serveConfig {
		return &serveConfig{
			auth: "dataplane-token", sdsAddress: "127.0.0.1:5677",
			adminAddress: "127.0.0.1:5681", store: "sqlite", logLevel: "info", logFormat: "text", workloadKeyType: "ecdsa", sdsTransport: "grpclite",
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*serveConfig)
		want   string // empty: valid
	}{
		{"sqlite", func(*serveConfig) {}, ""},
		{"postgres", func(c *serveConfig) { c.store, c.postgresURL = "postgres", "postgres://meshsds@db/meshsds" }, ""},
		{"postgres without url", func(c *serveConfig) { c.store = "postgres" }, "--store postgres needs --postgres-url"},
		{"url without postgres", func(c *serveConfig) { c.postgresURL = "postgres://meshsds@db/meshsds" }, "only used with --store postgres"},
		{"unknown store", func(c *serveConfig) { c.store = "etcd" }, "--store must be sqlite or postgres"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(c)
			err := c.validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}
