package main

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// envName is the environment variable that sets a flag: MESHSDS_ and the
// flag name in upper case with dashes as underscores.
func envName(flag string) string {
	return "MESHSDS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// otherEnv are the MESHSDS_ variables that are not settings of serve: the
// CLI's, the placeholders of the example Envoy bootstraps (the README's
// quick start exports MESHSDS_TOKEN), and the test harnesses' (see
// DEVELOPERS.md), with otherEnvPrefixes.
var (
	otherEnv = []string{
		envAPIURL, envCLIConfig, envCACertFile, envClientCertFile, envClientKeyFile,
		"MESHSDS_TOKEN", "MESHSDS_TOKEN_FILE", "MESHSDS_SDS_CA",
		"MESHSDS_ENVOY", "MESHSDS_PG_BIN", "MESHSDS_KUBE_BIN", "MESHSDS_UI_SCREENSHOT",
	}
	otherEnvPrefixes = []string{"MESHSDS_BENCH_", "MESHSDS_SQLITE_HELPER_"}
)

// unknownEnv returns, sorted, the names of environ's MESHSDS_ variables
// that set no flag of fs and are none of otherEnv: most likely misspelled
// settings, which would otherwise be ignored without a word.
func unknownEnv(fs *pflag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	for _, name := range otherEnv {
		known[name] = true
	}
	fs.VisitAll(func(f *pflag.Flag) { known[envName(f.Name)] = true })
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		other := slices.ContainsFunc(otherEnvPrefixes, func(p string) bool { return strings.HasPrefix(name, p) })
		if strings.HasPrefix(name, "MESHSDS_") && !known[name] && !other {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	return unknown
}

// applyLayers fills every flag the command line did not set, first from the
// environment, then from the YAML config file (keys are flag names). Flags
// win over the environment, which wins over the file. An unknown key in the
// file is an error. It returns where each flag it set came from (the
// variable, or the config file), for withOrigin.
func applyLayers(fs *pflag.FlagSet, configPath string, getenv func(string) string) (map[string]string, error) {
	file := map[string]any{}
	if configPath != "" {
		data, err := os.ReadFile(configPath)
		if err != nil {
			return nil, fmt.Errorf("reading config file: %w", err)
		}
		if err := yaml.Unmarshal(data, &file); err != nil {
			return nil, fmt.Errorf("config file %s: %w", configPath, err)
		}
		var unknown []string
		for k := range file {
			if f := fs.Lookup(k); f == nil || k == "config" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return nil, fmt.Errorf("config file %s: unknown keys %s (keys are the flag names of meshsds serve)", configPath, strings.Join(unknown, ", "))
		}
	}
	var errs []string
	origins := map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := setFlag(fs, f, strings.Split(v, ",")); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", envName(f.Name), err))
			}
			origins[f.Name] = envName(f.Name)
			return
		}
		v, ok := file[f.Name]
		if !ok {
			return
		}
		var vals []string
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				vals = append(vals, fmt.Sprint(e))
			}
		default:
			vals = []string{fmt.Sprint(x)}
		}
		if err := setFlag(fs, f, vals); err != nil {
			errs = append(errs, fmt.Sprintf("config key %s: %v", f.Name, err))
		}
		origins[f.Name] = "config file " + configPath
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid settings: %s", strings.Join(errs, "; "))
	}
	return origins, nil
}

// withOrigin adds to an error that names flags (--name) which of them
// were set by the environment or the config file, and by which: an
// operator who never typed --admin-address should learn where it came
// from.
func withOrigin(err error, origins map[string]string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var notes []string
	for _, name := range slices.Sorted(maps.Keys(origins)) {
		flag := "--" + name
		for i := strings.Index(msg, flag); i >= 0; {
			end := i + len(flag)
			if end == len(msg) || !isFlagNameByte(msg[end]) {
				notes = append(notes, flag+" from "+origins[name])
				break
			}
			next := strings.Index(msg[end:], flag)
			if next < 0 {
				break
			}
			i = end + next
		}
	}
	if len(notes) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(notes, "; "))
}

func isFlagNameByte(b byte) bool {
	return b == '-' || ('a' <= b && b <= 'z') || ('0' <= b && b <= '9')
}

// setFlag sets f from vals: every value for a repeatable flag, the joined
// value otherwise.
func setFlag(fs *pflag.FlagSet, f *pflag.Flag, vals []string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return sv.Replace(vals)
	}
	return fs.Set(f.Name, strings.Join(vals, ","))
}
