// Package testenv is what the test harnesses share about the machine the
// tests run on: where the meshsds module is, and what a test does when a
// tool it needs (Envoy, PostgreSQL, kube-apiserver, Chromium, ...) is not
// installed, and the ports the processes a test starts can listen on.
package testenv

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FindModuleRoot finds the directory of meshsds' go.mod above the working
// directory (a test runs in its package's directory).
func FindModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/meshsds/meshsds\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("meshsds' go.mod not found above the working directory")
		}
		dir = parent
	}
}

// ModuleRoot is FindModuleRoot for a test, which fails without it.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	root, err := FindModuleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// Missing ends a test that needs a tool this machine does not have: it is
// skipped locally, with msg saying how to install the tool, and fails in
// CI (the CI variable set), where .ci/run installs every tool, so that no
// test is skipped there unnoticed.
func Missing(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}
