package sds

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"Bearer eyJ.a.b", "eyJ.a.b", true},
		{"bearer eyJ.a.b", "eyJ.a.b", true},
		{"BEARER   eyJ.a.b  ", "eyJ.a.b", true},
		{"eyJ.a.b", "eyJ.a.b", true}, // Kuma's file-based metadata sends the token alone
		{"  eyJ.a.b\n", "eyJ.a.b", true},
		{"Basic dXNlcjpwYXNz", "", false},
		{"Bearer", "Bearer", true}, // one word is a (bad) token, refused by verification
		{"Bearer ", "Bearer", true},
		{"Bearer a b", "", false},
		{"", "", false},
		{"   ", "", false},
	} {
		got, ok := bearerToken(tc.in)
		require.Equal(t, tc.ok, ok, "%q", tc.in)
		if ok {
			require.Equal(t, tc.want, got, "%q", tc.in)
		}
	}
}
