package pki_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// testNow is the clock of every certificate test: certificates are built
// around it, so results do not depend on the wall clock.
var testNow = time.Date(2030, time.March, 1, 12, 0, 0, 0, time.UTC)

// newCert builds a test certificate valid around testNow unless spec says
// otherwise.
func newCert(t testing.TB, spec pkitest.Spec) *pki.KeyPair {
	t.Helper()
	spec.Now = testNow
	return pkitest.New(t, spec)
}

func TestParseCA(t *testing.T) {
	root := newCert(t, pkitest.Spec{CN: "root"})
	inter := newCert(t, pkitest.Spec{CN: "intermediate", Parent: root})
	rsaRoot := newCert(t, pkitest.Spec{CN: "rsa-root", Kind: pkitest.RSA})
	edRoot := newCert(t, pkitest.Spec{CN: "ed-root", Kind: pkitest.Ed25519})
	expired := newCert(t, pkitest.Spec{CN: "old", NotBefore: testNow.AddDate(-2, 0, 0), NotAfter: testNow.AddDate(-1, 0, 0)})
	future := newCert(t, pkitest.Spec{CN: "future", NotBefore: testNow.Add(time.Hour), NotAfter: testNow.AddDate(1, 0, 0)})
	leaf := newCert(t, pkitest.Spec{CN: "leaf", NotCA: true, KeyUsage: x509.KeyUsageDigitalSignature})
	noCertSign := newCert(t, pkitest.Spec{CN: "no-cert-sign", KeyUsage: x509.KeyUsageCRLSign})
	keyAgreement := newCert(t, pkitest.Spec{CN: "key-agreement", KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageKeyAgreement})
	expiredInter := newCert(t, pkitest.Spec{CN: "old-intermediate", Parent: root, NotBefore: testNow.AddDate(-2, 0, 0), NotAfter: testNow.Add(-time.Second)})
	otherRoot := newCert(t, pkitest.Spec{CN: "other-root"})
	interOfUnknownRoot := newCert(t, pkitest.Spec{CN: "intermediate-only", Parent: otherRoot})

	tests := []struct {
		name       string
		cert, key  []byte
		wantErr    string
		wantChain  []*pki.KeyPair
		wantIssued []*pki.KeyPair
		wantTrust  *pki.KeyPair
	}{
		{
			name: "self-signed ECDSA root, PKCS#8 key", cert: pkitest.CertsPEM(root), key: pkitest.KeyPEM(t, root.Key, pkitest.PKCS8),
			wantChain: []*pki.KeyPair{root}, wantTrust: root,
		},
		{
			name: "ECDSA root, EC PRIVATE KEY", cert: pkitest.CertsPEM(root), key: pkitest.KeyPEM(t, root.Key, pkitest.SEC1),
			wantChain: []*pki.KeyPair{root}, wantTrust: root,
		},
		{
			name: "EC PARAMETERS block before the key is skipped", cert: pkitest.CertsPEM(root),
			key:       append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}), pkitest.KeyPEM(t, root.Key, pkitest.SEC1)...),
			wantChain: []*pki.KeyPair{root}, wantTrust: root,
		},
		{
			name: "RSA root, RSA PRIVATE KEY", cert: pkitest.CertsPEM(rsaRoot), key: pkitest.KeyPEM(t, rsaRoot.Key, pkitest.PKCS1),
			wantChain: []*pki.KeyPair{rsaRoot}, wantTrust: rsaRoot,
		},
		{
			name: "RSA root, PKCS#8 key", cert: pkitest.CertsPEM(rsaRoot), key: pkitest.KeyPEM(t, rsaRoot.Key, pkitest.PKCS8),
			wantChain: []*pki.KeyPair{rsaRoot}, wantTrust: rsaRoot,
		},
		{
			name: "Ed25519 root", cert: pkitest.CertsPEM(edRoot), key: pkitest.KeyPEM(t, edRoot.Key, pkitest.PKCS8),
			wantChain: []*pki.KeyPair{edRoot}, wantTrust: edRoot,
		},
		{
			name: "intermediate and root", cert: pkitest.CertsPEM(inter, root), key: pkitest.KeyPEM(t, inter.Key, pkitest.PKCS8),
			wantChain: []*pki.KeyPair{inter, root}, wantIssued: []*pki.KeyPair{inter}, wantTrust: root,
		},
		{
			name: "intermediate without its root", cert: pkitest.CertsPEM(interOfUnknownRoot), key: pkitest.KeyPEM(t, interOfUnknownRoot.Key, pkitest.PKCS8),
			wantChain: []*pki.KeyPair{interOfUnknownRoot}, wantIssued: []*pki.KeyPair{interOfUnknownRoot}, wantTrust: interOfUnknownRoot,
		},
		{
			name: "text between blocks and trailing whitespace", cert: append(append([]byte("subject=CN=intermediate\n"), pkitest.CertsPEM(inter)...), append([]byte("issuer=CN=root\n"), append(pkitest.CertsPEM(root), "\n\n"...)...)...),
			key: pkitest.KeyPEM(t, inter.Key, pkitest.PKCS8), wantChain: []*pki.KeyPair{inter, root}, wantIssued: []*pki.KeyPair{inter}, wantTrust: root,
		},

		{
			name: "leaf is not a CA", cert: pkitest.CertsPEM(leaf), key: pkitest.KeyPEM(t, leaf.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 (CN=leaf) is not a CA: basic constraints must have CA:TRUE",
		},
		{
			name: "missing keyCertSign", cert: pkitest.CertsPEM(noCertSign), key: pkitest.KeyPEM(t, noCertSign.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 (CN=no-cert-sign) must have the keyCertSign key usage",
		},
		{
			name: "keyAgreement set", cert: pkitest.CertsPEM(keyAgreement), key: pkitest.KeyPEM(t, keyAgreement.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 (CN=key-agreement) must not have the keyAgreement key usage",
		},
		{
			name: "expired", cert: pkitest.CertsPEM(expired), key: pkitest.KeyPEM(t, expired.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 (CN=old) expired at " + testNow.AddDate(-1, 0, 0).Format(time.RFC3339),
		},
		{
			name: "not yet valid", cert: pkitest.CertsPEM(future), key: pkitest.KeyPEM(t, future.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 (CN=future) is not valid before " + testNow.Add(time.Hour).Format(time.RFC3339),
		},
		{
			name: "expired intermediate", cert: pkitest.CertsPEM(expiredInter, root), key: pkitest.KeyPEM(t, expiredInter.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 (CN=old-intermediate) expired at",
		},
		{
			name: "key of another certificate", cert: pkitest.CertsPEM(root), key: pkitest.KeyPEM(t, otherRoot.Key, pkitest.PKCS8),
			wantErr: "key: key does not match the certificate",
		},
		{
			name: "key of the root for an intermediate", cert: pkitest.CertsPEM(inter, root), key: pkitest.KeyPEM(t, root.Key, pkitest.PKCS8),
			wantErr: "key: key does not match the certificate",
		},
		{
			name: "wrong chain order", cert: pkitest.CertsPEM(root, inter), key: pkitest.KeyPEM(t, root.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 (CN=root) is not signed by certificate 2 (CN=intermediate) (the chain must list the signing CA first, then each issuer in turn)",
		},
		{
			name: "unrelated issuer", cert: pkitest.CertsPEM(inter, otherRoot), key: pkitest.KeyPEM(t, inter.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 (CN=intermediate) is not signed by certificate 2 (CN=other-root)",
		},
		{
			name: "empty cert and key", cert: nil, key: nil,
			wantErr: "cert: cannot be empty: no PEM-encoded certificate found; key: cannot be empty: no PEM-encoded private key found",
		},
		{
			name: "garbage cert", cert: []byte("not a certificate"), key: pkitest.KeyPEM(t, root.Key, pkitest.PKCS8),
			wantErr: "cert: no PEM-encoded certificate found",
		},
		{
			name: "trailing garbage after the chain", cert: append(pkitest.CertsPEM(root), "garbage"...), key: pkitest.KeyPEM(t, root.Key, pkitest.PKCS8),
			wantErr: "cert: unexpected data after certificate 1: only PEM CERTIFICATE blocks are allowed",
		},
		{
			name: "private key in the cert", cert: append(pkitest.CertsPEM(root), pkitest.KeyPEM(t, root.Key, pkitest.PKCS8)...), key: pkitest.KeyPEM(t, root.Key, pkitest.PKCS8),
			wantErr: `cert: PEM block 2 is "PRIVATE KEY": only CERTIFICATE blocks are allowed`,
		},
		{
			name: "corrupt certificate DER", cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), key: pkitest.KeyPEM(t, root.Key, pkitest.PKCS8),
			wantErr: "cert: certificate 1 cannot be parsed",
		},
		{
			name: "certificate as key", cert: pkitest.CertsPEM(root), key: pkitest.CertsPEM(root),
			wantErr: `key: PEM block is "CERTIFICATE": expected "PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY"`,
		},
		{
			name: "two keys", cert: pkitest.CertsPEM(root), key: append(pkitest.KeyPEM(t, root.Key, pkitest.PKCS8), pkitest.KeyPEM(t, root.Key, pkitest.SEC1)...),
			wantErr: "key: more than one PEM block: only one private key is allowed",
		},
		{
			name: "garbage key", cert: pkitest.CertsPEM(root), key: []byte("secret"),
			wantErr: "key: no PEM-encoded private key found",
		},
		{
			name: "trailing garbage after the key", cert: pkitest.CertsPEM(root), key: append(pkitest.KeyPEM(t, root.Key, pkitest.PKCS8), "x"...),
			wantErr: "key: unexpected data after the private key",
		},
		{
			name: "corrupt key DER", cert: pkitest.CertsPEM(root), key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
			wantErr: "key: cannot parse the EC PRIVATE KEY block",
		},
		{
			name: "encrypted key", cert: pkitest.CertsPEM(root), key: pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}),
			wantErr: "key: encrypted private keys are not supported",
		},
		{
			name: "RSA key in an EC block", cert: pkitest.CertsPEM(rsaRoot), key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaRoot.Key.(*rsa.PrivateKey))}),
			wantErr: "key: cannot parse the EC PRIVATE KEY block",
		},
		{
			name: "bad cert and bad key both reported", cert: pkitest.CertsPEM(leaf), key: []byte("x"),
			wantErr: "cert: certificate 1 (CN=leaf) is not a CA: basic constraints must have CA:TRUE; key: no PEM-encoded private key found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := pki.ParseCA(tt.cert, tt.key, testNow)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, ca)
				var cerr *pki.CAError
				require.ErrorAs(t, err, &cerr)
				return
			}
			require.NoError(t, err)
			require.Len(t, ca.Chain, len(tt.wantChain))
			h := sha256.New()
			for i, c := range tt.wantChain {
				require.Equal(t, c.Cert.Raw, ca.Chain[i].Raw)
				h.Write(c.Cert.Raw)
			}
			require.Equal(t, hex.EncodeToString(h.Sum(nil)), ca.Fingerprint)
			require.True(t, tt.wantChain[0].Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(ca.Key.Public()))
			require.Equal(t, string(pkitest.CertsPEM(tt.wantIssued...)), string(ca.IssuedChainPEM))
			require.Equal(t, string(pkitest.CertsPEM(tt.wantTrust)), string(ca.TrustBundlePEM))
		})
	}
}

func TestParseCAIsDeterministic(t *testing.T) {
	root := newCert(t, pkitest.Spec{CN: "root"})
	a, err := pki.ParseCA(pkitest.CertsPEM(root), pkitest.KeyPEM(t, root.Key, pkitest.PKCS8), testNow)
	require.NoError(t, err)
	b, err := pki.ParseCA(pkitest.CertsPEM(root), pkitest.KeyPEM(t, root.Key, pkitest.SEC1), testNow.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, a.Fingerprint, b.Fingerprint, "the fingerprint identifies the chain, not the key encoding or the time")
	require.Empty(t, a.IssuedChainPEM, "a self-signed root is never sent after a leaf")
}

func FuzzParseCA(f *testing.F) {
	root := newCert(f, pkitest.Spec{CN: "root"})
	inter := newCert(f, pkitest.Spec{CN: "intermediate", Parent: root})
	ed := newCert(f, pkitest.Spec{CN: "ed", Kind: pkitest.Ed25519})
	f.Add(pkitest.CertsPEM(root), pkitest.KeyPEM(f, root.Key, pkitest.PKCS8))
	f.Add(pkitest.CertsPEM(root), pkitest.KeyPEM(f, root.Key, pkitest.SEC1))
	f.Add(pkitest.CertsPEM(inter, root), pkitest.KeyPEM(f, inter.Key, pkitest.PKCS8))
	f.Add(pkitest.CertsPEM(root, inter), pkitest.KeyPEM(f, root.Key, pkitest.PKCS8))
	f.Add(pkitest.CertsPEM(ed), pkitest.KeyPEM(f, ed.Key, pkitest.PKCS8))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		ca, err := pki.ParseCA(certPEM, keyPEM, testNow)
		if err != nil {
			require.Nil(t, ca)
			var cerr *pki.CAError
			require.ErrorAs(t, err, &cerr)
			require.True(t, cerr.Cert != nil || cerr.Key != nil)
			return
		}
		require.NotEmpty(t, ca.Chain)
		require.NotNil(t, ca.Key)
		require.NotEmpty(t, ca.TrustBundlePEM)
		require.Len(t, ca.Fingerprint, 64)
	})
}
