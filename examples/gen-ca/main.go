// Command gen-ca writes a self-signed root CA for trying meshsds out: the raw
// secrets "ca-cert" and "ca-key" that examples/secrets/mesh.yaml references.
//
//	go run ./examples/gen-ca -out examples/secrets/default
//
// The CA is an ECDSA P-256 key with a certificate valid for 10 years
// (backdated one minute) carrying the URI SAN spiffe://<mesh>. Files are
// written to a hidden temporary name and renamed into place, so a meshsds
// watching the directory never reads half a file. Existing files are kept
// unless -force is given.
package main

import (
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// File names of the generated raw secrets.
const (
	certFile = "ca-cert"
	keyFile  = "ca-key"
)

const (
	validity = 10 * 365 * 24 * time.Hour
	backdate = time.Minute
)

// meshName is a lenient RFC 1123 subdomain check, enough to build a URI.
var meshName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

func main() {
	if err := run(os.Args[1:], os.Stdout, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "gen-ca:", err)
		os.Exit(1)
	}
}

// run parses args, then writes the CA files unless they exist (and -force is
// not set), reporting what it did on out.
func run(args []string, out io.Writer, now time.Time) error {
	fl := flag.NewFlagSet("gen-ca", flag.ContinueOnError)
	fl.SetOutput(out)
	dir := fl.String("out", "examples/secrets/default", "directory to write "+certFile+" and "+keyFile+" into")
	mesh := fl.String("mesh", "default", "mesh name, used for the URI SAN spiffe://<mesh>")
	force := fl.Bool("force", false, "overwrite existing files")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fl.Args())
	}
	if !meshName.MatchString(*mesh) {
		return fmt.Errorf("-mesh %q: must be a lowercase RFC 1123 name", *mesh)
	}

	certPath, keyPath := filepath.Join(*dir, certFile), filepath.Join(*dir, keyFile)
	if !*force {
		certExists, err := exists(certPath)
		if err != nil {
			return err
		}
		keyExists, err := exists(keyPath)
		if err != nil {
			return err
		}
		switch {
		case certExists && keyExists:
			fmt.Fprintf(out, "%s and %s already exist in %s; keeping them (use -force to replace)\n", certFile, keyFile, *dir)
			return nil
		case certExists || keyExists:
			return fmt.Errorf("only one of %s and %s exists in %s; use -force to replace both", certFile, keyFile, *dir)
		}
	}

	certPEM, keyPEM, err := generate(*mesh, now)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", *dir, err)
	}
	// The key first: the certificate names the key, and a watcher that sees
	// the new key with the old certificate keeps its last good CA until the
	// certificate follows.
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s and %s (CA for mesh %q, URI SAN spiffe://%s)\n", certPath, keyPath, *mesh, *mesh)
	return nil
}

// generate returns a self-signed CA certificate and its PKCS#8 key, as PEM.
func generate(mesh string, now time.Time) (certPEM, keyPEM []byte, err error) {
	ca, err := pki.Create(pki.Template{
		Subject:   pkix.Name{Organization: []string{"meshsds example"}, CommonName: "meshsds example CA for mesh " + mesh},
		NotBefore: now.Add(-backdate),
		NotAfter:  now.Add(validity),
		IsCA:      true,
		URIs:      []*url.URL{{Scheme: "spiffe", Host: mesh}},
	}, nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("creating certificate: %w", err)
	}
	return ca.CertPEM, ca.KeyPEM, nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}

// writeAtomic writes data to a hidden temporary file (which the meshsds file
// source ignores) in path's directory and renames it over path.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after a successful rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
