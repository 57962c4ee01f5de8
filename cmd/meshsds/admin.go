package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshsds/meshsds/cmd/meshsds/daemon"
)

func newAdminCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "admin",
		Short:   "Maintain a server's store",
		Example: `  meshsds admin rotate-encryption-key --data-dir ./meshsds-data --encryption-key-file meshsds-keys`,
	}
	cmd.AddCommand(newRotateEncryptionKeyCommand())
	return cmd
}

func newRotateEncryptionKeyCommand() *cobra.Command {
	var dataDir, pgURL, keyFile string
	cmd := &cobra.Command{
		Use:   "rotate-encryption-key",
		Short: "Re-encrypt every record of a store with the first key of --encryption-key-file",
		Long: `Re-encrypt, online, every record of a server's store (the embedded store of
--data-dir, or PostgreSQL with --postgres-url) that is in plain text or
encrypted with another key than the first of --encryption-key-file. Servers
keep running: they read the key file again when it changes, and a record
written meanwhile is read again before it is rewritten.

To rotate: put a new key first in the key file (the servers then encrypt with
it), run this, then remove the old key from the file.`,
		Example: `  meshsds admin rotate-encryption-key --data-dir ./meshsds-data --encryption-key-file meshsds-keys
  MESHSDS_POSTGRES_URL=postgres://meshsds@db/meshsds meshsds admin rotate-encryption-key \
    --postgres-url "$MESHSDS_POSTGRES_URL" --encryption-key-file /etc/meshsds/keys`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" && pgURL == "" {
				dataDir = "./meshsds-data"
			}
			r, err := daemon.RotateEncryptionKey(cmd.Context(), dataDir, pgURL, keyFile)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "re-encrypted %d records; %d were encrypted with the first key already\n", r.Reencrypted, r.Kept)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "the server's --data-dir (embedded store; default ./meshsds-data)")
	f.StringVar(&pgURL, "postgres-url", "", "the servers' PostgreSQL store")
	f.StringVar(&keyFile, "encryption-key-file", "", "the key file; its first key encrypts")
	return cmd
}
