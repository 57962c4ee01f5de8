package main

import (
	"bytes"
	"encoding/json"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/buildinfo"
)

func TestVersionCommand(t *testing.T) {
	run := func(args ...string) (string, error) {
		cmd := newRootCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(append([]string{"version"}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := run()
	require.NoError(t, err)
	require.Regexp(t, `^meshsds \S+ \(.+, `+runtime.Version()+`\)\n$`, out)

	out, err = run("-o", "json")
	require.NoError(t, err)
	var info buildinfo.Info
	require.NoError(t, json.Unmarshal([]byte(out), &info))
	require.NotEmpty(t, info.Version)
	require.Equal(t, runtime.Version(), info.GoVersion)

	_, err = run("-o", "yaml")
	require.ErrorContains(t, err, "-o must be text or json")
}
