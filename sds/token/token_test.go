package token_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/sds/token"
)

// now is the fixed time every test issues and verifies at.
var now = time.Date(2030, time.March, 1, 12, 0, 0, 0, time.UTC)

func newKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	require.NoError(t, err)
	return k
}

func keyID(t testing.TB, pub *ecdsa.PublicKey) string {
	t.Helper()
	kid, err := token.KeyID(pub)
	require.NoError(t, err)
	return kid
}

// sign builds a token by hand so tests can produce shapes Issue refuses to.
func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

// goodClaims returns a complete claim set valid for one hour from now.
func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"mesh": "default",
		"name": "web",
		"tags": map[string][]string{"kuma.io/service": {"web"}},
		"jti":  "0123456789abcdef0123456789abcdef",
		"iat":  now.Unix(),
		"nbf":  now.Unix(),
		"exp":  now.Add(time.Hour).Unix(),
	}
}

func without(c jwt.MapClaims, keys ...string) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	out := without(c)
	out[k] = v
	return out
}

// segment encodes v as a JWT segment.
func segment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerify(t *testing.T) {
	key := newKey(t, elliptic.P256())
	kid := keyID(t, &key.PublicKey)
	other := newKey(t, elliptic.P256())
	p384 := newKey(t, elliptic.P384())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	pubRaw, err := key.PublicKey.Bytes()
	require.NoError(t, err)

	issued, err := token.NewIssuer(key).Issue(token.Claims{
		Mesh: "default",
		Name: "web",
		Tags: map[string][]string{"kuma.io/service": {"web", "web-admin"}, "version": {"v1"}},
	}, time.Hour, now)
	require.NoError(t, err)
	forged, err := token.NewIssuer(other).Issue(token.Claims{Mesh: "default", Name: "web"}, time.Hour, now)
	require.NoError(t, err)
	good := sign(t, jwt.SigningMethodES256, key, kid, goodClaims())
	parts := strings.Split(good, ".")
	require.Len(t, parts, 3)

	tests := []struct {
		name    string
		raw     string
		at      time.Time
		wantErr error
		reason  string
	}{
		{name: "issued token", raw: issued, at: now},
		{name: "hand-built token", raw: good, at: now},
		{name: "just before expiry", raw: issued, at: now.Add(time.Hour - time.Second)},
		{name: "at expiry", raw: issued, at: now.Add(time.Hour), wantErr: token.ErrExpired, reason: "expired"},
		{name: "long expired", raw: issued, at: now.Add(48 * time.Hour), wantErr: token.ErrExpired, reason: "expired"},
		{name: "not yet valid", raw: issued, at: now.Add(-time.Second), wantErr: token.ErrNotYetValid, reason: "not_yet_valid"},
		{
			name: "jti carries its exp", at: now,
			raw: sign(t, jwt.SigningMethodES256, key, kid, with(goodClaims(), "jti", fmt.Sprintf("0123456789abcdef0123456789abcdef-%d", now.Add(time.Hour).Unix()))),
		},
		{
			name: "exp later than its jti says", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, with(goodClaims(), "jti", fmt.Sprintf("0123456789abcdef0123456789abcdef-%d", now.Add(time.Hour-time.Second).Unix()))),
			wantErr: token.ErrMalformed, reason: "malformed",
		},
		{
			name: "issued in the future without nbf", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, with(without(goodClaims(), "nbf"), "iat", now.Add(time.Minute).Unix())),
			wantErr: token.ErrNotYetValid, reason: "not_yet_valid",
		},
		{name: "forged by another key", raw: forged, at: now, wantErr: token.ErrBadSignature, reason: "bad_signature"},
		{
			name: "another key claiming our kid", at: now,
			raw:     sign(t, jwt.SigningMethodES256, other, kid, goodClaims()),
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "tampered payload", at: now,
			raw:     parts[0] + "." + segment(t, with(goodClaims(), "name", "admin")) + "." + parts[2],
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "tampered header", at: now,
			raw:     segment(t, map[string]string{"alg": "ES256", "typ": "JWT", "kid": kid, "x": "y"}) + "." + parts[1] + "." + parts[2],
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{name: "signature stripped", raw: parts[0] + "." + parts[1] + ".", at: now, wantErr: token.ErrBadSignature, reason: "bad_signature"},
		{
			name: "alg none", at: now,
			raw:     sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, goodClaims()),
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "alg none with a copied signature", at: now,
			raw:     segment(t, map[string]string{"alg": "none", "kid": kid}) + "." + parts[1] + "." + parts[2],
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "HS256 keyed with the public key DER", at: now,
			raw:     sign(t, jwt.SigningMethodHS256, pubDER, kid, goodClaims()),
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "HS256 keyed with the raw public key", at: now,
			raw:     sign(t, jwt.SigningMethodHS256, pubRaw, kid, goodClaims()),
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "RS256", at: now,
			raw:     sign(t, jwt.SigningMethodRS256, rsaKey, kid, goodClaims()),
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "ES384", at: now,
			raw:     sign(t, jwt.SigningMethodES384, p384, kid, goodClaims()),
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "wrong kid", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, "some-other-key", goodClaims()),
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "missing kid", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, "", goodClaims()),
			wantErr: token.ErrBadSignature, reason: "bad_signature",
		},
		{
			name: "missing mesh", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, without(goodClaims(), "mesh")),
			wantErr: token.ErrMissingClaim, reason: "missing_claim",
		},
		{
			name: "empty name", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, with(goodClaims(), "name", "")),
			wantErr: token.ErrMissingClaim, reason: "missing_claim",
		},
		{
			name: "missing name", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, without(goodClaims(), "name")),
			wantErr: token.ErrMissingClaim, reason: "missing_claim",
		},
		{
			name: "missing exp", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, without(goodClaims(), "exp")),
			wantErr: token.ErrMissingClaim, reason: "missing_claim",
		},
		{
			name: "missing jti", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, without(goodClaims(), "jti")),
			wantErr: token.ErrMissingClaim, reason: "missing_claim",
		},
		{
			name: "exp of the wrong type", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, with(goodClaims(), "exp", "tomorrow")),
			wantErr: token.ErrMalformed, reason: "malformed",
		},
		{
			name: "tags of the wrong type", at: now,
			raw:     sign(t, jwt.SigningMethodES256, key, kid, with(goodClaims(), "tags", "web")),
			wantErr: token.ErrMalformed, reason: "malformed",
		},
		{name: "empty string", raw: "", at: now, wantErr: token.ErrMalformed, reason: "malformed"},
		{name: "garbage", raw: "not a token", at: now, wantErr: token.ErrMalformed, reason: "malformed"},
		{name: "bearer prefix left on", raw: "Bearer " + issued, at: now, wantErr: token.ErrMalformed, reason: "malformed"},
		{name: "three dots", raw: "...", at: now, wantErr: token.ErrMalformed, reason: "malformed"},
		{name: "two segments", raw: parts[0] + "." + parts[1], at: now, wantErr: token.ErrMalformed, reason: "malformed"},
		{name: "four segments", raw: good + ".x", at: now, wantErr: token.ErrMalformed, reason: "malformed"},
		{name: "header not JSON", raw: "bm90IGpzb24." + parts[1] + "." + parts[2], at: now, wantErr: token.ErrMalformed, reason: "malformed"},
		{
			name: "unknown alg", at: now,
			raw:     segment(t, map[string]string{"alg": "XX999", "kid": kid}) + "." + parts[1] + "." + parts[2],
			wantErr: token.ErrMalformed, reason: "malformed",
		},
		{name: "padded base64", raw: parts[0] + "=." + parts[1] + "." + parts[2], at: now, wantErr: token.ErrMalformed, reason: "malformed"},
	}
	v := token.NewVerifier(&key.PublicKey)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(tc.raw, tc.at)
			require.Equal(t, tc.reason, token.Reason(err))
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "default", got.Mesh)
			require.Equal(t, "web", got.Name)
			require.NotEmpty(t, got.ID)
			require.NotEmpty(t, got.Tags["kuma.io/service"])
		})
	}
}

func TestIssueRoundTrip(t *testing.T) {
	key := newKey(t, elliptic.P256())
	iss := token.NewIssuer(key)
	v := token.NewVerifier(&key.PublicKey)
	at := now.Add(500 * time.Millisecond) // sub-second part is dropped on the wire

	tests := []struct {
		name string
		in   token.Claims
	}{
		{name: "no tags", in: token.Claims{Mesh: "default", Name: "web"}},
		{name: "tags and given id", in: token.Claims{
			Mesh: "prod", Name: "backend-1",
			Tags: map[string][]string{"kuma.io/service": {"backend"}, "kuma.io/zone": {"eu", "us"}},
			ID:   "my-id",
		}},
		{name: "caller times are ignored", in: token.Claims{
			Mesh: "default", Name: "web",
			IssuedAt: now.Add(-100 * time.Hour), ExpiresAt: now.Add(100 * time.Hour),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := iss.Issue(tc.in, 2*time.Hour, at)
			require.NoError(t, err)
			got, err := v.Verify(raw, at)
			require.NoError(t, err)

			want := tc.in
			want.IssuedAt = now
			want.ExpiresAt = now.Add(2 * time.Hour)
			if want.ID == "" {
				require.Regexp(t, `^[0-9a-f]{32}-[0-9]+$`, got.ID)
				exp, ok := token.IDExpiry(got.ID)
				require.True(t, ok)
				require.Equal(t, want.ExpiresAt, exp, "the id carries the token's expiry")
				want.ID = got.ID
			}
			require.Equal(t, want, *got)

			hdr := decodeSegment(t, strings.Split(raw, ".")[0])
			require.Equal(t, "ES256", hdr["alg"])
			require.Equal(t, keyID(t, &key.PublicKey), hdr["kid"])
			body := decodeSegment(t, strings.Split(raw, ".")[1])
			require.Equal(t, body["iat"], body["nbf"])
			for _, k := range []string{"mesh", "name", "jti", "iat", "nbf", "exp"} {
				require.Contains(t, body, k)
			}
		})
	}

	t.Run("ids are unique", func(t *testing.T) {
		seen := map[string]bool{}
		for range 100 {
			raw, err := iss.Issue(token.Claims{Mesh: "m", Name: "n"}, time.Minute, now)
			require.NoError(t, err)
			c, err := v.Verify(raw, now)
			require.NoError(t, err)
			require.False(t, seen[c.ID])
			seen[c.ID] = true
		}
	})
}

func decodeSegment(t *testing.T, s string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func TestIDExpiry(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want int64 // Unix seconds; -1: no expiry
	}{
		{"0123456789abcdef0123456789abcdef-1798761600", 1798761600},
		{"0123456789abcdef0123456789abcdef-0", 0},
		{"0123456789abcdef0123456789abcdef", -1},              // meshsds before ids carried their expiry
		{"8c2a4e0c-5d1f-4b7e-9a3c-2f1e0d9c8b7a", -1},          // Kuma's UUID
		{"0123456789ABCDEF0123456789ABCDEF-1798761600", -1},   // upper case
		{"0123456789abcdef0123456789abcde-1798761600", -1},    // 31 digits
		{"0123456789abcdef0123456789abcdefa-1798761600", -1},  // 33 digits
		{"0123456789abcdef0123456789abcdef-", -1},             // no time
		{"0123456789abcdef0123456789abcdef--1", -1},           // negative
		{"0123456789abcdef0123456789abcdef-+1", -1},           // sign
		{"0123456789abcdef0123456789abcdef-1798761600-1", -1}, // trailing
		{"0123456789abcdef0123456789abcdef-1234567890123", -1},
		{"0123456789abcdef0123456789abcdef-01798761600", -1},  // leading zero: one spelling per time // 13 digits
		{"0123456789abcdef0123456789abcdef-17987616x0", -1},   // not a number
		{"0123456789abcdef0123456789abcdef-\u0661\u0662", -1}, // non-ASCII digits
		{"", -1},
	} {
		got, ok := token.IDExpiry(tc.id)
		if tc.want < 0 {
			require.False(t, ok, tc.id)
			continue
		}
		require.True(t, ok, tc.id)
		require.Equal(t, time.Unix(tc.want, 0).UTC(), got, tc.id)
	}
}

func TestIssueErrors(t *testing.T) {
	good := token.Claims{Mesh: "default", Name: "web"}
	p256 := newKey(t, elliptic.P256())
	tests := []struct {
		name     string
		key      *ecdsa.PrivateKey
		claims   token.Claims
		validFor time.Duration
		wantErr  string
	}{
		{name: "empty mesh", key: p256, claims: token.Claims{Name: "web"}, validFor: time.Hour, wantErr: "mesh"},
		{name: "empty name", key: p256, claims: token.Claims{Mesh: "default"}, validFor: time.Hour, wantErr: "name"},
		{name: "zero validity", key: p256, claims: good, validFor: 0, wantErr: "validFor"},
		{name: "negative validity", key: p256, claims: good, validFor: -time.Hour, wantErr: "validFor"},
		{name: "service tag leaving its SPIFFE path", key: p256, claims: token.Claims{Mesh: "m", Name: "n", Tags: map[string][]string{"kuma.io/service": {"web/../admin"}}}, validFor: time.Hour, wantErr: "not a SPIFFE path segment"},
		{name: "empty tag key", key: p256, claims: token.Claims{Mesh: "m", Name: "n", Tags: map[string][]string{"": {"x"}}}, validFor: time.Hour, wantErr: `tags: key "" must not be empty`},
		{name: "nil key", key: nil, claims: good, validFor: time.Hour, wantErr: "nil"},
		{name: "P-384 key", key: newKey(t, elliptic.P384()), claims: good, validFor: time.Hour, wantErr: "P-256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := token.NewIssuer(tc.key).Issue(tc.claims, tc.validFor, now)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestVerifierRejectsNonP256Key(t *testing.T) {
	key := newKey(t, elliptic.P384())
	_, err := token.NewVerifier(&key.PublicKey).Verify("a.b.c", now)
	require.ErrorContains(t, err, "P-256")
	_, err = token.NewVerifier(nil).Verify("a.b.c", now)
	require.Error(t, err)
}

func TestKeyID(t *testing.T) {
	// RFC 7638 section 3.1 gives an RSA example only; check the EC form
	// against an independent computation from the key's coordinates.
	key := newKey(t, elliptic.P256())
	raw, err := key.PublicKey.Bytes()
	require.NoError(t, err)
	enc := base64.RawURLEncoding
	jwk := `{"crv":"P-256","kty":"EC","x":"` + enc.EncodeToString(raw[1:33]) + `","y":"` + enc.EncodeToString(raw[33:]) + `"}`
	sum := sha256.Sum256([]byte(jwk))
	require.Equal(t, enc.EncodeToString(sum[:]), keyID(t, &key.PublicKey))
	require.NotEqual(t, keyID(t, &key.PublicKey), keyID(t, &newKey(t, elliptic.P256()).PublicKey))
}

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{err: nil, want: ""},
		{err: token.ErrMalformed, want: "malformed"},
		{err: token.ErrBadSignature, want: "bad_signature"},
		{err: token.ErrExpired, want: "expired"},
		{err: token.ErrNotYetValid, want: "not_yet_valid"},
		{err: token.ErrMissingClaim, want: "missing_claim"},
		{err: jwt.ErrTokenExpired, want: "other"},
		{err: wrapped{token.ErrExpired}, want: "expired"},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, token.Reason(tc.err), "%v", tc.err)
	}
}

// wrapped wraps an error the way a caller might, to check Reason unwraps.
type wrapped struct{ err error }

func (w wrapped) Error() string { return "wrapped: " + w.err.Error() }
func (w wrapped) Unwrap() error { return w.err }

func TestParseTags(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    map[string][]string
		wantErr string
	}{
		{name: "none", in: nil, want: nil},
		{name: "one", in: []string{"kuma.io/service=web"}, want: map[string][]string{"kuma.io/service": {"web"}}},
		{
			name: "repeated key appends",
			in:   []string{"kuma.io/service=web", "version=v1", "kuma.io/service=web-admin"},
			want: map[string][]string{"kuma.io/service": {"web", "web-admin"}, "version": {"v1"}},
		},
		{name: "identical pair kept once", in: []string{"a=b", "a=b"}, want: map[string][]string{"a": {"b"}}},
		{name: "value may contain =", in: []string{"k=a=b"}, want: map[string][]string{"k": {"a=b"}}},
		{name: "no =", in: []string{"a=b", "kuma.io/service"}, wantErr: `"kuma.io/service"`},
		{name: "empty key", in: []string{"=web"}, wantErr: `"=web": key must not be empty`},
		{name: "empty value", in: []string{"version="}, wantErr: `"version=": value must not be empty`},
		{name: "empty entry", in: []string{""}, wantErr: `tag ""`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := token.ParseTags(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
