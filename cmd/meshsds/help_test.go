package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
)

// walk calls fn for cmd and every command below it.
func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, c := range cmd.Commands() {
		walk(c, fn)
	}
}

// TestEveryCommandHasAnExample keeps "--help" useful: every verb a user can
// run shows how, and every example calls the verb it documents.
func TestEveryCommandHasAnExample(t *testing.T) {
	var runnable []string
	walk(newRootCommand(), func(c *cobra.Command) {
		if !c.Runnable() {
			return
		}
		runnable = append(runnable, c.CommandPath())
		t.Run(c.CommandPath(), func(t *testing.T) {
			require.NotEmpty(t, strings.TrimSpace(c.Example), "%q has no Example: add realistic, copy-pasteable uses", c.CommandPath())
			require.Contains(t, c.Example, c.CommandPath(), "the examples of %q should call it", c.CommandPath())
			for _, line := range strings.Split(c.Example, "\n") {
				require.True(t, line == "" || strings.HasPrefix(line, "  "), "example lines are indented by two spaces, as cobra prints them: %q", line)
			}
		})
	})
	// The verbs the design and the README promise, so that none is lost
	// from the tree unnoticed.
	for _, want := range []string{
		"meshsds serve", "meshsds apply", "meshsds get", "meshsds delete", "meshsds inspect dataplanes",
		"meshsds generate dataplane-token", "meshsds generate tls-certificate", "meshsds version",
		"meshsds completion bash", "meshsds completion zsh", "meshsds completion fish", "meshsds completion powershell",
		"meshsds config add", "meshsds config use", "meshsds config list", "meshsds config remove",
	} {
		require.Contains(t, runnable, want)
	}
}

func TestHelpShowsExamples(t *testing.T) {
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"delete", "--help"})
	require.NoError(t, root.Execute())
	require.Contains(t, out.String(), "Examples:\n  meshsds delete secret sample-secret -m default")
}
