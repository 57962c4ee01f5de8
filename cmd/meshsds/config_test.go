package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "meshsds.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
secrets-dir: [/from/file/a, /from/file/b]
sds-address: 127.0.0.1:1111
metrics-address: 127.0.0.1:2222
log-level: debug
`), 0o600))

	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *serveConfig)
	}{
		{"defaults", nil, nil, func(t *testing.T, c *serveConfig) {
			require.Equal(t, "127.0.0.1:5677", c.sdsAddress)
			require.Equal(t, ":5680", c.metricsAddress)
			require.Equal(t, "127.0.0.1:5681", c.adminAddress)
			require.Equal(t, "./meshsds-data", c.dataDir)
			require.Equal(t, "dataplane-token", c.auth)
			require.Equal(t, "kuma-system", c.namespace)
		}},
		{"file", []string{"--config", file}, nil, func(t *testing.T, c *serveConfig) {
			require.Equal(t, []string{"/from/file/a", "/from/file/b"}, c.secretsDirs)
			require.Equal(t, "127.0.0.1:1111", c.sdsAddress)
			require.Equal(t, "debug", c.logLevel)
		}},
		{"env beats file", []string{"--config", file}, map[string]string{
			"MESHSDS_SDS_ADDRESS": "127.0.0.1:3333", "MESHSDS_SECRETS_DIR": "/env/a,/env/b",
		}, func(t *testing.T, c *serveConfig) {
			require.Equal(t, "127.0.0.1:3333", c.sdsAddress)
			require.Equal(t, []string{"/env/a", "/env/b"}, c.secretsDirs)
			require.Equal(t, "127.0.0.1:2222", c.metricsAddress)
		}},
		{
			"flags beat env",
			[]string{"--config", file, "--sds-address", "127.0.0.1:4444", "--secrets-dir", "/flag"},
			map[string]string{"MESHSDS_SDS_ADDRESS": "127.0.0.1:3333"},
			func(t *testing.T, c *serveConfig) {
				require.Equal(t, "127.0.0.1:4444", c.sdsAddress)
				require.Equal(t, []string{"/flag"}, c.secretsDirs)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd, cfg := serveCommand()
			require.NoError(t, cmd.Flags().Parse(tc.args))
			getenv := func(k string) string { return tc.env[k] }
			require.NoError(t, applyLayers(cmd.Flags(), cfg.configFile, getenv))
			tc.check(t, cfg)
		})
	}
}

func TestSettingsErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"unknown key", "sds-adress: 1", nil, "unknown keys sds-adress"},
		{"not yaml", "a: [", nil, "config file"},
		{"bad env value", "", map[string]string{"MESHSDS_SDS_INSECURE": "maybe"}, "MESHSDS_SDS_INSECURE"},
		{"bad file value", "shutdown-timeout: soon", nil, "config key shutdown-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = filepath.Join(dir, tc.name+".yaml")
				require.NoError(t, os.WriteFile(path, []byte(tc.file), 0o600))
			}
			cmd := newServeCommand()
			require.NoError(t, cmd.Flags().Parse(nil))
			err := applyLayers(cmd.Flags(), path, func(k string) string { return tc.env[k] })
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestValidateRefusesUnsafeAddresses(t *testing.T) {
	base := func() *serveConfig {
		return &serveConfig{
			auth: "dataplane-token", secretsDirs: []string{"/x"}, sdsAddress: "127.0.0.1:5677",
			adminAddress: "127.0.0.1:5681", store: "sqlite", logLevel: "info", logFormat: "text", workloadKeyType: "ecdsa", sdsTransport: "grpclite",
		}
	}
	require.NoError(t, base().validate())
	for _, tc := range []struct {
		name   string
		mutate func(*serveConfig)
		want   string
	}{
		{"public sds without tls", func(c *serveConfig) { c.sdsAddress = "0.0.0.0:5677" }, "not a loopback address"},
		{"public admin", func(c *serveConfig) { c.adminAddress = ":5681" }, "only allowed from this machine"},
		{"half tls", func(c *serveConfig) { c.sdsTLSCert = "/c" }, "go together"},
		{"admin tls without client certs", func(c *serveConfig) {
			c.adminTLSAddress, c.adminTLSCert, c.adminTLSKey = "0.0.0.0:5682", "/c", "/k"
		}, "requires client certificates"},
		{"admin tls files without address", func(c *serveConfig) { c.adminTLSCert = "/c" }, "need --admin-tls-address"},
		{"bad auth", func(c *serveConfig) { c.auth = "x" }, "--auth"},
		{"bad workload key type", func(c *serveConfig) { c.workloadKeyType = "dsa" }, "--workload-key-type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(c)
			require.ErrorContains(t, c.validate(), tc.want)
		})
	}
	for _, ok := range []func(*serveConfig){
		func(c *serveConfig) { c.sdsAddress = "0.0.0.0:5677"; c.sdsInsecure = true },
		func(c *serveConfig) { c.sdsAddress = "unix:///run/meshsds.sock" },
		func(c *serveConfig) { c.sdsAddress = "[::1]:5677" },
		func(c *serveConfig) { c.sdsAddress = "localhost:5677" },
		func(c *serveConfig) { c.secretsDirs = nil }, // the admin API store is a source of its own
	} {
		c := base()
		ok(c)
		require.NoError(t, c.validate())
	}
}
