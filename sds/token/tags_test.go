package token_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/sds/token"
)

func TestValidateTags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tags    map[string][]string
		wantErr string
	}{
		{"none", nil, ""},
		{"Kuma's usual tags", map[string][]string{
			"kuma.io/service": {"web_default_svc_80", "web-v2"}, "kuma.io/zone": {"us-east-1"}, "version": {"v1.2:canary"},
		}, ""},
		{"path traversal in the service", map[string][]string{"kuma.io/service": {"web/../admin"}}, `kuma.io/service value "web/../admin" is not a SPIFFE path segment: has '/'`},
		{"dot-dot service", map[string][]string{"kuma.io/service": {".."}}, `must not be ".."`},
		{"dot service", map[string][]string{"kuma.io/service": {"."}}, `must not be "."`},
		{"query and fragment in the service", map[string][]string{"kuma.io/service": {"admin?x#y"}}, `has '?'`},
		{"colon in the service", map[string][]string{"kuma.io/service": {"a:b"}}, `has ':'`},
		{"NUL in a value", map[string][]string{"version": {"v1\x00"}}, `value "v1\x00" of "version" has '\x00'`},
		{"space in a value", map[string][]string{"version": {"v 1"}}, `has ' '`},
		{"unicode in a value", map[string][]string{"version": {"vä"}}, `has 'ä'`},
		{"empty value", map[string][]string{"version": {""}}, `must not be empty`},
		{"empty key", map[string][]string{"": {"x"}}, `tags: key "" must not be empty`},
		{"equals in a key", map[string][]string{"a=b": {"c"}}, `key "a=b" has '='`},
		{"too long", map[string][]string{"version": {string(make([]byte, 254))}}, "at most 253"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := token.ValidateTags(tc.tags)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func FuzzValidateTags(f *testing.F) {
	f.Add("kuma.io/service", "web")
	f.Add("version", "v1/../x")
	f.Fuzz(func(t *testing.T, k, v string) {
		if token.ValidateTags(map[string][]string{k: {v}}) != nil {
			return
		}
		for _, s := range []string{k, v} {
			for _, r := range s {
				require.Contains(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:/", string(r))
			}
		}
		if k == token.ServiceTag {
			require.NotContains(t, v, "/")
			require.NotContains(t, []string{".", ".."}, v)
		}
	})
}
