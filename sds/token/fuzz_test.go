package token_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/sds/token"
)

// fuzzKey derives the fuzz signing key from a fixed seed so that every fuzz
// worker process shares it and corpus entries signed in one worker verify in
// another. It is derived at run time; no key material is stored.
func fuzzKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	seed := sha256.Sum256([]byte("meshsds token fuzz key"))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), seed[:])
	require.NoError(t, err)
	return key
}

func signingInput(raw string) string {
	i := strings.LastIndexByte(raw, '.')
	if i < 0 {
		return ""
	}
	return raw[:i]
}

// FuzzVerify checks that Verify never panics, always returns a bounded
// reason, and never accepts a token whose signed part was not produced by the
// key's holder (here: the seeds below).
func FuzzVerify(f *testing.F) {
	key := fuzzKey(f)
	kid := keyID(f, &key.PublicKey)
	signed := map[string]bool{}
	add := func(raw string) {
		signed[signingInput(raw)] = true
		f.Add(raw)
	}
	// Fixed claims make the signing input identical in every worker.
	add(sign(f, jwt.SigningMethodES256, key, kid, goodClaims()))
	add(sign(f, jwt.SigningMethodES256, key, kid, without(goodClaims(), "tags")))
	add(sign(f, jwt.SigningMethodES256, key, kid, with(goodClaims(), "tags", map[string][]string{"a": {"b", "c"}, "d": {}})))
	add(sign(f, jwt.SigningMethodES256, key, kid, without(goodClaims(), "mesh")))
	add(sign(f, jwt.SigningMethodES256, key, kid, with(goodClaims(), "exp", now.Unix())))
	f.Add(sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, goodClaims()))
	f.Add(sign(f, jwt.SigningMethodHS256, []byte("secret"), kid, goodClaims()))
	f.Add("")
	f.Add("..")
	f.Add("eyJhbGciOiJFUzI1NiJ9.e30.")

	v := token.NewVerifier(&key.PublicKey)
	reasons := map[string]bool{
		"malformed": true, "bad_signature": true, "expired": true,
		"not_yet_valid": true, "missing_claim": true,
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(raw, now)
		if err != nil {
			require.Nil(t, c)
			require.True(t, reasons[token.Reason(err)], "unexpected reason %q for %v", token.Reason(err), err)
			return
		}
		require.True(t, signed[signingInput(raw)], "accepted a token the key never signed: %q", raw)
		require.NotEmpty(t, c.Mesh)
		require.NotEmpty(t, c.Name)
		require.NotEmpty(t, c.ID)
		require.True(t, c.ExpiresAt.After(now))
	})
}

// FuzzParseSigningKey checks that the key file decoder never panics and only
// returns P-256 keys.
func FuzzParseSigningKey(f *testing.F) {
	data, err := token.MarshalSigningKey(fuzzKey(f))
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := token.ParseSigningKey(data)
		if err != nil {
			require.Nil(t, key)
			return
		}
		require.Equal(t, elliptic.P256(), key.Curve)
	})
}

// FuzzParseTags checks that ParseTags never panics and that every accepted
// entry lands in the map.
func FuzzParseTags(f *testing.F) {
	f.Add("kuma.io/service=web", "version=v1")
	f.Add("=", "a")
	f.Fuzz(func(t *testing.T, a, b string) {
		tags, err := token.ParseTags([]string{a, b})
		if err != nil {
			return
		}
		for _, e := range []string{a, b} {
			k, v, ok := strings.Cut(e, "=")
			require.True(t, ok)
			require.Contains(t, tags[k], v)
		}
	})
}

// FuzzIDExpiry checks that the ids IDExpiry reads are exactly the ones
// Issue writes: 32 hex digits, "-", the expiry's Unix seconds in one
// spelling. A revocation list entry that differs in any byte keeps its
// unknown expiry and is never pruned.
func FuzzIDExpiry(f *testing.F) {
	for _, s := range []string{"0123456789abcdef0123456789abcdef-1798761600", "0123456789abcdef0123456789abcdef", "x-1", "0123456789abcdef0123456789abcdef-00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		exp, ok := token.IDExpiry(id)
		if !ok {
			return
		}
		require.Equal(t, id[:32]+"-"+strconv.FormatInt(exp.Unix(), 10), id)
		require.Equal(t, strings.ToLower(id[:32]), id[:32])
	})
}
