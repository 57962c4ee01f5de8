package main

import (
	"bytes"
	"regexp"
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

// TestExamplesUseRealFlags parses the meshsds invocation of every example
// line (backslash continuations joined; pipes, redirections, comments and
// process substitution around it ignored) against the command tree, so an
// example cannot keep a renamed flag or a wrong number of arguments.
func TestExamplesUseRealFlags(t *testing.T) {
	invocation := regexp.MustCompile(`(?:^|[\s(|])meshsds\s+([^|)<>;#]*)`)
	checked := 0
	walk(newRootCommand(), func(c *cobra.Command) {
		text := strings.ReplaceAll(c.Example, "\\\n", " ")
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "#") {
				continue
			}
			for _, m := range invocation.FindAllStringSubmatch(line, -1) {
				args := shellWords(t, m[1])
				t.Run(c.CommandPath()+": meshsds "+strings.Join(args, " "), func(t *testing.T) {
					// A fresh tree: parsing sets flags.
					cmd, rest, err := newRootCommand().Find(args)
					require.NoError(t, err)
					require.NoError(t, cmd.ParseFlags(rest))
					require.NoError(t, cmd.ValidateArgs(cmd.Flags().Args()))
					require.NoError(t, cmd.ValidateRequiredFlags())
				})
				checked++
			}
		}
	})
	require.Greater(t, checked, 30)
}

// shellWords splits s as a POSIX shell would for plain words and single or
// double quotes, which is all the examples use.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var (
		words []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	require.Zero(t, quote, "unclosed quote in %q", s)
	if in {
		words = append(words, cur.String())
	}
	return words
}

func TestHelpShowsExamples(t *testing.T) {
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"delete", "--help"})
	require.NoError(t, root.Execute())
	require.Contains(t, out.String(), "Examples:\n  meshsds delete secret sample-secret -m default")
}

// TestWrongArgumentCountsSayWhatIsWanted: a verb given too few or too many
// arguments says what it takes, not only how many.
func TestWrongArgumentCountsSayWhatIsWanted(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get"}, `"meshsds get" takes a resource type (meshes, secrets, global-secrets), or a type and a name`},
		{[]string{"get", "secret", "a", "b"}, `"meshsds get" takes a resource type`},
		{[]string{"delete", "secret"}, `"meshsds delete" takes a resource type and a name (secret NAME`},
	} {
		_, err := runCLI(t, tc.args...)
		require.ErrorContains(t, err, tc.want, "meshsds %v", tc.args)
	}
}
