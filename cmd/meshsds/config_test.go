package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/cmd/meshsds/daemon"
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
		check func(t *testing.T, c *daemon.Config)
	}{
		{"defaults", nil, nil, func(t *testing.T, c *daemon.Config) {
			require.Equal(t, "127.0.0.1:5677", c.SDSAddress)
			require.Equal(t, ":5680", c.MetricsAddress)
			require.Equal(t, "127.0.0.1:5681", c.AdminAddress)
			require.Equal(t, "./meshsds-data", c.DataDir)
			require.Equal(t, "dataplane-token", c.Auth)
			require.Equal(t, "kuma-system", c.Namespace)
		}},
		{"file", []string{"--config", file}, nil, func(t *testing.T, c *daemon.Config) {
			require.Equal(t, []string{"/from/file/a", "/from/file/b"}, c.SecretsDirs)
			require.Equal(t, "127.0.0.1:1111", c.SDSAddress)
			require.Equal(t, "debug", c.LogLevel)
		}},
		{"env beats file", []string{"--config", file}, map[string]string{
			"MESHSDS_SDS_ADDRESS": "127.0.0.1:3333", "MESHSDS_SECRETS_DIR": "/env/a,/env/b",
		}, func(t *testing.T, c *daemon.Config) {
			require.Equal(t, "127.0.0.1:3333", c.SDSAddress)
			require.Equal(t, []string{"/env/a", "/env/b"}, c.SecretsDirs)
			require.Equal(t, "127.0.0.1:2222", c.MetricsAddress)
		}},
		{
			"flags beat env",
			[]string{"--config", file, "--sds-address", "127.0.0.1:4444", "--secrets-dir", "/flag"},
			map[string]string{"MESHSDS_SDS_ADDRESS": "127.0.0.1:3333"},
			func(t *testing.T, c *daemon.Config) {
				require.Equal(t, "127.0.0.1:4444", c.SDSAddress)
				require.Equal(t, []string{"/flag"}, c.SecretsDirs)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd, cfg, configFile := serveCommand()
			require.NoError(t, cmd.Flags().Parse(tc.args))
			getenv := func(k string) string { return tc.env[k] }
			_, err := applyLayers(cmd.Flags(), *configFile, getenv)
			require.NoError(t, err)
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
			_, err := applyLayers(cmd.Flags(), path, func(k string) string { return tc.env[k] })
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestSettingsErrorsSayWhereASettingCameFrom: a setting refused after the
// layers were applied names the variable or file that set it.
func TestSettingsErrorsSayWhereASettingCameFrom(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "meshsds.yaml")
	require.NoError(t, os.WriteFile(file, []byte("sds-address: 0.0.0.0:5677\n"), 0o600))
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"env", nil, map[string]string{"MESHSDS_ADMIN_ADDRESS": "0.0.0.0:15681"}, "(--admin-address from MESHSDS_ADMIN_ADDRESS)"},
		{"file", []string{"--config", file}, nil, "(--sds-address from config file " + file + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, cfg, configFile := serveCommand()
			require.NoError(t, cmd.Flags().Parse(tc.args))
			origins, err := applyLayers(cmd.Flags(), *configFile, func(k string) string { return tc.env[k] })
			require.NoError(t, err)
			err = withOrigin(cfg.Validate(), origins)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// A flag typed on the command line gets no note; names are matched
	// whole (--sds-address is not --sds-address-x).
	err := withOrigin(errors.New("--sds-address-x is bad"), map[string]string{"sds-address": "MESHSDS_SDS_ADDRESS"})
	require.EqualError(t, err, "--sds-address-x is bad")
	err = withOrigin(errors.New("--sds-address-x and --sds-address are bad"), map[string]string{"sds-address": "MESHSDS_SDS_ADDRESS"})
	require.EqualError(t, err, "--sds-address-x and --sds-address are bad (--sds-address from MESHSDS_SDS_ADDRESS)")
	require.NoError(t, withOrigin(nil, map[string]string{"sds-address": "MESHSDS_SDS_ADDRESS"}))
}

// TestMisspelledEnvironmentVariablesAreNamed: a MESHSDS_ variable that sets
// no flag is reported (by name only: its value may be a password); the
// serve flags', the CLI's, the examples' and the test harnesses'
// variables, and other programs', are not.
func TestMisspelledEnvironmentVariablesAreNamed(t *testing.T) {
	cmd := newServeCommand()
	got := unknownEnv(cmd.Flags(), []string{
		"MESHSDS_SDS_ADRESS=127.0.0.1:1",
		"MESHSDS_SECRETS_DIR=/a",
		"MESHSDS_API_URL=http://x",
		"MESHSDS_CONFIG=/c",
		"MESHSDS_CLIENT_KEY_FILE=/k",
		"MESHSDS_TOKEN=eyJ", // the README's quick start exports it
		"MESHSDS_BENCH_REPLICAS=10000",
		"MESHSDS_POSTGRESURL=postgres://u:pw@db/x",
		"MESHSDS=1",
		"HOME=/root",
		"PATH_MESHSDS_X=1",
	})
	require.Equal(t, []string{"MESHSDS_POSTGRESURL", "MESHSDS_SDS_ADRESS"}, got)
}
