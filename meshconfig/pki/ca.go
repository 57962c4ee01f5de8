// Package pki is meshsds' one home for certificates and keys: parsing and
// checking a mesh CA (ParseCA), generating keys and CA or TLS certificates
// (GenerateKey, Create), and issuing workload certificates
// (IssueWorkloadCert), with a hand-built DER fast path for ECDSA CAs that
// signs a certificate once instead of twice. Every function is pure but for
// the random source; callers pass the time.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// maxChainLength bounds the certificates accepted in a CA chain.
const maxChainLength = 10

// PEM block types.
const (
	pemCertificate   = "CERTIFICATE"
	pemPKCS8         = "PRIVATE KEY"
	pemEC            = "EC PRIVATE KEY"
	pemRSA           = "RSA PRIVATE KEY"
	pemECParameters  = "EC PARAMETERS"
	pemEncryptedPKCS = "ENCRYPTED PRIVATE KEY"
)

// CA is a resolved certificate authority, ready to issue workload
// certificates. A CA is immutable once built and may be shared between
// goroutines.
type CA struct {
	// Chain holds the signing certificate first, then each issuer in turn.
	Chain []*x509.Certificate
	// Key is the private key of Chain[0].
	Key crypto.Signer
	// IssuedChainPEM is appended after an issued leaf: Chain in PEM, without
	// a trailing self-signed root.
	IssuedChainPEM []byte
	// TrustBundlePEM is what data planes trust: the last certificate of Chain
	// (the root when the chain reaches one).
	TrustBundlePEM []byte
	// Fingerprint is a hex SHA-256 over the chain's DER, identifying the CA.
	Fingerprint string
}

// SameCA reports whether a and b are both set and hold the same chain.
func SameCA(a, b *CA) bool {
	return a != nil && b != nil && a.Fingerprint == b.Fingerprint
}

// Expired reports whether any certificate of ca is outside its validity at
// now, which makes the CA useless.
func (ca *CA) Expired(now time.Time) bool {
	for _, c := range ca.Chain {
		if now.After(c.NotAfter) || now.Before(c.NotBefore) {
			return true
		}
	}
	return false
}

// CAError is why ParseCA refused a certificate chain and key: Cert and Key
// are the problems of each (either may be nil), for the caller to report
// under its own field names.
type CAError struct {
	Cert, Key error
}

func (e *CAError) Error() string {
	var parts []string
	if e.Cert != nil {
		parts = append(parts, "cert: "+e.Cert.Error())
	}
	if e.Key != nil {
		parts = append(parts, "key: "+e.Key.Error())
	}
	return strings.Join(parts, "; ")
}

// ParseCA builds a CA from PEM and checks it at time now.
//
// certPEM holds one or more CERTIFICATE blocks: the signing CA first, then
// each issuer in turn, optionally up to the root. Every certificate must be a
// CA with the keyCertSign key usage and without keyAgreement, valid at now,
// and signed by the next one. keyPEM holds the private key of the first
// certificate as PKCS#8, SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE
// KEY"); RSA, ECDSA and Ed25519 keys are accepted.
//
// Errors are a *CAError.
func ParseCA(certPEM, keyPEM []byte, now time.Time) (*CA, error) {
	var cerr CAError
	chain, err := parseChain(certPEM, now)
	if err != nil {
		cerr.Cert = err
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		cerr.Key = err
	}
	if chain != nil && key != nil && !publicKeyMatches(chain[0].PublicKey, key.Public()) {
		cerr.Key = errors.New("key does not match the certificate")
	}
	if cerr.Cert != nil || cerr.Key != nil {
		return nil, &cerr
	}
	return newCA(chain, key), nil
}

// ParseTrustedCA builds, from the certificate chain of a CA in PEM (checked
// as ParseCA checks it, at now), a CA that is only trusted: it has no Key
// and must not sign. It is how a replica trusts a CA whose key it never saw.
func ParseTrustedCA(certPEM []byte, now time.Time) (*CA, error) {
	chain, err := parseChain(certPEM, now)
	if err != nil {
		return nil, err
	}
	return newCA(chain, nil), nil
}

// ChainPEM is every certificate of ca's chain in PEM, as ParseTrustedCA
// reads it back.
func (ca *CA) ChainPEM() []byte {
	var out []byte
	for _, c := range ca.Chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Raw})...)
	}
	return out
}

// newCA derives the PEM forms and fingerprint of a checked chain.
func newCA(chain []*x509.Certificate, key crypto.Signer) *CA {
	var issued, all bytes.Buffer
	h := sha256.New()
	issuedCount := len(chain)
	if isSelfSigned(chain[len(chain)-1]) {
		issuedCount--
	}
	for i, c := range chain {
		h.Write(c.Raw)
		block := &pem.Block{Type: pemCertificate, Bytes: c.Raw}
		if i < issuedCount {
			_ = pem.Encode(&issued, block) // writing to a bytes.Buffer cannot fail
		}
		_ = pem.Encode(&all, block)
	}
	return &CA{
		Chain:          chain,
		Key:            key,
		IssuedChainPEM: issued.Bytes(),
		TrustBundlePEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: chain[len(chain)-1].Raw}),
		Fingerprint:    hex.EncodeToString(h.Sum(nil)),
	}
}

// parseChain decodes and checks the certificate chain of a CA.
func parseChain(data []byte, now time.Time) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n := len(chain) + 1
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("PEM block %d is %q: only CERTIFICATE blocks are allowed", n, block.Type)
		}
		if n > maxChainLength {
			return nil, fmt.Errorf("more than %d certificates", maxChainLength)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d cannot be parsed: %w", n, err)
		}
		chain = append(chain, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		if len(chain) == 0 {
			return nil, fmt.Errorf("no PEM-encoded certificate found")
		}
		return nil, fmt.Errorf("unexpected data after certificate %d: only PEM CERTIFICATE blocks are allowed", len(chain))
	}
	if len(chain) == 0 {
		return nil, errors.New("cannot be empty: no PEM-encoded certificate found")
	}
	for i, c := range chain {
		if err := checkCACertificate(c, now); err != nil {
			return nil, fmt.Errorf("%s %w", describeCert(i, c), err)
		}
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return nil, fmt.Errorf("%s is not signed by %s (the chain must list the signing CA first, then each issuer in turn): %w",
				describeCert(i, chain[i]), describeCert(i+1, chain[i+1]), err)
		}
	}
	return chain, nil
}

// checkCACertificate checks that c may sign workload certificates at now.
// The error completes a sentence about the certificate.
func checkCACertificate(c *x509.Certificate, now time.Time) error {
	switch {
	case !c.BasicConstraintsValid || !c.IsCA:
		return fmt.Errorf("is not a CA: basic constraints must have CA:TRUE")
	case c.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("must have the keyCertSign key usage")
	case c.KeyUsage&x509.KeyUsageKeyAgreement != 0:
		return fmt.Errorf("must not have the keyAgreement key usage")
	case now.After(c.NotAfter):
		return fmt.Errorf("expired at %s", c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("is not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	switch c.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("has an unsupported public key type %T", c.PublicKey)
	}
}

// describeCert names certificate i (0-based) of a chain for messages.
func describeCert(i int, c *x509.Certificate) string {
	subject := c.Subject.String()
	if subject == "" {
		subject = "serial " + c.SerialNumber.String()
	}
	return fmt.Sprintf("certificate %d (%s)", i+1, subject)
}

// isSelfSigned reports whether c is signed by its own key under its own name.
func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// ParsePrivateKey decodes the single private key of a PEM document. "EC PARAMETERS"
// blocks, as written by "openssl ecparam -genkey", are skipped.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	var key crypto.Signer
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == pemECParameters {
			continue
		}
		if key != nil {
			return nil, fmt.Errorf("more than one PEM block: only one private key is allowed")
		}
		k, err := parseKeyBlock(block)
		if err != nil {
			return nil, err
		}
		key = k
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		if key == nil {
			return nil, fmt.Errorf("no PEM-encoded private key found")
		}
		return nil, fmt.Errorf("unexpected data after the private key")
	}
	if key == nil {
		return nil, errors.New("cannot be empty: no PEM-encoded private key found")
	}
	return key, nil
}

// parseKeyBlock decodes one private key block.
func parseKeyBlock(block *pem.Block) (crypto.Signer, error) {
	var (
		k   any
		err error
	)
	switch block.Type {
	case pemPKCS8:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case pemEC:
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case pemRSA:
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case pemEncryptedPKCS:
		return nil, fmt.Errorf("encrypted private keys are not supported")
	default:
		return nil, fmt.Errorf("PEM block is %q: expected %q, %q or %q", block.Type, pemPKCS8, pemEC, pemRSA)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot parse the %s block: %w", block.Type, err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported private key type %T: expected RSA, ECDSA or Ed25519", k)
	}
}

// publicKeyMatches reports whether the certificate's public key is the
// public half of the private key.
func publicKeyMatches(certKey, keyPub crypto.PublicKey) bool {
	eq, ok := certKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(keyPub)
}
