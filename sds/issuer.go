package sds

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/meshsds/meshsds/meshconfig"
)

// ServiceTag is the tag whose values become SPIFFE identities.
const ServiceTag = "kuma.io/service"

// backdate is how far before issuance a workload certificate becomes valid,
// so that peers with slightly late clocks accept it.
const backdate = 10 * time.Second

// KeyType selects the algorithm of workload certificate keys.
type KeyType string

// Supported workload key types.
const (
	KeyECDSA KeyType = "ecdsa"
	KeyRSA   KeyType = "rsa"
)

// Identity is who an authenticated data plane is: its mesh, its name and the
// tags its token grants. It is immutable once built.
type Identity struct {
	Mesh    string
	Name    string
	Tags    map[string][]string
	TokenID string
	// Expires is when the credential that proved the identity expires;
	// streams are closed then. Zero means never (--auth none).
	Expires time.Time
}

// NodeID is the Envoy node id this identity must present: "<mesh>.<name>".
func (id *Identity) NodeID() string { return id.Mesh + "." + id.Name }

// key identifies the workload certificate this identity gets: two streams of
// one data plane share it, a different token with other tags does not.
func (id *Identity) key() string {
	var b strings.Builder
	b.WriteString(id.Mesh)
	b.WriteByte(0)
	b.WriteString(id.Name)
	names := make([]string, 0, len(id.Tags))
	for k := range id.Tags {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		vals := append([]string(nil), id.Tags[k]...)
		sort.Strings(vals)
		for _, v := range vals {
			b.WriteByte(0)
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(v)
		}
	}
	return b.String()
}

// URIs returns the URI SANs of the identity: spiffe://<mesh>/<service> for
// every kuma.io/service value, then kuma://<tag>/<value> for the other tags,
// each group sorted so that certificates are deterministic.
func (id *Identity) URIs() []*url.URL {
	var spiffe, kuma []*url.URL
	for _, svc := range sortedCopy(id.Tags[ServiceTag]) {
		spiffe = append(spiffe, &url.URL{Scheme: "spiffe", Host: id.Mesh, Path: "/" + svc})
	}
	names := make([]string, 0, len(id.Tags))
	for k := range id.Tags {
		if k != ServiceTag {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range sortedCopy(id.Tags[k]) {
			kuma = append(kuma, &url.URL{Scheme: "kuma", Opaque: "//" + k + "/" + url.PathEscape(v)})
		}
	}
	return append(spiffe, kuma...)
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

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
	chain := appendPEM(make([]byte, 0, pemLen("CERTIFICATE", len(c.LeafDER))+len(c.IssuedChainPEM)), "CERTIFICATE", c.LeafDER)
	return append(chain, c.IssuedChainPEM...)
}

// KeyPEM is the private key in PKCS #8 PEM.
func (c *WorkloadCert) KeyPEM() []byte {
	return appendPEM(nil, "PRIVATE KEY", c.KeyDER)
}

// IssueWorkloadCert signs a new certificate for id with ca, valid from
// now-10s for validity. It is a pure function of its inputs and the random
// source.
func IssueWorkloadCert(ca *meshconfig.CA, id *Identity, validity time.Duration, keyType KeyType, now time.Time) (*WorkloadCert, error) {
	if ca == nil || len(ca.Chain) == 0 || ca.Key == nil {
		return nil, fmt.Errorf("issuing for %s: no CA", id.NodeID())
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
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial: %w", err)
	}
	notBefore := now.Add(-backdate)
	notAfter := now.Add(validity)
	if caEnd := ca.Chain[0].NotAfter; notAfter.After(caEnd) {
		// A certificate never outlives its issuer; renewal comes earlier.
		notAfter = caEnd
	}
	tmpl := &workloadTemplate{serial: serial, notBefore: notBefore, notAfter: notAfter, keyUsage: usages, uris: id.URIs()}
	der, err := createWorkloadCert(tmpl, ca.Chain[0], key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing workload certificate for %s: %w", id.NodeID(), err)
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

// RenewalTime is when a certificate valid from notBefore to notAfter is
// replaced: at 4/5 of its lifetime, moved by jitter (a fraction in [-1, 1])
// by up to 1/20 of the lifetime so that data planes issued together do not
// all renew in the same instant.
func RenewalTime(notBefore, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(notBefore)
	at := notBefore.Add(life * 4 / 5)
	return at.Add(time.Duration(jitter * float64(life/20)))
}

// contentVersion is a short, deterministic version string for bytes.
func contentVersion(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
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
