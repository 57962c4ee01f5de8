package token_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/sds/token"
)

func TestLoadOrCreateSigningKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	first, err := token.LoadOrCreateSigningKey(dir)
	require.NoError(t, err)
	require.Equal(t, elliptic.P256(), first.Curve)

	path := filepath.Join(dir, token.SigningKeyFile)
	if runtime.GOOS != "windows" {
		st, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		st, err = os.Stat(dir)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	require.Equal(t, "PRIVATE KEY", block.Type)
	_, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)

	second, err := token.LoadOrCreateSigningKey(dir)
	require.NoError(t, err)
	require.True(t, first.Equal(second), "second call must return the stored key")

	// A token issued with the first key verifies with the reloaded one.
	raw, err := token.NewIssuer(first).Issue(token.Claims{Mesh: "default", Name: "web"}, time.Hour, now)
	require.NoError(t, err)
	_, err = token.NewVerifier(&second.PublicKey).Verify(raw, now)
	require.NoError(t, err)

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary files are left behind")
}

func TestLoadOrCreateSigningKeyRefusesBadFile(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	rsaDER, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	p384DER, err := x509.MarshalPKCS8PrivateKey(p384)
	require.NoError(t, err)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	sec1DER, err := x509.MarshalECPrivateKey(p256)
	require.NoError(t, err)

	tests := []struct {
		name    string
		content []byte
		wantErr string
	}{
		{name: "empty", content: nil, wantErr: "no PEM block"},
		{name: "garbage", content: []byte("hello"), wantErr: "no PEM block"},
		{name: "truncated PEM", content: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x03}}), wantErr: "PKCS#8"},
		{name: "SEC1 block type", content: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER}), wantErr: "EC PRIVATE KEY"},
		{name: "RSA key", content: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}), wantErr: "*rsa.PrivateKey"},
		{name: "P-384 key", content: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384DER}), wantErr: "P-384"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, token.SigningKeyFile)
			require.NoError(t, os.WriteFile(path, tc.content, 0o600))
			_, err := token.LoadOrCreateSigningKey(dir)
			require.ErrorContains(t, err, tc.wantErr)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, string(tc.content), string(after), "a bad key file must never be replaced")
		})
	}

	t.Run("unreadable", func(t *testing.T) {
		dir := t.TempDir()
		// A directory in the key's place cannot be read as a file, even by root.
		require.NoError(t, os.Mkdir(filepath.Join(dir, token.SigningKeyFile), 0o700))
		_, err := token.LoadOrCreateSigningKey(dir)
		require.ErrorContains(t, err, "reading token signing key")
	})

	t.Run("data dir is a file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "file")
		require.NoError(t, os.WriteFile(path, nil, 0o600))
		_, err := token.LoadOrCreateSigningKey(path)
		require.ErrorContains(t, err, "creating data directory")
	})
}

func TestLoadOrCreateSigningKeyConcurrent(t *testing.T) {
	for round := range 5 {
		dir := filepath.Join(t.TempDir(), "data")
		const n = 8
		keys := make([]*ecdsa.PrivateKey, n)
		errs := make([]error, n)
		var start, done sync.WaitGroup
		start.Add(1)
		for i := range n {
			done.Go(func() {
				start.Wait()
				keys[i], errs[i] = token.LoadOrCreateSigningKey(dir)
			})
		}
		start.Done()
		done.Wait()
		for i := range n {
			require.NoError(t, errs[i], "round %d creator %d", round, i)
			require.True(t, keys[0].Equal(keys[i]), "round %d: creator %d got a different key", round, i)
		}
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, entries, 1, "no temporary files are left behind")
	}
}

func TestMarshalParseSigningKey(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	data, err := token.MarshalSigningKey(key)
	require.NoError(t, err)
	got, err := token.ParseSigningKey(data)
	require.NoError(t, err)
	require.True(t, key.Equal(got))
}
