package daemon

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateStoreSettings(t *testing.T) {
	base := func() *Config {
		c := Defaults()
		return &c
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string // empty: valid
	}{
		{"sqlite", func(*Config) {}, ""},
		{"postgres", func(c *Config) { c.Store, c.PostgresURL = "postgres", "postgres://meshsds@db/meshsds" }, ""},
		{"postgres without url", func(c *Config) { c.Store = "postgres" }, "--store postgres needs --postgres-url"},
		{"url without postgres", func(c *Config) { c.PostgresURL = "postgres://meshsds@db/meshsds" }, "only used with --store postgres"},
		{"unknown store", func(c *Config) { c.Store = "etcd" }, "--store must be sqlite or postgres"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(c)
			err := c.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestValidateRefusesUnsafeAddresses(t *testing.T) {
	base := func() *Config {
		c := Defaults()
		c.SecretsDirs = []string{"/x"}
		return &c
	}
	require.NoError(t, base().Validate())
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"public sds without tls", func(c *Config) { c.SDSAddress = "0.0.0.0:5677" }, "not a loopback address"},
		{"public admin", func(c *Config) { c.AdminAddress = ":5681" }, "only allowed from this machine"},
		{"half tls", func(c *Config) { c.SDSTLSCert = "/c" }, "go together"},
		{"admin tls without client certs", func(c *Config) {
			c.AdminTLSAddress, c.AdminTLSCert, c.AdminTLSKey = "0.0.0.0:5682", "/c", "/k"
		}, "requires client certificates"},
		{"admin tls files without address", func(c *Config) { c.AdminTLSCert = "/c" }, "need --admin-tls-address"},
		{"bad auth", func(c *Config) { c.Auth = "x" }, "--auth"},
		{"bad workload key type", func(c *Config) { c.WorkloadKeyType = "dsa" }, "--workload-key-type"},
		{"every interface for the admin API", func(c *Config) { c.AdminAddress = "0.0.0.0:5681" }, "only allowed from this machine"},
		{"no SDS address", func(c *Config) { c.SDSAddress = "" }, "--sds-address must be set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(c)
			require.ErrorContains(t, c.Validate(), tc.want)
		})
	}
	for _, ok := range []func(*Config){
		func(c *Config) { c.SDSAddress = "0.0.0.0:5677"; c.SDSInsecure = true },
		func(c *Config) { c.SDSAddress = "unix:///run/meshsds.sock" },
		func(c *Config) { c.SDSAddress = "[::1]:5677" },
		func(c *Config) { c.SDSAddress = "localhost:5677" },
		func(c *Config) { c.SecretsDirs = nil }, // the admin API store is a source of its own
		func(c *Config) { c.AdminAddress = "" }, // no plain admin listener at all
	} {
		c := base()
		ok(c)
		require.NoError(t, c.Validate())
	}
}
