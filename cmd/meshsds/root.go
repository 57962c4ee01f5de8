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
	serve := newServeCommand()
	if serve.Example == "" {
		serve.Example = serveExample
	}
	root.AddCommand(serve, newApplyCommand(), newGetCommand(), newDeleteCommand(),
		newInspectCommand(), newGenerateCommand(), newVersionCommand(), newConfigCommand(), newCompletionCommand())
	return root
}

// serveExample is the --help example of "meshsds serve". It is set here
// rather than in serve.go while that file is being restructured; it belongs
// in serveCommand once that settles.
const serveExample = `  # Files only: watch a secrets directory, SDS on 127.0.0.1:5677
  meshsds serve --secrets-dir ./secrets --data-dir ./meshsds-data

  # SDS for remote data planes over TLS, JSON logs
  meshsds serve --secrets-dir /etc/meshsds/secrets --sds-address 0.0.0.0:5677 \
    --sds-tls-cert /etc/meshsds/sds.crt --sds-tls-key /etc/meshsds/sds.key --log-format json

  # Remote admin API over HTTPS with client certificates
  meshsds serve --secrets-dir ./secrets --admin-tls-address 0.0.0.0:5682 \
    --admin-tls-cert admin.crt --admin-tls-key admin.key --admin-client-certs-dir ./clients

  # In Kubernetes, several replicas sharing a PostgreSQL store
  meshsds serve --kubernetes --namespace kuma-system --store postgres \
    --postgres-url 'postgres://meshsds@db:5432/meshsds?sslmode=verify-full'

  # Settings from a YAML file whose keys are the flag names
  meshsds serve --config /etc/meshsds/meshsds.yaml`
