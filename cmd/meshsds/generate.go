package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshsds/meshsds/sds/token"
)

func newGenerateCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "generate", Short: "Generate tokens and certificates"}
	cmd.AddCommand(newGenerateTokenCommand())
	return cmd
}

func newGenerateTokenCommand() *cobra.Command {
	var (
		dataDir  string
		mesh     string
		name     string
		tags     []string
		validFor time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dataplane-token",
		Short: "Generate a dataplane token (a JWT an Envoy presents to SDS)",
		Long: `Generate a dataplane token for the data plane <mesh>.<name>.

With --data-dir the token is signed offline with the key kept in that
directory (the same --data-dir as "meshsds serve"), for provisioning scripts on
the control-plane host. The token is printed on standard output.`,
		Example: `  meshsds generate dataplane-token --data-dir ./meshsds-data --mesh default --name web-1 \
    --tag kuma.io/service=web --valid-for 24h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return errors.New("give --data-dir DIR (the server's data directory): issuing through the admin API is not available yet")
			}
			if mesh == "" || name == "" {
				return errors.New("--mesh and --name are required")
			}
			parsed, err := token.ParseTags(tags)
			if err != nil {
				return err
			}
			key, err := token.LoadOrCreateSigningKey(dataDir)
			if err != nil {
				return err
			}
			raw, err := token.NewIssuer(key).Issue(token.Claims{Mesh: mesh, Name: name, Tags: parsed}, validFor, time.Now())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), raw)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "sign offline with the key in this data directory")
	f.StringVarP(&mesh, "mesh", "m", "", "mesh of the data plane")
	f.StringVar(&name, "name", "", "name of the data plane (its node id is <mesh>.<name>)")
	f.StringArrayVar(&tags, "tag", nil, "tag key=value (repeatable), e.g. kuma.io/service=web")
	f.DurationVar(&validFor, "valid-for", 365*24*time.Hour, "how long the token is valid")
	return cmd
}
