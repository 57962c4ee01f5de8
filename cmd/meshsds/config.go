package main

import (
	"fmt"
	"os"
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

// applyLayers fills every flag the command line did not set, first from the
// environment, then from the YAML config file (keys are flag names). Flags
// win over the environment, which wins over the file. An unknown key in the
// file is an error.
func applyLayers(fs *pflag.FlagSet, configPath string, getenv func(string) string) error {
	file := map[string]any{}
	if configPath != "" {
		data, err := os.ReadFile(configPath)
		if err != nil {
			return fmt.Errorf("reading config file: %w", err)
		}
		if err := yaml.Unmarshal(data, &file); err != nil {
			return fmt.Errorf("config file %s: %w", configPath, err)
		}
		var unknown []string
		for k := range file {
			if f := fs.Lookup(k); f == nil || k == "config" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("config file %s: unknown keys %s (keys are the flag names of meshsds serve)", configPath, strings.Join(unknown, ", "))
		}
	}
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := setFlag(fs, f, strings.Split(v, ",")); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", envName(f.Name), err))
			}
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
	})
	if len(errs) > 0 {
		return fmt.Errorf("invalid settings: %s", strings.Join(errs, "; "))
	}
	return nil
}

// setFlag sets f from vals: every value for a repeatable flag, the joined
// value otherwise.
func setFlag(fs *pflag.FlagSet, f *pflag.Flag, vals []string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return sv.Replace(vals)
	}
	return fs.Set(f.Name, strings.Join(vals, ","))
}
