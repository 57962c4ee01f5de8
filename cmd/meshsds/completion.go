package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newCompletionCommand is "meshsds completion SHELL": cobra's generators,
// with install commands and examples of our own. Defining it ourselves (cobra
// adds a default one only when the tree has none) keeps the script on the
// command's own output, so tests can read it.
func newCompletionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script for meshsds",
		Long: `Print the shell completion script for meshsds on standard output.

Completion covers verbs, flags, resource kinds, output formats, control plane
names from the CLI config file and, when the admin API answers within a
second, mesh and secret names. See "meshsds completion SHELL --help" for how
to install the script in each shell.`,
		Example: `  source <(meshsds completion bash)
  meshsds completion zsh > "${fpath[1]}/_meshsds"`,
	}
	type shell struct {
		name, long, example string
		gen                 func(cmd *cobra.Command) error
	}
	for _, s := range []shell{
		{
			name: "bash",
			long: `Print the bash completion script. It needs the bash-completion package
(apt-get install bash-completion, brew install bash-completion@2).

Load it in the current shell:

  source <(meshsds completion bash)

Load it in every new shell (Linux, then macOS with Homebrew):

  meshsds completion bash | sudo tee /etc/bash_completion.d/meshsds >/dev/null
  meshsds completion bash > $(brew --prefix)/etc/bash_completion.d/meshsds`,
			example: `  source <(meshsds completion bash)
  meshsds completion bash | sudo tee /etc/bash_completion.d/meshsds >/dev/null`,
			gen: func(cmd *cobra.Command) error { return cmd.Root().GenBashCompletionV2(cmd.OutOrStdout(), true) },
		},
		{
			name: "zsh",
			long: `Print the zsh completion script.

If completion is not yet enabled in your zsh, enable it once:

  echo "autoload -U compinit; compinit" >> ~/.zshrc

Load it in the current shell:

  source <(meshsds completion zsh)

Load it in every new shell (Linux, then macOS with Homebrew):

  meshsds completion zsh > "${fpath[1]}/_meshsds"
  meshsds completion zsh > $(brew --prefix)/share/zsh/site-functions/_meshsds`,
			example: `  source <(meshsds completion zsh)
  meshsds completion zsh > "${fpath[1]}/_meshsds"`,
			gen: func(cmd *cobra.Command) error { return cmd.Root().GenZshCompletion(cmd.OutOrStdout()) },
		},
		{
			name: "fish",
			long: `Print the fish completion script.

Load it in the current shell:

  meshsds completion fish | source

Load it in every new shell:

  meshsds completion fish > ~/.config/fish/completions/meshsds.fish`,
			example: `  meshsds completion fish | source
  meshsds completion fish > ~/.config/fish/completions/meshsds.fish`,
			gen: func(cmd *cobra.Command) error { return cmd.Root().GenFishCompletion(cmd.OutOrStdout(), true) },
		},
		{
			name: "powershell",
			long: `Print the PowerShell completion script.

Load it in the current shell:

  meshsds completion powershell | Out-String | Invoke-Expression

Load it in every new shell: add the line above to your PowerShell profile
(the file $PROFILE names).`,
			example: `  meshsds completion powershell | Out-String | Invoke-Expression
  Add-Content $PROFILE 'meshsds completion powershell | Out-String | Invoke-Expression'`,
			gen: func(cmd *cobra.Command) error {
				return cmd.Root().GenPowerShellCompletionWithDesc(cmd.OutOrStdout())
			},
		},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:                   s.name,
			Short:                 "Print the " + s.name + " completion script",
			Long:                  s.long,
			Example:               s.example,
			Args:                  cobra.NoArgs,
			DisableFlagsInUseLine: true,
			ValidArgsFunction:     cobra.NoFileCompletions,
			RunE:                  func(cmd *cobra.Command, _ []string) error { return s.gen(cmd) },
		})
	}
	return cmd
}

// completionTimeout bounds what a completion may spend asking the admin API:
// a shell waiting on TAB is worse than no suggestion.
const completionTimeout = time.Second

// fixedCompletion completes one of words, and never file names.
func fixedCompletion(words ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return words, cobra.ShellCompDirectiveNoFileComp
	}
}

// manifestFiles completes the files "meshsds apply -f" reads.
func manifestFiles(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return []string{"yaml", "yml", "json"}, cobra.ShellCompDirectiveFilterFileExt
}

// remoteNames lists the names of the resources at an admin API list path
// (/meshes, /meshes/{mesh}/secrets), for completion. Any failure (no server,
// a refused certificate, a broken config file) completes nothing: a
// completion must not print errors into the user's command line.
func remoteNames(ctx context.Context, cc *clientConfig, path string) []string {
	c, err := cc.client()
	if err != nil {
		return nil
	}
	c.http.Timeout = completionTimeout
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	var list struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	if _, err := c.do(ctx, http.MethodGet, path, nil, &list); err != nil {
		return nil
	}
	names := make([]string, 0, len(list.Items))
	for _, it := range list.Items {
		names = append(names, it.Name)
	}
	sort.Strings(names)
	return names
}

// completeMeshes completes a mesh name from the admin API.
func completeMeshes(cc *clientConfig) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return remoteNames(cmd.Context(), cc, "/meshes"), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeResource completes "KIND NAME" for get and delete: the kind from
// kinds, then a name of that kind from the admin API (a secret's mesh from
// -m, default otherwise).
func completeResource(cc *clientConfig, mesh *string, kinds ...string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return kinds, cobra.ShellCompDirectiveNoFileComp
		case 1:
			switch args[0] {
			case "mesh", "meshes":
				return remoteNames(cmd.Context(), cc, "/meshes"), cobra.ShellCompDirectiveNoFileComp
			case "secret", "secrets":
				m := *mesh
				if m == "" {
					m = "default"
				}
				return remoteNames(cmd.Context(), cc, "/meshes/"+url.PathEscape(m)+"/secrets"), cobra.ShellCompDirectiveNoFileComp
			case "global-secret", "global-secrets":
				return remoteNames(cmd.Context(), cc, "/globalsecrets"), cobra.ShellCompDirectiveNoFileComp
			}
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeControlPlanes completes the name of a control plane of the CLI
// config file: the one argument of "config use" and "config remove", or the
// value of --control-plane (whatever the arguments). Reading a local file is
// cheap, so this works offline.
func completeControlPlanes(getenv func(string) string, asArgument bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if asArgument && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		path, err := cliConfigPath(getenv)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		cfg, err := loadCLIConfig(path)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, cp := range cfg.ControlPlanes {
			out = append(out, cobra.CompletionWithDesc(cp.Name, cp.URL))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// mustRegister registers a flag completion; the flag is ours, so a failure
// is a programming error caught by the tests.
func mustRegister(cmd *cobra.Command, flag string, fn cobra.CompletionFunc) {
	if err := cmd.RegisterFlagCompletionFunc(flag, fn); err != nil {
		panic(fmt.Sprintf("completion of --%s on %q: %v", flag, strings.TrimSpace(cmd.CommandPath()), err))
	}
}
