package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// Backdate is how far before issuance a workload certificate becomes valid,
// so that peers with slightly late clocks accept it.
const Backdate = 10 * time.Second

// KeyType selects the algorithm of a generated key.
type KeyType string

// Supported key types.
const (
	// KeyECDSA is an ECDSA P-256 key, the default.
	KeyECDSA KeyType = "ecdsa"
	// KeyRSA is an RSA key, 2048 bits unless said otherwise.
	KeyRSA KeyType = "rsa"
)

// WorkloadCert is an issued workload certificate with its key. It keeps
// only what belongs to the data plane (its certificate and key, in DER);
// the CA's intermediates are the CA's, shared by every certificate it
// signs, and are joined only when the PEM chain is built.
type WorkloadCert struct {
	LeafDER []byte
	KeyDER  []byte
	// IssuedChainPEM is the CA's own chain up to, not including, the root:
	// shared, never modified.
	IssuedChainPEM []byte
	Serial         string
	NotBefore      time.Time
	NotAfter       time.Time
}

// ChainPEM is the certificate followed by the CA's intermediates, as Envoy
// takes it.
func (c *WorkloadCert) ChainPEM() []byte {
	chain := appendPEM(make([]byte, 0, pemLen(pemCertificate, len(c.LeafDER))+len(c.IssuedChainPEM)), pemCertificate, c.LeafDER)
	return append(chain, c.IssuedChainPEM...)
}

// KeyPEM is the private key in PKCS #8 PEM.
func (c *WorkloadCert) KeyPEM() []byte {
	return appendPEM(nil, pemPKCS8, c.KeyDER)
}

// IssueWorkloadCert signs a new certificate for a data plane whose URI SANs
// are uris, with a new key of keyType, valid from now-Backdate for
// validity but never beyond the CA's own expiry. It is a pure function of
// its inputs and the random source.
func IssueWorkloadCert(ca *CA, uris []*url.URL, validity time.Duration, keyType KeyType, now time.Time) (*WorkloadCert, error) {
	if ca == nil || len(ca.Chain) == 0 || ca.Key == nil {
		return nil, errors.New("no CA")
	}
	var (
		key    crypto.Signer
		err    error
		usages = x509.KeyUsageDigitalSignature
	)
	switch keyType {
	case KeyECDSA, "":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
		usages |= x509.KeyUsageKeyEncipherment
	default:
		return nil, fmt.Errorf("unknown workload key type %q", keyType)
	}
	if err != nil {
		return nil, fmt.Errorf("generating workload key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-Backdate)
	notAfter := now.Add(validity)
	if caEnd := ca.Chain[0].NotAfter; notAfter.After(caEnd) {
		// A certificate never outlives its issuer; renewal comes earlier.
		notAfter = caEnd
	}
	tmpl := &workloadTemplate{serial: serial, notBefore: notBefore, notAfter: notAfter, keyUsage: usages, uris: uris}
	der, err := createWorkloadCert(tmpl, ca.Chain[0], key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing workload certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding workload key: %w", err)
	}
	return &WorkloadCert{
		LeafDER: der, KeyDER: keyDER, IssuedChainPEM: ca.IssuedChainPEM,
		Serial: hex.EncodeToString(serial.Bytes()), NotBefore: notBefore, NotAfter: notAfter,
	}, nil
}

// newSerial is a random positive 127-bit serial number.
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial: %w", err)
	}
	if serial.Sign() == 0 {
		serial.SetInt64(1)
	}
	return serial, nil
}

// pemLen is the size of the PEM block appendPEM writes.
func pemLen(typ string, n int) int {
	b64 := base64.StdEncoding.EncodedLen(n)
	return len("-----BEGIN -----\n-----END -----\n") + 2*len(typ) + b64 + (b64+63)/64
}

// appendPEM appends a PEM block without headers to dst: the bytes
// pem.EncodeToMemory writes, in one allocation instead of its encoder's
// several (it runs twice per certificate issued, ten thousand times in a
// row when a CA changes).
func appendPEM(dst []byte, typ string, der []byte) []byte {
	if dst == nil {
		dst = make([]byte, 0, pemLen(typ, len(der)))
	}
	dst = append(dst, "-----BEGIN "...)
	dst = append(dst, typ...)
	dst = append(dst, "-----\n"...)
	var line [64]byte
	for len(der) > 0 {
		n := min(len(der), 48) // 48 bytes are 64 base64 characters
		base64.StdEncoding.Encode(line[:], der[:n])
		dst = append(dst, line[:base64.StdEncoding.EncodedLen(n)]...)
		dst = append(dst, '\n')
		der = der[n:]
	}
	dst = append(dst, "-----END "...)
	dst = append(dst, typ...)
	return append(dst, "-----\n"...)
}
