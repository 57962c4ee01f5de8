package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/url"
	"time"
)

// The DER building blocks of a workload certificate, as crypto/x509 writes
// them, encoded once.
var (
	derKeyUsageOID         = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 15})
	derExtKeyUsageOID      = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 37})
	derBasicConstraintsOID = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 19})
	derAuthorityKeyIDOID   = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 35})
	derSubjectAltNameOID   = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 17})
	// serverAuth and clientAuth.
	derExtKeyUsages = mustMarshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}, {1, 3, 6, 1, 5, 5, 7, 3, 2}})
	// Not a CA, no path length.
	derNotCA = []byte{0x30, 0}
	// The ECDSA signature algorithms, without parameters.
	derECDSAWithSHA256 = mustMarshal(pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}})
	derECDSAWithSHA384 = mustMarshal(pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}})
	derECDSAWithSHA512 = mustMarshal(pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}})
	derV3              = []byte{0xa0, 3, 0x02, 1, 2} // [0] EXPLICIT INTEGER 2
	emptyName          = []byte{0x30, 0}             // an empty RDNSequence
	derTrue            = []byte{0x01, 1, 0xff}
)

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// DER tags.
const (
	tagInteger     = 0x02
	tagBitString   = 0x03
	tagOctetString = 0x04
	tagUTCTime     = 0x17
	tagGenTime     = 0x18
	tagSequence    = 0x30
	tagExplicit3   = 0xa3 // [3] EXPLICIT, constructed
	tagKeyID       = 0x80 // [0] IMPLICIT OCTET STRING
	tagURI         = 0x86 // [6] IMPLICIT IA5String
)

// appendTLV appends tag, the DER length of the contents and the contents.
func appendTLV(dst []byte, tag byte, contents ...[]byte) []byte {
	n := 0
	for _, c := range contents {
		n += len(c)
	}
	dst = append(dst, tag)
	switch {
	case n < 0x80:
		dst = append(dst, byte(n))
	case n < 0x100:
		dst = append(dst, 0x81, byte(n))
	case n < 0x10000:
		dst = append(dst, 0x82, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	for _, c := range contents {
		dst = append(dst, c...)
	}
	return dst
}

// appendTime appends t as encoding/asn1 does: UTCTime from 1950 to 2049,
// GeneralizedTime otherwise.
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		return appendTLV(dst, tagUTCTime, []byte(t.Format("060102150405Z")))
	}
	return appendTLV(dst, tagGenTime, []byte(t.Format("20060102150405Z")))
}

// workloadTemplate is what differs between workload certificates.
type workloadTemplate struct {
	serial              *big.Int
	notBefore, notAfter time.Time
	uris                []*url.URL
	keyUsage            x509.KeyUsage
}

// createWorkloadCert returns the DER of a workload certificate for pub,
// signed by parent's key signer. With an ECDSA CA key it encodes the
// certificate itself, byte for byte what x509.CreateCertificate writes for
// the same template (a test holds it to that), and signs it once: x509 also
// verifies its own signature, which is 40 % of the cost of issuing and runs
// ten thousand times in a row when a CA changes. Other CA keys go through
// x509.CreateCertificate.
func createWorkloadCert(t *workloadTemplate, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	caKey, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || len(parent.RawSubject) == 0 {
		return x509.CreateCertificate(rand.Reader, t.x509(), parent, pub, signer)
	}
	var (
		sigAlg []byte
		hash   crypto.Hash
	)
	switch caKey.Curve {
	case elliptic.P256():
		sigAlg, hash = derECDSAWithSHA256, crypto.SHA256
	case elliptic.P384():
		sigAlg, hash = derECDSAWithSHA384, crypto.SHA384
	case elliptic.P521():
		sigAlg, hash = derECDSAWithSHA512, crypto.SHA512
	default:
		return x509.CreateCertificate(rand.Reader, t.x509(), parent, pub, signer)
	}
	if t.serial.Sign() <= 0 {
		return nil, errors.New("serial number must be positive")
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	exts, err := t.extensions(parent)
	if err != nil {
		return nil, err
	}
	serial := t.serial.Bytes()
	if serial[0]&0x80 != 0 {
		serial = append([]byte{0}, serial...) // a positive INTEGER
	}
	validity := appendTime(appendTime(make([]byte, 0, 34), t.notBefore), t.notAfter)
	tbs := appendTLV(make([]byte, 0, 512), tagSequence,
		derV3,
		appendTLV(nil, tagInteger, serial),
		sigAlg,
		parent.RawSubject,
		appendTLV(nil, tagSequence, validity),
		emptyName,
		spki,
		appendTLV(nil, tagExplicit3, appendTLV(nil, tagSequence, exts)),
	)
	h := hash.New()
	h.Write(tbs)
	sig, err := signer.Sign(rand.Reader, h.Sum(nil), hash)
	if err != nil {
		return nil, err
	}
	return appendTLV(make([]byte, 0, len(tbs)+len(sigAlg)+len(sig)+16), tagSequence,
		tbs, sigAlg, appendTLV(nil, tagBitString, []byte{0}, sig)), nil
}

// extensions are the DER of the extensions x509.CreateCertificate writes
// for t.x509(), in its order: key usage, extended key usage, basic
// constraints, authority key id, and the subject alternative names,
// critical because the subject is empty.
func (t *workloadTemplate) extensions(parent *x509.Certificate) ([]byte, error) {
	ext := func(dst, oid []byte, critical bool, value []byte) []byte {
		if critical {
			return appendTLV(dst, tagSequence, oid, derTrue, appendTLV(nil, tagOctetString, value))
		}
		return appendTLV(dst, tagSequence, oid, appendTLV(nil, tagOctetString, value))
	}
	exts := make([]byte, 0, 256)
	if t.keyUsage != 0 {
		a := [2]byte{reverseBits(byte(t.keyUsage)), reverseBits(byte(t.keyUsage >> 8))}
		l := 1
		if a[1] != 0 {
			l = 2
		}
		bs := a[:l]
		exts = ext(exts, derKeyUsageOID, true, appendTLV(nil, tagBitString, []byte{byte(8*l - bitLength(bs))}, bs))
	}
	exts = ext(exts, derExtKeyUsageOID, false, derExtKeyUsages)
	exts = ext(exts, derBasicConstraintsOID, true, derNotCA)
	if len(parent.SubjectKeyId) > 0 {
		exts = ext(exts, derAuthorityKeyIDOID, false, appendTLV(nil, tagSequence, appendTLV(nil, tagKeyID, parent.SubjectKeyId)))
	}
	if len(t.uris) > 0 {
		var names []byte
		for _, u := range t.uris {
			s := u.String()
			for i := 0; i < len(s); i++ {
				if s[i] > 0x7f {
					return nil, errors.New("URI SAN is not an IA5String")
				}
			}
			names = appendTLV(names, tagURI, []byte(s))
		}
		exts = ext(exts, derSubjectAltNameOID, true, appendTLV(nil, tagSequence, names))
	}
	return exts, nil
}

// x509 is t as the template x509.CreateCertificate takes.
func (t *workloadTemplate) x509() *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          t.serial,
		NotBefore:             t.notBefore,
		NotAfter:              t.notAfter,
		KeyUsage:              t.keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  t.uris,
	}
}

func reverseBits(b byte) byte {
	var r byte
	for i := 0; i < 8; i++ {
		r = r<<1 | b&1
		b >>= 1
	}
	return r
}

// bitLength is the length of a BIT STRING without its trailing zero bits.
func bitLength(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == 0 {
			continue
		}
		for bit := 0; bit < 8; bit++ {
			if b[i]&(1<<bit) != 0 {
				return i*8 + 8 - bit
			}
		}
	}
	return 0
}
