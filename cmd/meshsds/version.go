package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshsds/meshsds/internal/buildinfo"
)

func newVersionCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this meshsds binary",
		Example: `  meshsds version
  meshsds version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildinfo.Get()
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			case "text":
				rev := info.Revision
				if rev == "" {
					rev = "unknown revision"
				} else if info.Modified {
					rev += ", modified"
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "meshsds %s (%s, %s)\n", info.Version, rev, info.GoVersion)
				return err
			default:
				return fmt.Errorf("-o must be text or json, not %q", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
