package pki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

var workloadURIs = []*url.URL{{Scheme: "spiffe", Host: "default", Path: "/web"}, {Scheme: "kuma", Opaque: "//version/v1"}}

func TestIssueWorkloadCert(t *testing.T) {
	root := pkitest.NewRootCA(t, "root")
	inter := pkitest.NewIntermediateCA(t, "intermediate", root)
	ca := pkitest.CA(t, inter, root)
	now := time.Now().UTC().Truncate(time.Second)
	for _, kt := range []pki.KeyType{pki.KeyECDSA, pki.KeyRSA} {
		t.Run(string(kt), func(t *testing.T) {
			wc, err := pki.IssueWorkloadCert(ca, workloadURIs, time.Hour, kt, now)
			require.NoError(t, err)
			chain := wc.ChainPEM()
			leafBlock, rest := pem.Decode(chain)
			require.NotNil(t, leafBlock)
			require.Equal(t, string(inter.CertPEM), string(rest), "the intermediate follows the leaf; the root does not")
			leaf, err := x509.ParseCertificate(leafBlock.Bytes)
			require.NoError(t, err)
			roots := x509.NewCertPool()
			roots.AddCert(root.Cert)
			inters := x509.NewCertPool()
			inters.AddCert(inter.Cert)
			_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
			require.NoError(t, err)
			var got []string
			for _, u := range leaf.URIs {
				got = append(got, u.String())
			}
			require.Equal(t, []string{"spiffe://default/web", "kuma://version/v1"}, got)
			require.False(t, leaf.IsCA)
			require.Equal(t, now.Add(-pki.Backdate), leaf.NotBefore)
			require.Equal(t, now.Add(time.Hour), leaf.NotAfter)
			key, err := pki.ParsePrivateKey(wc.KeyPEM())
			require.NoError(t, err)
			switch kt {
			case pki.KeyRSA:
				require.IsType(t, &rsa.PrivateKey{}, key)
				require.NotZero(t, leaf.KeyUsage&x509.KeyUsageKeyEncipherment)
			default:
				require.IsType(t, &ecdsa.PrivateKey{}, key)
			}
			require.True(t, leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()))
		})
	}
}

func TestIssueWorkloadCertNeverOutlivesItsCA(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	short := pkitest.New(t, pkitest.Spec{CN: "short", NotAfter: now.Add(time.Hour)})
	wc, err := pki.IssueWorkloadCert(pkitest.CA(t, short), workloadURIs, 24*time.Hour, pki.KeyECDSA, now)
	require.NoError(t, err)
	require.Equal(t, short.Cert.NotAfter, wc.NotAfter)
}

func TestIssueWorkloadCertRefuses(t *testing.T) {
	ca := pkitest.CA(t, pkitest.NewRootCA(t, "root"))
	_, err := pki.IssueWorkloadCert(ca, workloadURIs, time.Hour, "dsa", time.Now())
	require.ErrorContains(t, err, `unknown workload key type "dsa"`)
	_, err = pki.IssueWorkloadCert(nil, workloadURIs, time.Hour, pki.KeyECDSA, time.Now())
	require.ErrorContains(t, err, "no CA")
}

func TestCreateAndParseKeyPair(t *testing.T) {
	now := time.Now()
	root, err := pki.Create(pki.Template{Subject: pkix.Name{CommonName: "root"}, NotBefore: now, NotAfter: now.Add(time.Hour), IsCA: true}, nil, nil)
	require.NoError(t, err)
	require.True(t, root.Cert.IsCA)
	require.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, root.Cert.KeyUsage)
	leaf, err := pki.Create(pki.Template{Subject: pkix.Name{CommonName: "leaf"}, NotBefore: now, NotAfter: now.Add(time.Hour), DNSNames: []string{"x.example"}}, nil, root)
	require.NoError(t, err)
	require.NoError(t, leaf.Cert.CheckSignatureFrom(root.Cert))
	require.Equal(t, x509.KeyUsageDigitalSignature, leaf.Cert.KeyUsage)

	back, err := pki.ParseKeyPair(leaf.CertPEM, leaf.KeyPEM)
	require.NoError(t, err)
	require.Equal(t, leaf.Cert.Raw, back.Cert.Raw)
	_, err = pki.ParseKeyPair(leaf.CertPEM, root.KeyPEM)
	require.ErrorContains(t, err, "key does not match")
	_, err = pki.Create(pki.Template{Subject: pkix.Name{CommonName: "x"}, NotBefore: now, NotAfter: now}, nil, nil)
	require.ErrorContains(t, err, "validity period")
}

// BenchmarkIssueWorkloadCert is the cost of one workload certificate: key
// generation, signing and PEM encoding.
func BenchmarkIssueWorkloadCert(b *testing.B) {
	ca := pkitest.CA(b, pkitest.NewRootCA(b, "bench root"))
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pki.IssueWorkloadCert(ca, workloadURIs, 24*time.Hour, pki.KeyECDSA, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssueWorkloadCertParallel is issuing on every core at once, as a
// CA rotation does.
func BenchmarkIssueWorkloadCertParallel(b *testing.B) {
	ca := pkitest.CA(b, pkitest.NewRootCA(b, "bench root"))
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := pki.IssueWorkloadCert(ca, workloadURIs, 24*time.Hour, pki.KeyECDSA, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
