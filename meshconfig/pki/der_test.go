package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testCA makes a self-signed CA with key.
func testCA(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "der test CA", Organization: []string{"meshsds"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

// TestWorkloadDERMatchesX509 holds the hand-built certificate to exactly the
// bytes crypto/x509 would sign for the same template, for every CA key the
// fast path takes and for those it hands to crypto/x509.
func TestWorkloadDERMatchesX509(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	workload, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	uris := []*url.URL{
		{Scheme: "spiffe", Host: "default", Path: "/web"},
		{Scheme: "spiffe", Host: "default", Path: "/web-admin"},
		{Scheme: "kuma", Opaque: "//kuma.io/zone/east"},
		{Scheme: "kuma", Opaque: "//version/" + url.PathEscape("v 1/ä")},
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	var many []*url.URL
	for i := range 20 {
		many = append(many, &url.URL{Scheme: "spiffe", Host: "default", Path: fmt.Sprintf("/service-with-a-long-name-%d", i)})
	}
	highBit := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 127), big.NewInt(5))
	for _, tc := range []struct {
		name   string
		key    crypto.Signer
		ku     x509.KeyUsage
		end    time.Time
		uris   []*url.URL
		serial *big.Int
	}{
		{"p256", p256, x509.KeyUsageDigitalSignature, now.Add(24 * time.Hour), uris, big.NewInt(1234567890123)},
		{"p256 serial with the high bit set", p256, x509.KeyUsageDigitalSignature, now.Add(24 * time.Hour), uris, highBit},
		{"p256 long SAN list", p256, x509.KeyUsageDigitalSignature, now.Add(24 * time.Hour), many, highBit},
		{"p384 rsa-style usages", p384, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, now.Add(time.Hour), uris, big.NewInt(1)},
		{"p521 after 2049", p521, x509.KeyUsageDigitalSignature, time.Date(2051, 1, 1, 0, 0, 0, 0, time.UTC), uris, highBit},
		{"p256 no SANs", p256, x509.KeyUsageDigitalSignature, now.Add(time.Hour), nil, big.NewInt(300)},
		{"rsa CA (x509 path)", rsaKey, x509.KeyUsageDigitalSignature, now.Add(time.Hour), uris, big.NewInt(7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := testCA(t, tc.key)
			tmpl := &workloadTemplate{serial: tc.serial, notBefore: now.Add(-Backdate), notAfter: tc.end, keyUsage: tc.ku, uris: tc.uris}
			ours, err := createWorkloadCert(tmpl, parent, workload.Public(), tc.key)
			require.NoError(t, err)
			theirs, err := x509.CreateCertificate(rand.Reader, tmpl.x509(), parent, workload.Public(), tc.key)
			require.NoError(t, err)
			a, err := x509.ParseCertificate(ours)
			require.NoError(t, err)
			b, err := x509.ParseCertificate(theirs)
			require.NoError(t, err)
			require.Equal(t, b.RawTBSCertificate, a.RawTBSCertificate)
			require.Equal(t, b.SignatureAlgorithm, a.SignatureAlgorithm)
			require.NoError(t, a.CheckSignatureFrom(parent))
		})
	}
}

func TestAppendPEMIsPEM(t *testing.T) {
	for n := range 200 {
		der := make([]byte, n)
		_, _ = rand.Read(der)
		want := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		got := appendPEM(nil, "CERTIFICATE", der)
		require.Equal(t, string(want), string(got), "%d bytes", n)
		require.Len(t, got, pemLen("CERTIFICATE", n))
		require.Equal(t, cap(got), len(got), "one allocation of the right size")
	}
}
