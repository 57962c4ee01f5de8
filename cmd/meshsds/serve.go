package main

import (
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/meshsds/meshsds/cmd/meshsds/daemon"
	"github.com/meshsds/meshsds/secretsource/kube"
)

func newServeCommand() *cobra.Command {
	cmd, _, _ := serveCommand()
	return cmd
}

// serveCommand builds "meshsds serve" and the config its flags fill (and
// the --config file flag).
func serveCommand() (*cobra.Command, *daemon.Config, *string) {
	cfg := daemon.Defaults()
	configFile := new(string)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the meshsds daemon (SDS server, sources, metrics)",
		Long: `Run the meshsds daemon.

Every flag can also be set with the environment variable MESHSDS_<FLAG> (upper
case, dashes as underscores, e.g. MESHSDS_SECRETS_DIR) or as a key of the YAML
file given by --config (keys are the flag names). Flags win over the
environment, which wins over the file. An unknown key in the file is an
error; a MESHSDS_ variable that sets no flag is named in a warning.`,
		Example: `  # the example mesh of the repository, SDS on 127.0.0.1:5677
  meshsds serve --secrets-dir examples/secrets --data-dir meshsds-data

  # several replicas sharing PostgreSQL, SDS over TLS for remote data planes
  MESHSDS_POSTGRES_URL=postgres://meshsds@db:5432/meshsds meshsds serve --store postgres \
    --sds-address 0.0.0.0:5677 --sds-tls-cert sds.crt --sds-tls-key sds.key

  # in a Kubernetes pod, with the admission webhook
  meshsds serve --kubernetes --namespace kuma-system \
    --webhook-address :5443 --webhook-tls-cert tls.crt --webhook-tls-key tls.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			origins, err := applyLayers(cmd.Flags(), *configFile, os.Getenv)
			if err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return withOrigin(err, origins)
			}
			log := daemon.NewLogger(&cfg, os.Stderr)
			if unknown := unknownEnv(cmd.Flags(), os.Environ()); len(unknown) > 0 {
				log.Warn("ignoring environment variables that set no flag of meshsds serve: misspelled?", "vars", unknown)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			d, err := daemon.New(cmd.Context(), cfg, log, reg)
			if err != nil {
				return withOrigin(err, origins)
			}
			return d.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(configFile, "config", "", "YAML file with settings; keys are these flag names")
	f.StringArrayVar(&cfg.SecretsDirs, "secrets-dir", nil, "directory of Secret and Mesh manifests and raw secret files <dir>/<mesh>/<name>, watched for changes (repeatable; the first wins a conflict)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the embedded store (meshsds.db: API resources, token signing key)")
	f.StringVar(&cfg.SDSAddress, "sds-address", cfg.SDSAddress, "SDS gRPC address: host:port or unix:///path")
	f.StringVar(&cfg.AdminAddress, "admin-address", cfg.AdminAddress, "admin HTTP address (plain HTTP, loopback only; empty turns it off)")
	f.StringVar(&cfg.MetricsAddress, "metrics-address", cfg.MetricsAddress, "address of /metrics, /healthz and /readyz (empty turns it off)")
	f.StringVar(&cfg.Auth, "auth", cfg.Auth, "SDS authentication: dataplane-token, or none (local development only)")
	f.StringVar(&cfg.SDSTLSCert, "sds-tls-cert", "", "PEM certificate chain the SDS server presents (enables TLS)")
	f.StringVar(&cfg.SDSTLSKey, "sds-tls-key", "", "PEM private key of --sds-tls-cert")
	f.BoolVar(&cfg.SDSInsecure, "sds-insecure", false, "allow plain-text SDS on a non-loopback TCP address")
	f.StringVar(&cfg.SDSTransport, "sds-transport", cfg.SDSTransport, "gRPC server of the SDS port: grpclite (one goroutine per connection, the lightest) or grpc-go (grpc-go's own server)")
	f.IntVar(&cfg.SDSMaxConnections, "sds-max-connections", cfg.SDSMaxConnections, "open connections the SDS port accepts; beyond, new ones are closed (grpc-go: held back)")
	f.DurationVar(&cfg.SDSUnauthenticatedTimeout, "sds-unauthenticated-timeout", cfg.SDSUnauthenticatedTimeout, "how long an SDS connection may stay without a stream carrying a valid dataplane token before it is closed")
	f.IntVar(&cfg.SDSMaxConnectionBufferSize, "sds-max-connection-buffer", cfg.SDSMaxConnectionBufferSize, "bytes of incomplete or unread requests an SDS connection may have the server hold; beyond, its streams finish their requests one at a time (grpclite)")
	f.StringVar(&cfg.AdminTLSAddress, "admin-tls-address", "", "admin HTTPS address for remote access; requires client certificates")
	f.StringVar(&cfg.AdminTLSCert, "admin-tls-cert", "", "PEM certificate chain of the admin HTTPS server")
	f.StringVar(&cfg.AdminTLSKey, "admin-tls-key", "", "PEM key of --admin-tls-cert")
	f.StringVar(&cfg.AdminClientCertsDir, "admin-client-certs-dir", "", "directory of *.pem CAs (or self-signed client certificates) that admin clients must present a certificate from")
	f.BoolVar(&cfg.Kubernetes, "kubernetes", false, "read Kuma Secrets of --namespace and Mesh custom resources from Kubernetes, and keep the token signing key there")
	f.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "Kubernetes namespace of the control plane's Secrets")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration when empty")
	f.StringVar(&cfg.Webhook.Address, "webhook-address", "", "address of the validating admission webhook for Kuma Secrets and Meshes (HTTPS, path "+kube.WebhookPath+"; needs --kubernetes); off when empty")
	f.StringVar(&cfg.Webhook.TLSCert, "webhook-tls-cert", "", "PEM certificate chain of the webhook, for the name the API server calls (reloaded when the file changes)")
	f.StringVar(&cfg.Webhook.TLSKey, "webhook-tls-key", "", "PEM key of --webhook-tls-cert")
	f.StringVar(&cfg.Store, "store", cfg.Store, "durable store of the admin API and of the token signing key: sqlite (embedded in --data-dir) or postgres (shared by several replicas)")
	f.StringVar(&cfg.PostgresURL, "postgres-url", "", "PostgreSQL connection URL for --store postgres, e.g. postgres://meshsds@db:5432/meshsds?sslmode=verify-full (give a password in MESHSDS_POSTGRES_URL, the config file, PGPASSWORD or ~/.pgpass rather than on the command line)")
	f.StringVar(&cfg.EncryptionKeyFile, "encryption-key-file", "", "file of keys (ID:BASE64, one per line) that encrypt the store's secrets at rest; the first encrypts, all decrypt (meshsds generate encryption-key)")
	f.StringVar(&cfg.AuditLog, "audit-log", "", "write an audit log of admin API writes (JSON lines: who, what, when, never the payload) to this file, or - for standard output")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn or error")
	f.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log format: text or json")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/ on the metrics address")
	f.StringVar(&cfg.WorkloadKeyType, "workload-key-type", cfg.WorkloadKeyType, "key of workload certificates: ecdsa (P-256) or rsa (2048 bits)")
	f.DurationVar(&cfg.CARotationTimeout, "ca-rotation-timeout", cfg.CARotationTimeout, "how long each phase of a CA change waits for every connected data plane to ACK before going on without the laggards")
	f.DurationVar(&cfg.ReplicaLease, "replica-lease", cfg.ReplicaLease, "with --store postgres or --kubernetes, replicas share CA changes and elect a leader: how long a replica that stopped renewing its lease (one that died) is still waited for, and how soon a dead leader is replaced")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long to let streams and requests finish on shutdown")
	return cmd, &cfg, configFile
}
