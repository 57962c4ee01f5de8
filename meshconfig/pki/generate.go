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
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// KeyPair is a certificate and its private key, parsed and in PEM.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	// KeyPEM is Key in PKCS #8.
	KeyPEM []byte
}

// Template describes a certificate for Create. Zero values are left out.
type Template struct {
	Subject     pkix.Name
	URIs        []*url.URL
	DNSNames    []string
	IPAddresses []net.IP
	NotBefore   time.Time
	NotAfter    time.Time
	// IsCA makes a CA certificate; its key usage defaults to keyCertSign
	// and cRLSign, a leaf's to digitalSignature.
	IsCA        bool
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
}

// GenerateKey makes a new private key: ECDSA P-256 for KeyECDSA (or
// empty), RSA of rsaBits (2048 when zero) for KeyRSA.
func GenerateKey(t KeyType, rsaBits int) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch t {
	case KeyECDSA, "":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA:
		if rsaBits == 0 {
			rsaBits = 2048
		}
		key, err = rsa.GenerateKey(rand.Reader, rsaBits)
	default:
		return nil, fmt.Errorf("unknown key type %q", t)
	}
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", t, err)
	}
	return key, nil
}

// MarshalKeyPEM encodes key as a PKCS #8 PEM block.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8, Bytes: der}), nil
}

// Create signs a certificate for key, described by t, with a random serial:
// self-signed when parent is nil, else by parent. A nil key is generated
// (ECDSA P-256).
func Create(t Template, key crypto.Signer, parent *KeyPair) (*KeyPair, error) {
	if t.NotAfter.IsZero() || !t.NotAfter.After(t.NotBefore) {
		return nil, errors.New("a certificate needs a validity period: NotAfter after NotBefore")
	}
	if key == nil {
		var err error
		if key, err = GenerateKey(KeyECDSA, 0); err != nil {
			return nil, err
		}
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	usage := t.KeyUsage
	if usage == 0 {
		usage = x509.KeyUsageDigitalSignature
		if t.IsCA {
			usage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               t.Subject,
		NotBefore:             t.NotBefore,
		NotAfter:              t.NotAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           t.ExtKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  t.IsCA,
		URIs:                  t.URIs,
		DNSNames:              t.DNSNames,
		IPAddresses:           t.IPAddresses,
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), KeyPEM: keyPEM}, nil
}

// ParseKeyPair reads a certificate (the first CERTIFICATE block) and its
// private key, such as a KeyPair's PEM kept on disk.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != pemCertificate {
		return nil, errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeyMatches(cert.PublicKey, key.Public()) {
		return nil, errors.New("key does not match the certificate")
	}
	return &KeyPair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}
