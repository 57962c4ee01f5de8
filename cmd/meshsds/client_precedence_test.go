package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
)

// writeCLIConfig writes a CLI config file and returns its path.
func writeCLIConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func TestConnectionPrecedence(t *testing.T) {
	cfgFile := writeCLIConfig(t, `
current: prod
controlPlanes:
- name: prod
  url: https://prod.example.com:5682
  caCertFile: /etc/prod-ca.crt
  clientCertFile: certs/alice.pem
  clientKeyFile: certs/alice.key
- name: lab
  url: http://127.0.0.1:15681
`)
	cfgDir := filepath.Dir(cfgFile)
	noCurrent := writeCLIConfig(t, "controlPlanes:\n- name: lab\n  url: http://127.0.0.1:15681\n")
	broken := writeCLIConfig(t, "current: prod\ncontexts: []\n")
	missing := filepath.Join(t.TempDir(), "none.yaml")
	prod := connection{
		URL: "https://prod.example.com:5682", CACertFile: "/etc/prod-ca.crt",
		ClientCertFile: filepath.Join(cfgDir, "certs/alice.pem"), ClientKeyFile: filepath.Join(cfgDir, "certs/alice.key"),
		From: `control plane "prod" of ` + cfgFile,
	}

	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    connection
		wantErr string
	}{
		{
			name: "default without a config file",
			env:  map[string]string{envCLIConfig: missing},
			want: connection{URL: defaultAPIURL, From: "the default admin API URL"},
		},
		{
			name: "config file without a current control plane",
			env:  map[string]string{envCLIConfig: noCurrent},
			want: connection{URL: defaultAPIURL, From: "the default admin API URL"},
		},
		{
			name: "current control plane of the file, relative paths from its directory",
			env:  map[string]string{envCLIConfig: cfgFile},
			want: prod,
		},
		{
			name: "--control-plane picks another",
			args: []string{"--control-plane", "lab"},
			env:  map[string]string{envCLIConfig: cfgFile},
			want: connection{URL: "http://127.0.0.1:15681", From: `control plane "lab" of ` + cfgFile},
		},
		{
			name: "--control-plane beats the environment",
			args: []string{"--control-plane", "lab"},
			env:  map[string]string{envCLIConfig: cfgFile, envAPIURL: "http://env:5681"},
			want: connection{URL: "http://127.0.0.1:15681", From: `control plane "lab" of ` + cfgFile},
		},
		{
			name:    "--control-plane unknown",
			args:    []string{"--control-plane", "nope"},
			env:     map[string]string{envCLIConfig: cfgFile},
			wantErr: `--control-plane "nope": no such control plane in the CLI config file ` + cfgFile,
		},
		{
			name: "environment beats the file, whose certificates then do not apply",
			env:  map[string]string{envCLIConfig: cfgFile, envAPIURL: "https://env.example.com:5682"},
			want: connection{URL: "https://env.example.com:5682", From: envAPIURL},
		},
		{
			name: "flag beats the environment and the file",
			args: []string{"--api-url", "https://flag.example.com:5682"},
			env:  map[string]string{envCLIConfig: cfgFile, envAPIURL: "https://env.example.com:5682"},
			want: connection{URL: "https://flag.example.com:5682", From: "--api-url"},
		},
		{
			name: "a flag given with its default value still wins",
			args: []string{"--api-url", defaultAPIURL},
			env:  map[string]string{envCLIConfig: cfgFile, envAPIURL: "https://env.example.com:5682"},
			want: connection{URL: defaultAPIURL, From: "--api-url"},
		},
		{
			name: "certificate flags and variables override the file's, one by one",
			args: []string{"--ca-cert-file", "/flag/ca.crt"},
			env: map[string]string{
				envCLIConfig: cfgFile, envCACertFile: "/env/ca.crt",
				envClientCertFile: "/env/bob.pem", envClientKeyFile: "/env/bob.key",
			},
			want: connection{
				URL: prod.URL, From: prod.From,
				CACertFile: "/flag/ca.crt", ClientCertFile: "/env/bob.pem", ClientKeyFile: "/env/bob.key",
			},
		},
		{
			name: "certificate variables with the environment's URL",
			env:  map[string]string{envCLIConfig: cfgFile, envAPIURL: "https://env.example.com:5682", envCACertFile: "/env/ca.crt"},
			want: connection{URL: "https://env.example.com:5682", From: envAPIURL, CACertFile: "/env/ca.crt"},
		},
		{
			name: "a broken config file does not stand in the way of --api-url",
			args: []string{"--api-url", "http://127.0.0.1:5681"},
			env:  map[string]string{envCLIConfig: broken},
			want: connection{URL: "http://127.0.0.1:5681", From: "--api-url"},
		},
		{
			name:    "a broken config file is an error naming it when it is used",
			env:     map[string]string{envCLIConfig: broken},
			wantErr: `CLI config file ` + broken + `: unknown field "contexts"`,
		},
		{
			name:    "--api-url and --control-plane together",
			args:    []string{"--api-url", "http://a:1", "--control-plane", "lab"},
			env:     map[string]string{envCLIConfig: cfgFile},
			wantErr: "give --api-url or --control-plane, not both",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cc clientConfig
			cmd := &cobra.Command{Use: "get"}
			addClientFlags(cmd, &cc)
			require.NoError(t, cmd.ParseFlags(tc.args))
			got, err := cc.resolve(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestConnectionClientErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	for _, tc := range []struct {
		conn    connection
		wantErr string
	}{
		{connection{URL: "127.0.0.1:5681", From: envAPIURL}, `admin API URL (from MESHSDS_API_URL): "127.0.0.1:5681" must be http://host:port`},
		{connection{URL: "https://u:hunter2@cp:5682", From: "--api-url"}, "must not hold a user or password"},
		{connection{URL: "https://cp:5682", CACertFile: notPEM}, "CA certificate file " + notPEM + ": no PEM certificate in it"},
		{connection{URL: "https://cp:5682", CACertFile: filepath.Join(dir, "missing.crt")}, "missing.crt: no such file"},
		{connection{URL: "https://cp:5682", ClientCertFile: "a.pem"}, "--client-cert-file and --client-key-file go together"},
	} {
		_, err := tc.conn.client()
		require.ErrorContains(t, err, tc.wantErr)
		require.NotContains(t, err.Error(), "hunter2")
	}
}
