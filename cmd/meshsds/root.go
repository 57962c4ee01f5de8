package main

import (
	"github.com/spf13/cobra"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "meshsds",
		Short: "Secret store and Envoy SDS server for service meshes",
		Long: `meshsds keeps Secret and Mesh resources, resolves each mesh's mutual-TLS CA,
issues every connected Envoy its own workload certificate and streams it, with
the mesh's trust bundle, over Envoy's Secret Discovery Service.

Run the daemon with "meshsds serve"; the other verbs are the CLI. The CLI
calls the admin API given by --api-url, MESHSDS_API_URL or the current
control plane of its config file ("meshsds config --help").`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand(), newApplyCommand(), newGetCommand(), newDeleteCommand(),
		newInspectCommand(), newGenerateCommand(), newAdminCommand(), newVersionCommand(),
		newConfigCommand(), newCompletionCommand())
	return root
}
