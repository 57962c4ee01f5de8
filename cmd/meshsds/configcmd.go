package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// verifyTimeout bounds "meshsds config add"'s check that the admin API
// answers.
const verifyTimeout = 10 * time.Second

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage the control planes (admin APIs) the CLI talks to",
		Long: `Manage the CLI config file: named control planes (admin API URL and the
certificate files to reach it) and the current one, which every verb uses
unless told otherwise, like kubectl contexts or kumactl's control planes.

The file is ~/.meshsds/config.yaml, or the path in MESHSDS_CONFIG. It holds
references to certificate and key files, not their content, and is written
with mode 0600.

Which admin API a verb calls: --api-url, or the control plane named by
--control-plane, if given; else MESHSDS_API_URL; else the current control
plane; else http://127.0.0.1:5681. --ca-cert-file, --client-cert-file and
--client-key-file (or MESHSDS_CA_CERT_FILE, MESHSDS_CLIENT_CERT_FILE,
MESHSDS_CLIENT_KEY_FILE) override the control plane's files.`,
		Example: `  meshsds config add local --api-url http://127.0.0.1:5681
  meshsds config use local
  meshsds config list`,
	}
	cmd.AddCommand(newConfigAddCommand(), newConfigUseCommand(), newConfigListCommand(), newConfigRemoveCommand())
	return cmd
}

// configFile resolves and loads the CLI config file.
func configFile() (string, *cliConfig, error) {
	path, err := cliConfigPath(os.Getenv)
	if err != nil {
		return "", nil, err
	}
	cfg, err := loadCLIConfig(path)
	return path, cfg, err
}

func newConfigAddCommand() *cobra.Command {
	var (
		cp         controlPlane
		overwrite  bool
		skipVerify bool
	)
	cmd := &cobra.Command{
		Use:   "add NAME --api-url URL",
		Short: "Add a control plane to the CLI config file and make it the current one",
		Long: `Add a control plane to the CLI config file and make it the current one.

Before saving, the command checks that the admin API answers (GET /meshes)
with the given certificates; --skip-verify saves without asking it (the
certificate files must still be readable). TLS verification of the server is
never turned off: give --ca-cert-file for a self-signed server certificate.
Relative certificate paths are stored as absolute ones.

kumactl's spellings are accepted too: --address for --api-url, --skip-check
for --skip-verify.`,
		Example: `  meshsds config add local --api-url http://127.0.0.1:5681
  meshsds config add prod --api-url https://cp.example.com:5682 \
    --ca-cert-file admin.crt --client-cert-file alice.pem --client-key-file alice.key
  meshsds config add staging --api-url https://cp.staging.example.com:5682 --ca-cert-file staging.crt --skip-verify
  meshsds config add prod --api-url https://cp2.example.com:5682 --ca-cert-file admin.crt --overwrite`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			cp.Name = args[0]
			if cp.URL == "" {
				return errors.New("--api-url is required: the URL of the admin API, e.g. https://cp.example.com:5682")
			}
			for _, p := range []*string{&cp.CACertFile, &cp.ClientCertFile, &cp.ClientKeyFile} {
				if *p == "" {
					continue
				}
				abs, err := filepath.Abs(*p)
				if err != nil {
					return err
				}
				*p = abs
			}
			// The entry on its own first, so that a bad name or URL is
			// reported as a flag, before the file is even read.
			if err := (&cliConfig{ControlPlanes: []controlPlane{cp}}).validate(); err != nil {
				return fmt.Errorf("control plane %q: %w", cp.Name, err)
			}
			path, cfg, err := configFile()
			if err != nil {
				return err
			}
			existing, exists := cfg.find(cp.Name)
			if exists && !overwrite {
				return fmt.Errorf("control plane %q already exists in %s (%s): add --overwrite to replace it", cp.Name, path, existing.URL)
			}
			conn := connection{URL: cp.URL, CACertFile: cp.CACertFile, ClientCertFile: cp.ClientCertFile, ClientKeyFile: cp.ClientKeyFile, From: "--api-url"}
			c, err := conn.client()
			if err != nil {
				return err
			}
			if !skipVerify {
				if err := verifyAdminAPI(cmd.Context(), c); err != nil {
					return fmt.Errorf("control plane %q not added: %w (add --skip-verify to add it anyway)", cp.Name, err)
				}
			}
			// Read again under the lock: another command may have written
			// the file while the admin API was checked.
			err = updateCLIConfig(path, func(cfg *cliConfig) error {
				existing, exists = cfg.find(cp.Name)
				if exists && !overwrite {
					return fmt.Errorf("control plane %q already exists in %s (%s): add --overwrite to replace it", cp.Name, path, existing.URL)
				}
				if exists {
					*existing = cp
				} else {
					cfg.ControlPlanes = append(cfg.ControlPlanes, cp)
				}
				cfg.Current = cp.Name
				return nil
			})
			if err != nil {
				return err
			}
			verb := "added"
			if exists {
				verb = "replaced"
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s control plane %q (%s) in %s\n", verb, cp.Name, cp.URL, path)
			fmt.Fprintf(out, "switched to control plane %q\n", cp.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cp.URL, "api-url", "", "URL of the admin API, http://host:port or https://host:port (required)")
	f.StringVar(&cp.URL, "address", "", "kumactl's name of --api-url")
	f.StringVar(&cp.CACertFile, "ca-cert-file", "", "CA that signed the admin API's server certificate (a reference is stored, not the content)")
	f.StringVar(&cp.ClientCertFile, "client-cert-file", "", "client certificate for an https admin API (a reference is stored)")
	f.StringVar(&cp.ClientKeyFile, "client-key-file", "", "key of --client-cert-file (a reference is stored)")
	f.BoolVar(&overwrite, "overwrite", false, "replace a control plane of the same name")
	f.BoolVar(&skipVerify, "skip-verify", false, "save without checking that the admin API answers")
	f.BoolVar(&skipVerify, "skip-check", false, "kumactl's name of --skip-verify")
	_ = f.MarkHidden("address")
	_ = f.MarkHidden("skip-check")
	mustRegister(cmd, "api-url", cobra.NoFileCompletions)
	return cmd
}

// verifyAdminAPI checks that c reaches a meshsds (or Kuma) admin API that
// accepts its credentials: GET /meshes answers a list.
func verifyAdminAPI(ctx context.Context, c *apiClient) error {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	var list struct {
		Items *json.RawMessage `json:"items"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/meshes", nil, &list); err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return fmt.Errorf("the admin API at %s answered GET /meshes with %d: %w", c.base, ae.Status, err)
		}
		return err
	}
	if list.Items == nil {
		return fmt.Errorf("%s does not look like a meshsds admin API: GET /meshes has no \"items\"", c.base)
	}
	return nil
}

func newConfigUseCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "use NAME",
		Aliases: []string{"switch"},
		Short:   "Make a control plane of the CLI config file the current one",
		Example: `  meshsds config use prod
  meshsds get meshes          # now asks prod's admin API`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeControlPlanes(os.Getenv, true),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := cliConfigPath(os.Getenv)
			if err != nil {
				return err
			}
			var cp controlPlane
			err = updateCLIConfig(path, func(cfg *cliConfig) error {
				found, ok := cfg.find(args[0])
				if !ok {
					return fmt.Errorf("no control plane %q in %s: \"meshsds config list\" shows them, \"meshsds config add\" adds one", args[0], path)
				}
				cp = *found
				cfg.Current = cp.Name
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "switched to control plane %q (%s)\n", cp.Name, cp.URL)
			if v := os.Getenv(envAPIURL); v != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: %s=%s is set and wins over the config file\n", envAPIURL, v)
			}
			return nil
		},
	}
}

func newConfigListCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the control planes of the CLI config file; * marks the current one",
		Example: `  meshsds config list
  meshsds config list -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, cfg, err := configFile()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "table":
				tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
				fmt.Fprintln(tw, "CURRENT\tNAME\tURL\tCA CERT\tCLIENT CERT")
				for _, cp := range cfg.ControlPlanes {
					cur := ""
					if cp.Name == cfg.Current {
						cur = "*"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur, cp.Name, cp.URL, dash(cp.CACertFile), dash(cp.ClientCertFile))
				}
				return tw.Flush()
			case "yaml", "json":
				raw, err := json.Marshal(cfg)
				if err != nil {
					return err
				}
				return printRaw(out, output, raw)
			}
			return fmt.Errorf("-o must be table, yaml or json, not %q", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	mustRegister(cmd, "output", fixedCompletion("table", "yaml", "json"))
	return cmd
}

func newConfigRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "remove NAME",
		Aliases:           []string{"rm"},
		Short:             "Remove a control plane from the CLI config file",
		Example:           `  meshsds config remove staging`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeControlPlanes(os.Getenv, true),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := cliConfigPath(os.Getenv)
			if err != nil {
				return err
			}
			wasCurrent := false
			err = updateCLIConfig(path, func(cfg *cliConfig) error {
				kept := cfg.ControlPlanes[:0]
				for _, cp := range cfg.ControlPlanes {
					if cp.Name != args[0] {
						kept = append(kept, cp)
					}
				}
				if len(kept) == len(cfg.ControlPlanes) {
					return fmt.Errorf("no control plane %q in %s: \"meshsds config list\" shows them", args[0], path)
				}
				cfg.ControlPlanes = kept
				wasCurrent = cfg.Current == args[0]
				if wasCurrent {
					cfg.Current = ""
				}
				return nil
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "removed control plane %q\n", args[0])
			if wasCurrent {
				fmt.Fprintf(out, "there is no current control plane now: the CLI calls %s until \"meshsds config use NAME\"\n", defaultAPIURL)
			}
			return nil
		},
	}
}
