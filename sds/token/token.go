// Package token issues and verifies dataplane tokens: the JWTs a data plane
// presents as gRPC metadata "authorization: Bearer <token>" when it opens an
// SDS stream.
//
// A token is signed with ES256 (ECDSA P-256) by a key meshsds generates once
// (see LoadOrCreateSigningKey). Its header carries a "kid", the RFC 7638
// thumbprint of the public key, so that keys can be rotated later without
// ambiguity. Its claims are the data plane's mesh, name and tags, a unique id
// (for revocation), and the issue and expiry times.
//
// Verification is a pure function of the token and the time passed in: the
// package never reads the clock, so callers and tests control "now".
package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are what a dataplane token asserts.
type Claims struct {
	// Mesh is the mesh the data plane belongs to.
	Mesh string
	// Name is the data plane's name; with Mesh it forms the Envoy node id
	// "<mesh>.<name>".
	Name string
	// Tags are the data plane's tags, such as "kuma.io/service". A tag may
	// have several values.
	Tags map[string][]string
	// ID is the token's unique id ("jti"), the handle used to revoke it.
	ID string
	// IssuedAt is when the token was issued; it is also its "not before".
	IssuedAt time.Time
	// ExpiresAt is when the token stops being accepted.
	ExpiresAt time.Time
}

// Errors returned by Verify, wrapped with more detail. Check them with
// errors.Is; Reason maps them to metric labels.
var (
	// ErrMalformed means the token is not a well-formed JWT of the expected
	// shape (encoding, JSON, claim types).
	ErrMalformed = errors.New("malformed token")
	// ErrBadSignature means the token was not signed by the expected key:
	// wrong algorithm, unknown or missing key id, or an invalid signature.
	ErrBadSignature = errors.New("bad token signature")
	// ErrExpired means the token's expiry time has passed.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid means the token's issue ("not before") time is in the
	// future.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrMissingClaim means a required claim (mesh, name, jti, exp) is absent
	// or empty.
	ErrMissingClaim = errors.New("token is missing a required claim")
)

// algorithm is the only signing algorithm meshsds issues or accepts.
const algorithm = "ES256"

// idBytes is the size of a generated token id: 128 bits.
const idBytes = 16

// jwtClaims is the wire form of Claims.
type jwtClaims struct {
	Mesh string              `json:"mesh"`
	Name string              `json:"name"`
	Tags map[string][]string `json:"tags,omitempty"`
	jwt.RegisteredClaims
}

// KeyID returns the key id meshsds puts in a token's "kid" header for tokens
// signed by the private key matching pub: the base64url (unpadded) SHA-256
// JWK thumbprint of pub as defined by RFC 7638. Only P-256 keys are supported.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return "", errors.New("token signing key must be an ECDSA P-256 key")
	}
	raw, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return "", fmt.Errorf("encoding public key: %w", err)
	}
	enc := base64.RawURLEncoding
	// RFC 7638: the required members in lexicographic order, no whitespace.
	thumb := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":%q,"y":%q}`,
		enc.EncodeToString(raw[1:33]), enc.EncodeToString(raw[33:65]))
	sum := sha256.Sum256([]byte(thumb))
	return enc.EncodeToString(sum[:]), nil
}

// Issuer signs dataplane tokens. It is safe for concurrent use.
type Issuer struct {
	key *ecdsa.PrivateKey
	kid string
	err error
}

// NewIssuer returns an Issuer signing with key, which must be an ECDSA P-256
// key; with any other key every Issue call fails.
func NewIssuer(key *ecdsa.PrivateKey) *Issuer {
	if key == nil {
		return &Issuer{err: errors.New("token signing key is nil")}
	}
	kid, err := KeyID(&key.PublicKey)
	return &Issuer{key: key, kid: kid, err: err}
}

// Issue returns a signed token asserting c, issued at now and valid for
// validFor. It fills c.ID, when empty, with a random 128-bit hex id followed
// by the token's expiry (see IDExpiry), and overrides c.IssuedAt and
// c.ExpiresAt. Mesh and Name must not be empty and validFor must be
// positive. Times are encoded with one-second precision.
func (i *Issuer) Issue(c Claims, validFor time.Duration, now time.Time) (string, error) {
	if i.err != nil {
		return "", i.err
	}
	switch {
	case c.Mesh == "":
		return "", errors.New("mesh: must not be empty")
	case c.Name == "":
		return "", errors.New("name: must not be empty")
	case validFor <= 0:
		return "", fmt.Errorf("validFor: must be positive, got %s", validFor)
	}
	if err := ValidateTags(c.Tags); err != nil {
		return "", err
	}
	exp := jwt.NewNumericDate(now.Add(validFor))
	if c.ID == "" {
		id, err := newID(exp.Time)
		if err != nil {
			return "", err
		}
		c.ID = id
	}
	wire := jwtClaims{
		Mesh: c.Mesh,
		Name: c.Name,
		Tags: c.Tags,
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        c.ID,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: exp,
		},
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, wire)
	tok.Header["kid"] = i.kid
	signed, err := tok.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return signed, nil
}

// newID returns a random 128-bit id in hex, then "-" and the Unix time
// (seconds) of exp, the token's expiry.
func newID(exp time.Time) (string, error) {
	b := make([]byte, idBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating token id: %w", err)
	}
	return hex.EncodeToString(b) + "-" + strconv.FormatInt(exp.Unix(), 10), nil
}

// IDExpiry returns the expiry a token id issued by meshsds carries: its
// form is 32 lower-case hex digits, "-", and the Unix time (seconds) of the
// token's "exp". Verify refuses a token whose "exp" is later than its id
// says, so once that time has passed no token with that id is accepted
// again, and the id can leave a revocation list. Other ids (Kuma's UUIDs,
// ids of meshsds before this form) report false: their expiry is unknown.
func IDExpiry(id string) (time.Time, bool) {
	random, secs, ok := strings.Cut(id, "-")
	if !ok || len(random) != 2*idBytes || len(secs) == 0 || len(secs) > 12 || (len(secs) > 1 && secs[0] == '0') {
		return time.Time{}, false
	}
	for _, r := range random {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return time.Time{}, false
		}
	}
	for _, r := range secs {
		if r < '0' || r > '9' {
			return time.Time{}, false
		}
	}
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0).UTC(), true
}

// Verifier checks dataplane tokens against one public key. It is safe for
// concurrent use.
type Verifier struct {
	pub *ecdsa.PublicKey
	kid string
	err error
}

// NewVerifier returns a Verifier accepting tokens signed by the private key
// matching pub, which must be an ECDSA P-256 key; with any other key every
// Verify call fails.
func NewVerifier(pub *ecdsa.PublicKey) *Verifier {
	kid, err := KeyID(pub)
	return &Verifier{pub: pub, kid: kid, err: err}
}

// Verify checks raw as of now and returns its claims. It accepts only ES256
// tokens whose "kid" names the verifier's key, whose signature is valid, which
// carry mesh, name, jti and exp claims, and which are valid at now (iat and
// nbf not after now, exp after now). Errors wrap one of ErrMalformed,
// ErrBadSignature, ErrExpired, ErrNotYetValid and ErrMissingClaim. Verify is
// a pure function of raw and now.
func (v *Verifier) Verify(raw string, now time.Time) (*Claims, error) {
	if v.err != nil {
		return nil, v.err
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{algorithm}),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
	)
	var wire jwtClaims
	if _, err := parser.ParseWithClaims(raw, &wire, v.keyFunc); err != nil {
		return nil, classify(err)
	}
	switch {
	case wire.Mesh == "":
		return nil, fmt.Errorf("%w: mesh", ErrMissingClaim)
	case wire.Name == "":
		return nil, fmt.Errorf("%w: name", ErrMissingClaim)
	case wire.ID == "":
		return nil, fmt.Errorf("%w: jti", ErrMissingClaim)
	}
	if idExp, ok := IDExpiry(wire.ID); ok && wire.ExpiresAt.After(idExp) {
		// Its id could leave a revocation list while it is still valid.
		return nil, fmt.Errorf("%w: exp is later than the expiry its jti carries", ErrMalformed)
	}
	c := &Claims{
		Mesh:      wire.Mesh,
		Name:      wire.Name,
		Tags:      wire.Tags,
		ID:        wire.ID,
		ExpiresAt: wire.ExpiresAt.UTC(),
	}
	if wire.IssuedAt != nil {
		c.IssuedAt = wire.IssuedAt.UTC()
	}
	return c, nil
}

// keyFunc returns the verification key when the token's header names it.
func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	// WithValidMethods already restricts alg; this guards against a change
	// of parser options ever letting an HMAC or "none" token through.
	if _, ok := t.Method.(*jwt.SigningMethodECDSA); !ok {
		return nil, fmt.Errorf("%w: unexpected algorithm %v", ErrBadSignature, t.Header["alg"])
	}
	kid, ok := t.Header["kid"].(string)
	if !ok {
		return nil, fmt.Errorf("%w: missing key id", ErrBadSignature)
	}
	if kid != v.kid {
		return nil, fmt.Errorf("%w: unknown key id", ErrBadSignature)
	}
	return v.pub, nil
}

// classify wraps a jwt parse error with the matching sentinel. The order
// matters when the library reports several problems at once: a token that is
// not ours is reported as such before any of its claims are looked at.
func classify(err error) error {
	var sentinel error
	switch {
	case errors.Is(err, ErrBadSignature):
		// keyFunc's own error, already classified.
		return err
	case errors.Is(err, jwt.ErrTokenMalformed):
		sentinel = ErrMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		sentinel = ErrBadSignature
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// Missing or unknown "alg": not a token of ours at all.
		sentinel = ErrMalformed
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		sentinel = ErrMissingClaim
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		sentinel = ErrNotYetValid
	case errors.Is(err, jwt.ErrTokenExpired):
		sentinel = ErrExpired
	case errors.Is(err, jwt.ErrInvalidType):
		sentinel = ErrMalformed
	default:
		return fmt.Errorf("verifying token: %w", err)
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

// Reason returns a short, bounded label for a Verify error, for use as a
// metric label: "malformed", "bad_signature", "expired", "not_yet_valid",
// "missing_claim" or "other". Reason(nil) is the empty string.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, ErrMissingClaim):
		return "missing_claim"
	case errors.Is(err, ErrNotYetValid):
		return "not_yet_valid"
	case errors.Is(err, ErrExpired):
		return "expired"
	default:
		return "other"
	}
}

// ParseTags parses repeated "key=value" flags, such as
// "kuma.io/service=web", into a tag map. A key given several times collects
// all its values in order (an identical key=value pair is kept once). An
// entry without "=", with an empty key or with an empty value is an error
// naming it. No entries yield a nil map.
func ParseTags(kv []string) (map[string][]string, error) {
	var tags map[string][]string
	for _, e := range kv {
		k, v, ok := strings.Cut(e, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("tag %q: want key=value", e)
		case k == "":
			return nil, fmt.Errorf("tag %q: key must not be empty", e)
		case v == "":
			return nil, fmt.Errorf("tag %q: value must not be empty", e)
		}
		if tags == nil {
			tags = make(map[string][]string)
		}
		if !slices.Contains(tags[k], v) {
			tags[k] = append(tags[k], v)
		}
	}
	return tags, nil
}

// compile-time check that the wire claims satisfy the jwt interface.
var _ jwt.Claims = (*jwtClaims)(nil)
