package meshconfig

import (
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// DefaultBuiltinCAValidity is the lifetime of a generated mesh CA.
const DefaultBuiltinCAValidity = 10 * 365 * 24 * time.Hour

// BuiltinConfig is the Config of a "builtin" backend.
type BuiltinConfig struct {
	CACert *BuiltinCACert `json:"caCert,omitempty"`
}

// BuiltinCACert shapes the CA meshsds generates.
type BuiltinCACert struct {
	// RSAbits selects an RSA key of that size; zero means ECDSA P-256.
	RSAbits int `json:"RSAbits,omitempty"`
	// Expiration is the CA's lifetime, e.g. "10y"; default 10 years.
	Expiration string `json:"expiration,omitempty"`
}

// ParseBuiltinConfig decodes and checks the config of a "builtin" backend.
func ParseBuiltinConfig(raw json.RawMessage) (*BuiltinConfig, error) {
	cfg := &BuiltinConfig{}
	if !isNullOrEmpty(raw) {
		if err := decodeKnown(raw, cfg); err != nil {
			return nil, err
		}
	}
	var verr ValidationError
	if c := cfg.CACert; c != nil {
		switch c.RSAbits {
		case 0, 2048, 3072, 4096:
		default:
			verr.Add("caCert.RSAbits", "must be 2048, 3072 or 4096 (or unset for ECDSA P-256)")
		}
		if c.Expiration != "" {
			d, err := parseDuration(c.Expiration)
			switch {
			case err != nil:
				verr.Add("caCert.expiration", err.Error())
			case d < 24*time.Hour:
				verr.Add("caCert.expiration", "must be at least 1d")
			}
		}
	}
	return cfg, verr.ErrOrNil()
}

// BuiltinSecretNames are the Secrets holding the generated CA of a builtin
// backend: "{mesh}.ca-builtin-cert-{backend}" and "{mesh}.ca-builtin-key-{backend}".
func BuiltinSecretNames(mesh, backend string) (cert, key string) {
	return mesh + ".ca-builtin-cert-" + backend, mesh + ".ca-builtin-key-" + backend
}

// IsBuiltinSecretName reports whether name is one of the Secrets of a
// builtin CA of mesh, whatever its backend.
func IsBuiltinSecretName(mesh, name string) bool {
	rest, ok := strings.CutPrefix(name, mesh+".ca-builtin-")
	if !ok {
		return false
	}
	backend, ok := strings.CutPrefix(rest, "cert-")
	if !ok {
		backend, ok = strings.CutPrefix(rest, "key-")
	}
	return ok && backend != ""
}

// GenerateBuiltinKey makes the private key of a builtin CA, as PKCS#8 PEM.
func GenerateBuiltinKey(cfg *BuiltinConfig) ([]byte, error) {
	kt, bits := pki.KeyECDSA, 0
	if cfg.CACert != nil && cfg.CACert.RSAbits != 0 {
		kt, bits = pki.KeyRSA, cfg.CACert.RSAbits
	}
	key, err := pki.GenerateKey(kt, bits)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	return pki.MarshalKeyPEM(key)
}

// GenerateBuiltinCert self-signs the CA certificate of mesh for keyPEM: URI
// SAN spiffe://<mesh>, keyCertSign and cRLSign, valid from a minute before
// now for the configured expiration.
func GenerateBuiltinCert(mesh string, cfg *BuiltinConfig, keyPEM []byte, now time.Time) ([]byte, error) {
	key, err := pki.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("builtin CA key: %w", err)
	}
	validity := DefaultBuiltinCAValidity
	if cfg.CACert != nil && cfg.CACert.Expiration != "" {
		if validity, err = parseDuration(cfg.CACert.Expiration); err != nil {
			return nil, err
		}
	}
	kp, err := pki.Create(pki.Template{
		Subject:   pkix.Name{Organization: []string{"meshsds"}, CommonName: "meshsds builtin CA for mesh " + mesh},
		NotBefore: now.Add(-time.Minute),
		NotAfter:  now.Add(validity),
		IsCA:      true,
		URIs:      []*url.URL{{Scheme: "spiffe", Host: mesh}},
	}, key, nil)
	if err != nil {
		return nil, fmt.Errorf("signing builtin CA: %w", err)
	}
	return kp.CertPEM, nil
}
