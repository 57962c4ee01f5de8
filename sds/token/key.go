package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SigningKeyFile is the name of the token signing key inside the data
// directory.
const SigningKeyFile = "dataplane-token-signing-key.pem"

// pemType is the PEM block type of a PKCS#8 private key.
const pemType = "PRIVATE KEY"

// LoadOrCreateSigningKey returns the dataplane token signing key kept in
// dataDir, creating dataDir (mode 0700) and the key (an ECDSA P-256 key in a
// PKCS#8 PEM file of mode 0600) on first use.
//
// Creation is safe against concurrent processes sharing dataDir: the key is
// written completely to a private temporary file and then hard-linked into
// place, which fails if the name already exists, so exactly one key wins and
// every loser reads the winner's key. An existing file that cannot be read or
// parsed is an error; it is never replaced, because replacing it would
// silently invalidate every token issued so far.
func LoadOrCreateSigningKey(dataDir string) (*ecdsa.PrivateKey, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	path := filepath.Join(dataDir, SigningKeyFile)
	key, err := readSigningKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := createSigningKey(dataDir, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	// Either we created the file or another process did first: read what is
	// there, so that every process uses the same key.
	return readSigningKey(path)
}

// readSigningKey reads and parses the key file at path.
func readSigningKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading token signing key: %w", err)
	}
	key, err := ParseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("token signing key %s: %w", path, err)
	}
	return key, nil
}

// createSigningKey generates a key and links it into place at path. It
// returns an error wrapping fs.ErrExist when path already exists.
func createSigningKey(dir, path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating token signing key: %w", err)
	}
	data, err := MarshalSigningKey(key)
	if err != nil {
		return err
	}
	// CreateTemp opens with O_CREATE|O_EXCL and mode 0600.
	tmp, err := os.CreateTemp(dir, "."+SigningKeyFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating token signing key: %w", err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // best effort; the link holds the data
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close() //nolint:errcheck,gosec // already failing
		return fmt.Errorf("creating token signing key: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close() //nolint:errcheck,gosec // already failing
		return fmt.Errorf("writing token signing key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close() //nolint:errcheck,gosec // already failing
		return fmt.Errorf("writing token signing key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing token signing key: %w", err)
	}
	// Link, unlike rename, never replaces an existing file.
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("installing token signing key: %w", err)
	}
	syncDir(dir)
	return nil
}

// syncDir makes a new directory entry durable where the platform allows it.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync() // not supported everywhere (e.g. Windows); the file itself is synced
	_ = d.Close()
}

// MarshalSigningKey encodes key as a PKCS#8 PEM block, the format of the
// signing key file.
func MarshalSigningKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding token signing key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// ParseSigningKey decodes a PKCS#8 PEM-encoded ECDSA P-256 private key, the
// format MarshalSigningKey writes.
func ParseSigningKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("PEM block type %q, want %q", block.Type, pemType)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing PKCS#8 key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want an ECDSA P-256 key", k)
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key is on curve %s, want P-256", key.Curve.Params().Name)
	}
	return key, nil
}
