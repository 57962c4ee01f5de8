package meshconfig

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

func TestGenerateBuiltinCA(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		config   string
		wantRSA  bool
		validity time.Duration
	}{
		{"defaults: ECDSA, 10 years", ``, false, DefaultBuiltinCAValidity},
		{"RSA and 1 year", `{"caCert":{"RSAbits":2048,"expiration":"1y"}}`, true, 365 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseBuiltinConfig(json.RawMessage(tc.config))
			require.NoError(t, err)
			keyPEM, err := GenerateBuiltinKey(cfg)
			require.NoError(t, err)
			certPEM, err := GenerateBuiltinCert("payments", cfg, keyPEM, now)
			require.NoError(t, err)
			// The pair passes the same rules as a provided CA.
			ca, err := pki.ParseCA(certPEM, keyPEM, now)
			require.NoError(t, err)
			c := ca.Chain[0]
			require.True(t, c.IsCA)
			require.Equal(t, "spiffe://payments", c.URIs[0].String())
			require.Equal(t, now.Add(tc.validity), c.NotAfter)
			if tc.wantRSA {
				require.IsType(t, &rsa.PublicKey{}, c.PublicKey)
			} else {
				require.IsType(t, &ecdsa.PublicKey{}, c.PublicKey)
			}
		})
	}
}

func TestResolveBuiltin(t *testing.T) {
	now := time.Now()
	cfg, err := ParseBuiltinConfig(nil)
	require.NoError(t, err)
	keyPEM, err := GenerateBuiltinKey(cfg)
	require.NoError(t, err)
	certPEM, err := GenerateBuiltinCert("default", cfg, keyPEM, now)
	require.NoError(t, err)
	m := &Mesh{Name: "default", MTLS: &MTLS{Backends: []Backend{{Name: "ca-1", Type: BackendBuiltin}}}}
	certName, keyName := BuiltinSecretNames("default", "ca-1")
	require.Equal(t, "default.ca-builtin-cert-ca-1", certName)
	rm, err := ResolveMesh(m, map[SecretKey]*Secret{
		{Mesh: "default", Name: certName}: {Mesh: "default", Name: certName, Data: certPEM},
		{Mesh: "default", Name: keyName}:  {Mesh: "default", Name: keyName, Data: keyPEM},
	}, now, ResolveOptions{})
	require.NoError(t, err)
	require.Equal(t, "ca-1", rm.Backend)
	require.NotNil(t, rm.CA)
}
