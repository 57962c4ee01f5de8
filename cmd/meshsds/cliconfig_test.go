package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// badCLIConfigs lists, for each testdata/cliconfig/*.bad.yaml, the text its
// error must contain.
var badCLIConfigs = map[string]string{
	"unknown-key.bad.yaml":               `unknown field "contexts" (known keys: current, controlPlanes;`,
	"unknown-cp-key.bad.yaml":            `unknown field "skipVerify"`,
	"duplicate-key.bad.yaml":             `invalid YAML: yaml: unmarshal errors: line 2: key "current" already set in map`,
	"duplicate-name.bad.yaml":            `controlPlanes[1].name: "prod" is also the name of controlPlanes[0]`,
	"current-unknown.bad.yaml":           `current: "staging" is not the name of a control plane in controlPlanes`,
	"missing-url.bad.yaml":               `controlPlanes[0].url: cannot be empty`,
	"bad-url.bad.yaml":                   `controlPlanes[0].url: "cp.example.com:5682" must be http://host:port or https://host:port`,
	"url-with-password.bad.yaml":         `controlPlanes[0].url: must not hold a user or password`,
	"bad-name.bad.yaml":                  `controlPlanes[0].name: "prod cluster" must be 1 to 63 letters, digits, '.', '_' or '-'`,
	"empty-name.bad.yaml":                `controlPlanes[0].name: cannot be empty`,
	"cert-without-key.bad.yaml":          `controlPlanes[0]: clientCertFile and clientKeyFile go together`,
	"not-a-mapping.bad.yaml":             `must be a mapping with the keys current and controlPlanes, got array`,
	"control-planes-not-a-list.bad.yaml": `controlPlanes: must be a list, got object`,
	"invalid-yaml.bad.yaml":              `invalid YAML: yaml: line 3: did not find expected '-' indicator`,
	"several-errors.bad.yaml":            `controlPlanes[0].name: cannot be empty; controlPlanes[0].url: "ftp://cp.example.com" must be http://host:port or https://host:port (a path prefix is allowed); current: "nope" is not the name of a control plane in controlPlanes`,
}

var goodCLIConfigs = map[string]*cliConfig{
	"full.good.yaml": {Current: "prod", ControlPlanes: []controlPlane{
		{Name: "local", URL: "http://127.0.0.1:5681"},
		{
			Name: "prod", URL: "https://cp.example.com:5682", CACertFile: "/home/alice/.meshsds/prod-ca.crt",
			ClientCertFile: "certs/alice.pem", ClientKeyFile: "certs/alice.key",
		},
	}},
	"empty.good.yaml":         {},
	"comments-only.good.yaml": {},
	"no-current.good.yaml":    {ControlPlanes: []controlPlane{{Name: "lab.eu-west_1", URL: "https://lab.example.com/meshsds/"}}},
}

func TestCLIConfigFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/cliconfig/*.yaml")
	require.NoError(t, err)
	require.Len(t, files, len(badCLIConfigs)+len(goodCLIConfigs), "every testdata file has an expectation, and every expectation a file")
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			cfg, err := loadCLIConfig(f)
			if want, bad := badCLIConfigs[name]; bad {
				require.Error(t, err)
				require.Contains(t, err.Error(), "CLI config file "+f+": ", "the error names the file")
				require.Contains(t, err.Error(), want)
				require.NotContains(t, err.Error(), "\n", "one line")
				require.NotContains(t, err.Error(), "secret", "a password in a URL is never echoed")
				return
			}
			require.NoError(t, err)
			require.Equal(t, goodCLIConfigs[name], cfg)
		})
	}
}

func TestCLIConfigMissingFileIsEmpty(t *testing.T) {
	cfg, err := loadCLIConfig(filepath.Join(t.TempDir(), "nope", "config.yaml"))
	require.NoError(t, err)
	require.Equal(t, &cliConfig{}, cfg)
}

func TestCLIConfigTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte("# "+strings.Repeat("x", maxCLIConfigSize)), 0o600))
	_, err := loadCLIConfig(path)
	require.ErrorContains(t, err, "CLI config file "+path+": larger than")
}

func TestSaveCLIConfigIsAtomicAndPrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "config.yaml")
	cfg := goodCLIConfigs["full.good.yaml"]
	require.NoError(t, saveCLIConfig(path, cfg))

	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the file names client keys")
	got, err := loadCLIConfig(path)
	require.NoError(t, err)
	require.Equal(t, cfg, got)
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")

	// A symlinked config (a dotfiles repository) stays a symlink.
	real := filepath.Join(dir, "dotfiles", "meshsds.yaml")
	require.NoError(t, os.MkdirAll(filepath.Dir(real), 0o700))
	require.NoError(t, os.WriteFile(real, nil, 0o600))
	link := filepath.Join(dir, "link.yaml")
	require.NoError(t, os.Symlink(real, link))
	require.NoError(t, saveCLIConfig(link, cfg))
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.Equal(t, os.ModeSymlink, fi.Mode()&os.ModeType)
	got, err = loadCLIConfig(real)
	require.NoError(t, err)
	require.Equal(t, cfg, got)

	// An invalid config is never written.
	err = saveCLIConfig(path, &cliConfig{Current: "nope"})
	require.ErrorContains(t, err, "refusing to write an invalid config")
	got, err = loadCLIConfig(path)
	require.NoError(t, err)
	require.Equal(t, cfg, got)
}

func TestCLIConfigPath(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	p, err := cliConfigPath(env(map[string]string{envCLIConfig: "/etc/meshsds/cli.yaml"}))
	require.NoError(t, err)
	require.Equal(t, "/etc/meshsds/cli.yaml", p)

	t.Setenv("HOME", "/home/alice")
	p, err = cliConfigPath(env(nil))
	require.NoError(t, err)
	require.Equal(t, "/home/alice/.meshsds/config.yaml", p)
}

// FuzzDecodeCLIConfig: the decoder of a file users edit by hand never
// panics, and whatever it accepts survives a write and a read unchanged.
func FuzzDecodeCLIConfig(f *testing.F) {
	files, err := filepath.Glob("testdata/cliconfig/*.yaml")
	require.NoError(f, err)
	for _, file := range files {
		data, err := os.ReadFile(file)
		require.NoError(f, err)
		f.Add(data)
	}
	f.Add([]byte(`{"current":"a","controlPlanes":[{"name":"a","url":"http://[::1]:5681"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := decodeCLIConfig(data)
		if err != nil {
			require.Nil(t, cfg)
			return
		}
		require.NoError(t, cfg.validate())
		out, err := yaml.Marshal(cfg)
		require.NoError(t, err)
		again, err := decodeCLIConfig(out)
		require.NoError(t, err, "a written config must read back:\n%s", out)
		require.Equal(t, cfg, again)
	})
}
