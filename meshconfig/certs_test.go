package meshconfig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testNow is the clock of every certificate test: certificates are built
// around it, so results do not depend on the wall clock.
var testNow = time.Date(2030, time.March, 1, 12, 0, 0, 0, time.UTC)

// keyKind selects the key algorithm of a test certificate.
type keyKind int

const (
	keyECDSA keyKind = iota
	keyRSA
	keyEd25519
)

// certSpec describes a test certificate; zero values give a valid CA.
type certSpec struct {
	cn        string
	kind      keyKind
	key       crypto.Signer // generated from kind when nil
	parent    *testCert     // self-signed when nil
	notCA     bool
	keyUsage  x509.KeyUsage // KeyUsageCertSign|KeyUsageCRLSign when zero
	notBefore time.Time     // testNow-1h when zero
	notAfter  time.Time     // testNow+1 year when zero
}

// testCert is a generated certificate and its key.
type testCert struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// newKey generates a key of the given kind.
func newKey(t testing.TB, kind keyKind) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case keyRSA:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case keyEd25519:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	require.NoError(t, err)
	return k
}

// newCert builds a certificate from spec.
func newCert(t testing.TB, spec certSpec) *testCert {
	t.Helper()
	key := spec.key
	if key == nil {
		key = newKey(t, spec.kind)
	}
	if spec.cn == "" {
		spec.cn = "test-ca"
	}
	if spec.keyUsage == 0 {
		spec.keyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	if spec.notBefore.IsZero() {
		spec.notBefore = testNow.Add(-time.Hour)
	}
	if spec.notAfter.IsZero() {
		spec.notAfter = testNow.AddDate(1, 0, 0)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.cn},
		NotBefore:             spec.notBefore,
		NotAfter:              spec.notAfter,
		KeyUsage:              spec.keyUsage,
		BasicConstraintsValid: true,
		IsCA:                  !spec.notCA,
	}
	parent, signer := tmpl, key
	if spec.parent != nil {
		parent, signer = spec.parent.cert, spec.parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCert{cert: cert, key: key}
}

// certsPEM encodes certificates as consecutive CERTIFICATE blocks.
func certsPEM(certs ...*testCert) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})...)
	}
	return out
}

// keyFormat selects the PEM form of a private key.
type keyFormat int

const (
	formatPKCS8 keyFormat = iota
	formatSEC1            // "EC PRIVATE KEY"
	formatPKCS1           // "RSA PRIVATE KEY"
)

// keyPEM encodes a private key in the given form.
func keyPEM(t testing.TB, key crypto.Signer, format keyFormat) []byte {
	t.Helper()
	var block *pem.Block
	switch format {
	case formatSEC1:
		der, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		require.NoError(t, err)
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case formatPKCS1:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))}
	default:
		der, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	return pem.EncodeToMemory(block)
}
