package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// The CLI config file remembers the admin APIs ("control planes") the CLI
// talks to, as kubectl's kubeconfig and kumactl's config do:
//
//	current: prod
//	controlPlanes:
//	- name: local
//	  url: http://127.0.0.1:5681
//	- name: prod
//	  url: https://cp.example.com:5682
//	  caCertFile: /home/alice/.meshsds/prod-ca.crt
//	  clientCertFile: /home/alice/.meshsds/alice.pem
//	  clientKeyFile: /home/alice/.meshsds/alice.key
//
// It lives in ~/.meshsds/config.yaml, or where MESHSDS_CONFIG says. Only the
// "meshsds config" verbs write it, one at a time, atomically and with mode
// 0600. The files
// it names are references, not copies; a relative path is relative to the
// config file's directory.

const (
	// defaultAPIURL is the admin API when nothing else names one.
	defaultAPIURL = "http://127.0.0.1:5681"
	// envAPIURL overrides the config file's current control plane.
	envAPIURL = "MESHSDS_API_URL"
	// envCLIConfig is the path of the CLI config file.
	envCLIConfig = "MESHSDS_CONFIG"
	// maxCLIConfigSize bounds what is read: the file is small, and a huge
	// one is a mistake (a wrong MESHSDS_CONFIG), not a config.
	maxCLIConfigSize = 1 << 20
)

// cliConfig is the CLI config file.
type cliConfig struct {
	// Current is the name of the control plane used when no flag or
	// environment variable names an admin API; empty for none.
	Current string `json:"current,omitempty"`
	// ControlPlanes are the known admin APIs, in the order they were added.
	ControlPlanes []controlPlane `json:"controlPlanes,omitempty"`
}

// controlPlane is how to reach one meshsds admin API.
type controlPlane struct {
	Name           string `json:"name"`
	URL            string `json:"url"`
	CACertFile     string `json:"caCertFile,omitempty"`
	ClientCertFile string `json:"clientCertFile,omitempty"`
	ClientKeyFile  string `json:"clientKeyFile,omitempty"`
}

// controlPlaneName is what a control plane may be called: something a shell
// completes and a YAML file holds without quoting.
var controlPlaneName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)

// cliConfigPath is MESHSDS_CONFIG, or ~/.meshsds/config.yaml.
func cliConfigPath(getenv func(string) string) (string, error) {
	if p := getenv(envCLIConfig); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the CLI config file: %w; set %s to its path", err, envCLIConfig)
	}
	return filepath.Join(home, ".meshsds", "config.yaml"), nil
}

// decodeCLIConfig parses and validates a CLI config file's content. Unknown
// and duplicate keys are errors. An empty file is an empty config.
func decodeCLIConfig(data []byte) (*cliConfig, error) {
	cfg := &cliConfig{}
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, nil
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		// yaml lists its errors on indented lines; one line reads better
		// after "CLI config file PATH: ".
		return nil, fmt.Errorf("invalid YAML: %s", strings.Join(strings.Fields(err.Error()), " "))
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return cfg, nil // only comments
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, explainJSONError(err)
	}
	if len(cfg.ControlPlanes) == 0 {
		cfg.ControlPlanes = nil // "controlPlanes: []" is no control plane, as a missing key is
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// explainJSONError turns encoding/json's wording into the field names of
// the file.
func explainJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Errorf("must be a mapping with the keys current and controlPlanes, got %s", te.Value)
		}
		return fmt.Errorf("%s: must be %s, got %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return errors.New(msg + " (known keys: current, controlPlanes; and in a control plane: name, url, caCertFile, clientCertFile, clientKeyFile)")
}

func jsonKind(k string) string {
	switch k {
	case "slice":
		return "a list"
	case "struct":
		return "a mapping"
	}
	return "a " + k
}

// validate checks every rule and reports every broken one, each naming its
// field.
func (c *cliConfig) validate() error {
	var errs []error
	seen := map[string]int{}
	for i, cp := range c.ControlPlanes {
		field := fmt.Sprintf("controlPlanes[%d]", i)
		switch {
		case cp.Name == "":
			errs = append(errs, fmt.Errorf("%s.name: cannot be empty", field))
		case !controlPlaneName.MatchString(cp.Name):
			errs = append(errs, fmt.Errorf("%s.name: %q must be 1 to 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", field, cp.Name))
		default:
			if j, dup := seen[cp.Name]; dup {
				errs = append(errs, fmt.Errorf("%s.name: %q is also the name of controlPlanes[%d]", field, cp.Name, j))
			} else {
				seen[cp.Name] = i
			}
		}
		if err := checkAPIURL(cp.URL); err != nil {
			errs = append(errs, fmt.Errorf("%s.url: %w", field, err))
		}
		if (cp.ClientCertFile == "") != (cp.ClientKeyFile == "") {
			errs = append(errs, fmt.Errorf("%s: clientCertFile and clientKeyFile go together", field))
		}
	}
	if c.Current != "" {
		if _, ok := seen[c.Current]; !ok {
			errs = append(errs, fmt.Errorf("current: %q is not the name of a control plane in controlPlanes", c.Current))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// checkAPIURL checks the form of an admin API URL.
func checkAPIURL(raw string) error {
	if raw == "" {
		return errors.New("cannot be empty")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil && strings.Contains(raw, "@"):
		return errors.New("must be http://host:port or https://host:port: it is not a URL") // and may hold a password
	case err != nil:
		return fmt.Errorf("%q must be http://host:port or https://host:port", raw)
	case u.User != nil:
		// Never echo it: it may hold a password.
		return errors.New("must not hold a user or password: the admin API authenticates clients by certificate")
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q must be http://host:port or https://host:port (a path prefix is allowed)", raw)
	}
	return nil
}

// find returns the control plane called name.
func (c *cliConfig) find(name string) (*controlPlane, bool) {
	for i := range c.ControlPlanes {
		if c.ControlPlanes[i].Name == name {
			return &c.ControlPlanes[i], true
		}
	}
	return nil, false
}

// loadCLIConfig reads the CLI config file at path. A missing file is an
// empty config, so that the first "meshsds config add" creates it.
func loadCLIConfig(path string) (*cliConfig, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &cliConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the CLI config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCLIConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the CLI config file %s: %w", path, err)
	}
	if len(data) > maxCLIConfigSize {
		return nil, fmt.Errorf("CLI config file %s: larger than %d bytes: is %s pointing at the right file?", path, maxCLIConfigSize, envCLIConfig)
	}
	cfg, err := decodeCLIConfig(data)
	if err != nil {
		return nil, fmt.Errorf("CLI config file %s: %w", path, err)
	}
	return cfg, nil
}

// saveCLIConfig writes cfg to path atomically (a temporary file in the same
// directory, synced, then renamed over the old one) with mode 0600: it
// names client keys. A symbolic link at path is followed, so a config kept
// in a dotfiles repository stays where it is.
func saveCLIConfig(path string, cfg *cliConfig) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("CLI config file %s: refusing to write an invalid config: %w", path, err)
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	header := []byte("# meshsds CLI config: written by \"meshsds config\" commands.\n")
	if err := writePrivateFile(path, append(header, data...)); err != nil {
		return fmt.Errorf("writing the CLI config file %s: %w", path, err)
	}
	return nil
}

// cliConfigLockWait bounds how long a "meshsds config" command waits for
// another one to finish with the file.
const cliConfigLockWait = 10 * time.Second

// updateCLIConfig reads the CLI config file at path, applies change and
// writes the result, holding a lock on the file's directory throughout, so
// that two "meshsds config" commands at once (two terminals, a script
// adding several control planes in parallel) do not lose either change.
// Nothing is written when change fails.
func updateCLIConfig(path string, change func(*cliConfig) error) error {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing the CLI config file %s: %w", path, err)
	}
	unlock, err := lockDir(dir, cliConfigLockWait)
	if err != nil {
		return fmt.Errorf("writing the CLI config file %s: %w", path, err)
	}
	defer unlock()
	cfg, err := loadCLIConfig(path)
	if err != nil {
		return err
	}
	if err := change(cfg); err != nil {
		return err
	}
	return saveCLIConfig(path, cfg)
}

// writePrivateFile replaces the file at path with data, readable by its
// owner only, so that a reader sees the old file or the new one, never a
// part (a temporary file in the same directory, synced, then renamed). A
// symbolic link at path is followed. Missing directories are created.
func writePrivateFile(path string, data []byte) error {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	for _, step := range []func() error{
		func() error { return tmp.Chmod(0o600) },
		func() error { _, err := tmp.Write(data); return err },
		tmp.Sync,
		tmp.Close,
		func() error { return os.Rename(tmp.Name(), path) },
	} {
		if err := step(); err != nil {
			tmp.Close()
			return err
		}
	}
	return nil
}
