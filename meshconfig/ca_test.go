package meshconfig

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
)

func TestParseCA(t *testing.T) {
	root := newCert(t, certSpec{cn: "root"})
	inter := newCert(t, certSpec{cn: "intermediate", parent: root})
	rsaRoot := newCert(t, certSpec{cn: "rsa-root", kind: keyRSA})
	edRoot := newCert(t, certSpec{cn: "ed-root", kind: keyEd25519})
	expired := newCert(t, certSpec{cn: "old", notBefore: testNow.AddDate(-2, 0, 0), notAfter: testNow.AddDate(-1, 0, 0)})
	future := newCert(t, certSpec{cn: "future", notBefore: testNow.Add(time.Hour), notAfter: testNow.AddDate(1, 0, 0)})
	leaf := newCert(t, certSpec{cn: "leaf", notCA: true, keyUsage: x509.KeyUsageDigitalSignature})
	noCertSign := newCert(t, certSpec{cn: "no-cert-sign", keyUsage: x509.KeyUsageCRLSign})
	keyAgreement := newCert(t, certSpec{cn: "key-agreement", keyUsage: x509.KeyUsageCertSign | x509.KeyUsageKeyAgreement})
	expiredInter := newCert(t, certSpec{cn: "old-intermediate", parent: root, notBefore: testNow.AddDate(-2, 0, 0), notAfter: testNow.Add(-time.Second)})
	otherRoot := newCert(t, certSpec{cn: "other-root"})
	interOfUnknownRoot := newCert(t, certSpec{cn: "intermediate-only", parent: otherRoot})

	tests := []struct {
		name       string
		cert, key  []byte
		wantErr    string
		wantChain  []*testCert
		wantIssued []*testCert
		wantTrust  *testCert
	}{
		{
			name: "self-signed ECDSA root, PKCS#8 key", cert: certsPEM(root), key: keyPEM(t, root.key, formatPKCS8),
			wantChain: []*testCert{root}, wantTrust: root,
		},
		{
			name: "ECDSA root, EC PRIVATE KEY", cert: certsPEM(root), key: keyPEM(t, root.key, formatSEC1),
			wantChain: []*testCert{root}, wantTrust: root,
		},
		{
			name: "EC PARAMETERS block before the key is skipped", cert: certsPEM(root),
			key:       append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}), keyPEM(t, root.key, formatSEC1)...),
			wantChain: []*testCert{root}, wantTrust: root,
		},
		{
			name: "RSA root, RSA PRIVATE KEY", cert: certsPEM(rsaRoot), key: keyPEM(t, rsaRoot.key, formatPKCS1),
			wantChain: []*testCert{rsaRoot}, wantTrust: rsaRoot,
		},
		{
			name: "RSA root, PKCS#8 key", cert: certsPEM(rsaRoot), key: keyPEM(t, rsaRoot.key, formatPKCS8),
			wantChain: []*testCert{rsaRoot}, wantTrust: rsaRoot,
		},
		{
			name: "Ed25519 root", cert: certsPEM(edRoot), key: keyPEM(t, edRoot.key, formatPKCS8),
			wantChain: []*testCert{edRoot}, wantTrust: edRoot,
		},
		{
			name: "intermediate and root", cert: certsPEM(inter, root), key: keyPEM(t, inter.key, formatPKCS8),
			wantChain: []*testCert{inter, root}, wantIssued: []*testCert{inter}, wantTrust: root,
		},
		{
			name: "intermediate without its root", cert: certsPEM(interOfUnknownRoot), key: keyPEM(t, interOfUnknownRoot.key, formatPKCS8),
			wantChain: []*testCert{interOfUnknownRoot}, wantIssued: []*testCert{interOfUnknownRoot}, wantTrust: interOfUnknownRoot,
		},
		{
			name: "text between blocks and trailing whitespace", cert: append(append([]byte("subject=CN=intermediate\n"), certsPEM(inter)...), append([]byte("issuer=CN=root\n"), append(certsPEM(root), "\n\n"...)...)...),
			key: keyPEM(t, inter.key, formatPKCS8), wantChain: []*testCert{inter, root}, wantIssued: []*testCert{inter}, wantTrust: root,
		},

		{
			name: "leaf is not a CA", cert: certsPEM(leaf), key: keyPEM(t, leaf.key, formatPKCS8),
			wantErr: "cert: certificate 1 (CN=leaf) is not a CA: basic constraints must have CA:TRUE",
		},
		{
			name: "missing keyCertSign", cert: certsPEM(noCertSign), key: keyPEM(t, noCertSign.key, formatPKCS8),
			wantErr: "cert: certificate 1 (CN=no-cert-sign) must have the keyCertSign key usage",
		},
		{
			name: "keyAgreement set", cert: certsPEM(keyAgreement), key: keyPEM(t, keyAgreement.key, formatPKCS8),
			wantErr: "cert: certificate 1 (CN=key-agreement) must not have the keyAgreement key usage",
		},
		{
			name: "expired", cert: certsPEM(expired), key: keyPEM(t, expired.key, formatPKCS8),
			wantErr: "cert: certificate 1 (CN=old) expired at " + testNow.AddDate(-1, 0, 0).Format(time.RFC3339),
		},
		{
			name: "not yet valid", cert: certsPEM(future), key: keyPEM(t, future.key, formatPKCS8),
			wantErr: "cert: certificate 1 (CN=future) is not valid before " + testNow.Add(time.Hour).Format(time.RFC3339),
		},
		{
			name: "expired intermediate", cert: certsPEM(expiredInter, root), key: keyPEM(t, expiredInter.key, formatPKCS8),
			wantErr: "cert: certificate 1 (CN=old-intermediate) expired at",
		},
		{
			name: "key of another certificate", cert: certsPEM(root), key: keyPEM(t, otherRoot.key, formatPKCS8),
			wantErr: "key: key does not match the certificate",
		},
		{
			name: "key of the root for an intermediate", cert: certsPEM(inter, root), key: keyPEM(t, root.key, formatPKCS8),
			wantErr: "key: key does not match the certificate",
		},
		{
			name: "wrong chain order", cert: certsPEM(root, inter), key: keyPEM(t, root.key, formatPKCS8),
			wantErr: "cert: certificate 1 (CN=root) is not signed by certificate 2 (CN=intermediate) (the chain must list the signing CA first, then each issuer in turn)",
		},
		{
			name: "unrelated issuer", cert: certsPEM(inter, otherRoot), key: keyPEM(t, inter.key, formatPKCS8),
			wantErr: "cert: certificate 1 (CN=intermediate) is not signed by certificate 2 (CN=other-root)",
		},
		{
			name: "empty cert and key", cert: nil, key: nil,
			wantErr: "cert: cannot be empty: no PEM-encoded certificate found; key: cannot be empty: no PEM-encoded private key found",
		},
		{
			name: "garbage cert", cert: []byte("not a certificate"), key: keyPEM(t, root.key, formatPKCS8),
			wantErr: "cert: no PEM-encoded certificate found",
		},
		{
			name: "trailing garbage after the chain", cert: append(certsPEM(root), "garbage"...), key: keyPEM(t, root.key, formatPKCS8),
			wantErr: "cert: unexpected data after certificate 1: only PEM CERTIFICATE blocks are allowed",
		},
		{
			name: "private key in the cert", cert: append(certsPEM(root), keyPEM(t, root.key, formatPKCS8)...), key: keyPEM(t, root.key, formatPKCS8),
			wantErr: `cert: PEM block 2 is "PRIVATE KEY": only CERTIFICATE blocks are allowed`,
		},
		{
			name: "corrupt certificate DER", cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), key: keyPEM(t, root.key, formatPKCS8),
			wantErr: "cert: certificate 1 cannot be parsed",
		},
		{
			name: "certificate as key", cert: certsPEM(root), key: certsPEM(root),
			wantErr: `key: PEM block is "CERTIFICATE": expected "PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY"`,
		},
		{
			name: "two keys", cert: certsPEM(root), key: append(keyPEM(t, root.key, formatPKCS8), keyPEM(t, root.key, formatSEC1)...),
			wantErr: "key: more than one PEM block: only one private key is allowed",
		},
		{
			name: "garbage key", cert: certsPEM(root), key: []byte("secret"),
			wantErr: "key: no PEM-encoded private key found",
		},
		{
			name: "trailing garbage after the key", cert: certsPEM(root), key: append(keyPEM(t, root.key, formatPKCS8), "x"...),
			wantErr: "key: unexpected data after the private key",
		},
		{
			name: "corrupt key DER", cert: certsPEM(root), key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
			wantErr: "key: cannot parse the EC PRIVATE KEY block",
		},
		{
			name: "encrypted key", cert: certsPEM(root), key: pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}),
			wantErr: "key: encrypted private keys are not supported",
		},
		{
			name: "RSA key in an EC block", cert: certsPEM(rsaRoot), key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaRoot.key.(*rsa.PrivateKey))}),
			wantErr: "key: cannot parse the EC PRIVATE KEY block",
		},
		{
			name: "bad cert and bad key both reported", cert: certsPEM(leaf), key: []byte("x"),
			wantErr: "cert: certificate 1 (CN=leaf) is not a CA: basic constraints must have CA:TRUE; key: no PEM-encoded private key found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := ParseCA(tt.cert, tt.key, testNow)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, ca)
				var verr *ValidationError
				require.ErrorAs(t, err, &verr)
				for _, c := range verr.Causes {
					require.Contains(t, []string{"cert", "key"}, c.Field)
				}
				return
			}
			require.NoError(t, err)
			require.Len(t, ca.Chain, len(tt.wantChain))
			h := sha256.New()
			for i, c := range tt.wantChain {
				require.Equal(t, c.cert.Raw, ca.Chain[i].Raw)
				h.Write(c.cert.Raw)
			}
			require.Equal(t, hex.EncodeToString(h.Sum(nil)), ca.Fingerprint)
			require.True(t, tt.wantChain[0].key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(ca.Key.Public()))
			require.Equal(t, string(certsPEM(tt.wantIssued...)), string(ca.IssuedChainPEM))
			require.Equal(t, string(certsPEM(tt.wantTrust)), string(ca.TrustBundlePEM))
		})
	}
}

func TestParseCAIsDeterministic(t *testing.T) {
	root := newCert(t, certSpec{cn: "root"})
	a, err := ParseCA(certsPEM(root), keyPEM(t, root.key, formatPKCS8), testNow)
	require.NoError(t, err)
	b, err := ParseCA(certsPEM(root), keyPEM(t, root.key, formatSEC1), testNow.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, a.Fingerprint, b.Fingerprint, "the fingerprint identifies the chain, not the key encoding or the time")
	require.Empty(t, a.IssuedChainPEM, "a self-signed root is never sent after a leaf")
}

func FuzzParseCA(f *testing.F) {
	root := newCert(f, certSpec{cn: "root"})
	inter := newCert(f, certSpec{cn: "intermediate", parent: root})
	ed := newCert(f, certSpec{cn: "ed", kind: keyEd25519})
	f.Add(certsPEM(root), keyPEM(f, root.key, formatPKCS8))
	f.Add(certsPEM(root), keyPEM(f, root.key, formatSEC1))
	f.Add(certsPEM(inter, root), keyPEM(f, inter.key, formatPKCS8))
	f.Add(certsPEM(root, inter), keyPEM(f, root.key, formatPKCS8))
	f.Add(certsPEM(ed), keyPEM(f, ed.key, formatPKCS8))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		ca, err := ParseCA(certPEM, keyPEM, testNow)
		if err != nil {
			require.Nil(t, ca)
			var verr *ValidationError
			require.ErrorAs(t, err, &verr)
			require.NotEmpty(t, verr.Causes)
			return
		}
		require.NotEmpty(t, ca.Chain)
		require.NotNil(t, ca.Key)
		require.NotEmpty(t, ca.TrustBundlePEM)
		require.Len(t, ca.Fingerprint, 64)
	})
}
