package main

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshsds/meshsds/cmd/meshsds/daemon"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource/store"
)

func newGenerateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate tokens and certificates",
		Example: `  meshsds generate dataplane-token --mesh default --name web-1 --tag kuma.io/service=web
  meshsds generate tls-certificate --type client --cert-file alice.pem --key-file alice.key
  meshsds generate encryption-key --id 2026-12 > meshsds-keys`,
	}
	cmd.AddCommand(newGenerateTokenCommand(), newGenerateTLSCommand(), newGenerateEncryptionKeyCommand())
	return cmd
}

func newGenerateTokenCommand() *cobra.Command {
	var (
		cc       clientConfig
		dataDir  string
		pgURL    string
		keyFile  string
		mesh     string
		name     string
		tags     []string
		validFor time.Duration
		outFile  string
	)
	cmd := &cobra.Command{
		Use:   "dataplane-token",
		Short: "Generate a dataplane token (a JWT an Envoy presents to SDS)",
		Long: `Generate a dataplane token for the data plane <mesh>.<name>.

By default the admin API issues it (POST /tokens/dataplane). With --data-dir
the token is signed offline with the key kept in that directory (the same
--data-dir as "meshsds serve"), for provisioning scripts on the control-plane
host. The token is printed on standard output, or written to --output-file:
the token alone, without a newline (Envoy's file_based_metadata plugin
sends the file's bytes as they are, and a newline breaks every SDS stream),
mode 0600, replacing the file in one rename so that an Envoy reading it
never sees half a token.`,
		Example: `  meshsds generate dataplane-token --mesh default --name web-1 --tag kuma.io/service=web --valid-for 24h
  meshsds generate dataplane-token --data-dir ./meshsds-data --mesh default --name web-1 --tag kuma.io/service=web
  meshsds generate dataplane-token -m default --name backend-1 --tag kuma.io/service=backend --tag version=v2 > backend-1.token
  meshsds generate dataplane-token -m default --name web-1 --tag kuma.io/service=web --output-file /etc/envoy/token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if mesh == "" || name == "" {
				return errors.New("--mesh and --name are required")
			}
			parsed, err := token.ParseTags(tags)
			if err != nil {
				return err
			}
			var raw string
			if dataDir != "" || pgURL != "" {
				raw, err = offlineToken(cmd.Context(), dataDir, pgURL, keyFile, token.Claims{Mesh: mesh, Name: name, Tags: parsed}, validFor)
			} else {
				raw, err = onlineToken(cmd.Context(), &cc, mesh, name, parsed, validFor)
			}
			if err != nil {
				return err
			}
			raw = strings.TrimSpace(raw)
			if outFile != "" {
				if err := writePrivateFile(outFile, []byte(raw)); err != nil {
					return fmt.Errorf("--output-file: %w", err)
				}
				return nil
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), raw)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "sign offline with the key in this data directory instead of asking the admin API")
	f.StringVar(&pgURL, "postgres-url", "", "sign offline with the key in this PostgreSQL store (servers run with --store postgres)")
	f.StringVar(&keyFile, "encryption-key-file", "", "offline, the key file of a store encrypted at rest (the server's --encryption-key-file)")
	f.StringVarP(&mesh, "mesh", "m", "", "mesh of the data plane")
	f.StringVar(&name, "name", "", "name of the data plane (its node id is <mesh>.<name>)")
	f.StringArrayVar(&tags, "tag", nil, "tag key=value (repeatable), e.g. kuma.io/service=web")
	f.DurationVar(&validFor, "valid-for", 365*24*time.Hour, "how long the token is valid")
	f.StringVar(&outFile, "output-file", "", "write the token to this file (no newline, mode 0600, replaced atomically) instead of standard output")
	addClientFlags(cmd, &cc)
	mustRegister(cmd, "mesh", completeMeshes(&cc))
	mustRegister(cmd, "tag", fixedCompletion("kuma.io/service=", "kuma.io/zone=", "version="))
	return cmd
}

// offlineToken signs with the key kept in a server's store.
func offlineToken(ctx context.Context, dataDir, pgURL, keyFile string, c token.Claims, validFor time.Duration) (string, error) {
	key, closeFn, err := daemon.OfflineSigningKey(ctx, dataDir, pgURL, keyFile)
	if err != nil {
		return "", err
	}
	defer closeFn()
	return token.NewIssuer(key).Issue(c, validFor, time.Now())
}

// onlineToken asks the admin API for a token.
func onlineToken(ctx context.Context, cc *clientConfig, mesh, name string, tags map[string][]string, validFor time.Duration) (string, error) {
	c, err := cc.client()
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(map[string]any{"mesh": mesh, "name": name, "tags": tags, "validFor": validFor.String()})
	if err != nil {
		return "", err
	}
	var raw string
	if _, err := c.do(ctx, http.MethodPost, "/tokens/dataplane", body, &raw); err != nil {
		return "", err
	}
	return raw, nil
}

func newGenerateTLSCommand() *cobra.Command {
	var (
		kind      string
		certFile  string
		keyFile   string
		hostnames []string
		validFor  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "tls-certificate --type server|client --cert-file FILE --key-file FILE",
		Short: "Generate a self-signed certificate, e.g. for remote access to the admin API",
		Long: `Generate a self-signed ECDSA P-256 certificate and key.

For remote admin access: a "server" certificate for "meshsds serve
--admin-tls-cert/--admin-tls-key" (give every name clients use with
--hostname), and a "client" certificate for the CLI's --client-cert-file /
--client-key-file, whose certificate file you place, as a .pem file, in the
server's --admin-client-certs-dir.`,
		Example: `  meshsds generate tls-certificate --type server --hostname cp.example.com --cert-file admin.crt --key-file admin.key
  meshsds generate tls-certificate --type client --cert-file alice.pem --key-file alice.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if certFile == "" || keyFile == "" {
				return errors.New("--cert-file and --key-file are required")
			}
			certPEM, keyPEM, err := selfSigned(kind, hostnames, validFor, time.Now())
			if err != nil {
				return err
			}
			if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s certificate %s and key %s\n", kind, certFile, keyFile)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kind, "type", "", "server or client")
	mustRegister(cmd, "type", fixedCompletion("server", "client"))
	f.StringVar(&certFile, "cert-file", "", "where to write the certificate (PEM)")
	f.StringVar(&keyFile, "key-file", "", "where to write the private key (PEM, mode 0600)")
	f.StringArrayVar(&hostnames, "hostname", nil, "DNS name or IP of the server (repeatable; server type; default localhost and 127.0.0.1)")
	f.DurationVar(&validFor, "valid-for", 365*24*time.Hour, "validity")
	return cmd
}

// selfSigned makes a self-signed certificate for a TLS server or client.
func selfSigned(kind string, hostnames []string, validFor time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	tmpl := pki.Template{
		NotBefore: now.Add(-time.Minute),
		NotAfter:  now.Add(validFor),
		KeyUsage:  x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		// Self-signed: the certificate is its own trust anchor, so it must
		// be allowed to sign itself.
		IsCA: true,
	}
	switch kind {
	case "server":
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if len(hostnames) == 0 {
			hostnames = []string{"localhost", "127.0.0.1", "::1"}
		}
		tmpl.Subject = pkix.Name{CommonName: hostnames[0]}
		for _, h := range hostnames {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	case "client":
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.Subject = pkix.Name{CommonName: "meshsds-admin-client"}
	default:
		return nil, nil, fmt.Errorf("--type must be server or client, not %q", kind)
	}
	if validFor <= 0 {
		return nil, nil, errors.New("--valid-for must be positive")
	}
	kp, err := pki.Create(tmpl, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return kp.CertPEM, kp.KeyPEM, nil
}

func newGenerateEncryptionKeyCommand() *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "encryption-key",
		Short: "Generate a key for --encryption-key-file (secrets encrypted at rest)",
		Long: `Print a new key-encryption key, one line "ID:BASE64", for the file given to
"meshsds serve --encryption-key-file". The file's first key encrypts, every
key decrypts: to rotate, put a new key first, run
"meshsds admin rotate-encryption-key", then remove the old one.`,
		Example: `  umask 077; meshsds generate encryption-key --id 2026-12 > meshsds-keys
  (meshsds generate encryption-key --id 2027-06; cat meshsds-keys) > keys.new && mv keys.new meshsds-keys`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				id = time.Now().UTC().Format("20060102-150405")
			}
			line, err := store.GenerateKeyLine(id)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), line)
			return err
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "id of the key (default: the current UTC time)")
	return cmd
}
