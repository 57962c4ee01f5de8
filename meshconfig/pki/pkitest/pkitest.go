// Package pkitest makes certificates and keys for tests: valid CAs in one
// call, and certificates that break one rule at a time (not a CA, a missing
// key usage, outside their validity) for the tests of the code that must
// refuse them. Everything is built with pki.Create.
package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// KeyKind selects the algorithm of a generated test key.
type KeyKind int

// Key kinds.
const (
	ECDSA KeyKind = iota // P-256
	RSA                  // 2048 bits
	Ed25519
)

// NewKey generates a key of the given kind.
func NewKey(t testing.TB, kind KeyKind) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case RSA:
		k, err = pki.GenerateKey(pki.KeyRSA, 2048)
	case Ed25519:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		k, err = pki.GenerateKey(pki.KeyECDSA, 0)
	}
	require.NoError(t, err)
	return k
}

// Spec describes a test certificate; zero values give a valid CA.
type Spec struct {
	CN   string        // "test-ca" when empty
	Kind KeyKind       // of the generated key
	Key  crypto.Signer // generated from Kind when nil
	// Parent signs the certificate; self-signed when nil.
	Parent    *pki.KeyPair
	NotCA     bool
	KeyUsage  x509.KeyUsage // keyCertSign|cRLSign (CA) or digitalSignature when zero
	NotBefore time.Time     // an hour before Now when zero
	NotAfter  time.Time     // a year after Now when zero
	URIs      []*url.URL
	// Now is the clock the validity defaults are set around; the wall
	// clock when zero.
	Now time.Time
}

// New builds the certificate spec describes.
func New(t testing.TB, spec Spec) *pki.KeyPair {
	t.Helper()
	if spec.Key == nil {
		spec.Key = NewKey(t, spec.Kind)
	}
	if spec.CN == "" {
		spec.CN = "test-ca"
	}
	if spec.Now.IsZero() {
		spec.Now = time.Now()
	}
	if spec.NotBefore.IsZero() {
		spec.NotBefore = spec.Now.Add(-time.Hour)
	}
	if spec.NotAfter.IsZero() {
		spec.NotAfter = spec.Now.AddDate(1, 0, 0)
	}
	kp, err := pki.Create(pki.Template{
		Subject:   pkix.Name{CommonName: spec.CN},
		NotBefore: spec.NotBefore,
		NotAfter:  spec.NotAfter,
		IsCA:      !spec.NotCA,
		KeyUsage:  spec.KeyUsage,
		URIs:      spec.URIs,
	}, spec.Key, spec.Parent)
	require.NoError(t, err)
	return kp
}

// NewRootCA makes a self-signed ECDSA root CA valid for a year.
func NewRootCA(t testing.TB, cn string) *pki.KeyPair {
	t.Helper()
	return New(t, Spec{CN: cn})
}

// NewIntermediateCA makes a CA signed by parent.
func NewIntermediateCA(t testing.TB, cn string, parent *pki.KeyPair) *pki.KeyPair {
	t.Helper()
	return New(t, Spec{CN: cn, Parent: parent})
}

// CertsPEM encodes the certificates of pairs as consecutive CERTIFICATE
// blocks, in order.
func CertsPEM(pairs ...*pki.KeyPair) []byte {
	var out []byte
	for _, p := range pairs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw})...)
	}
	return out
}

// KeyFormat selects the PEM form of a private key.
type KeyFormat int

// Key formats.
const (
	PKCS8 KeyFormat = iota
	SEC1            // "EC PRIVATE KEY"
	PKCS1           // "RSA PRIVATE KEY"
)

// KeyPEM encodes a private key in the given form.
func KeyPEM(t testing.TB, key crypto.Signer, format KeyFormat) []byte {
	t.Helper()
	var block *pem.Block
	switch format {
	case SEC1:
		der, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		require.NoError(t, err)
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case PKCS1:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))}
	default:
		der, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	return pem.EncodeToMemory(block)
}

// CA parses pair (and its issuers, in order) as the mesh CA it signs for.
func CA(t testing.TB, pair *pki.KeyPair, issuers ...*pki.KeyPair) *pki.CA {
	t.Helper()
	ca, err := pki.ParseCA(CertsPEM(append([]*pki.KeyPair{pair}, issuers...)...), pair.KeyPEM, time.Now())
	require.NoError(t, err)
	return ca
}
