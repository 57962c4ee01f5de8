package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var now = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

func readPEM(t *testing.T, path, typ string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	block, rest := pem.Decode(data)
	require.NotNil(t, block, path)
	require.Equal(t, typ, block.Type)
	require.Empty(t, bytes.TrimSpace(rest))
	return block.Bytes
}

func TestRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "prod")
	var out bytes.Buffer
	require.NoError(t, run([]string{"-out", dir, "-mesh", "prod"}, &out, now))
	require.Contains(t, out.String(), "wrote")

	cert, err := x509.ParseCertificate(readPEM(t, filepath.Join(dir, "ca-cert"), "CERTIFICATE"))
	require.NoError(t, err)
	k, err := x509.ParsePKCS8PrivateKey(readPEM(t, filepath.Join(dir, "ca-key"), "PRIVATE KEY"))
	require.NoError(t, err)
	key, ok := k.(*ecdsa.PrivateKey)
	require.True(t, ok)
	require.Equal(t, elliptic.P256(), key.Curve)
	require.True(t, key.PublicKey.Equal(cert.PublicKey), "key matches certificate")

	require.True(t, cert.IsCA)
	require.True(t, cert.BasicConstraintsValid)
	require.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, cert.KeyUsage)
	require.Len(t, cert.URIs, 1)
	require.Equal(t, "spiffe://prod", cert.URIs[0].String())
	require.Equal(t, now.Add(-time.Minute), cert.NotBefore)
	require.Equal(t, now.Add(10*365*24*time.Hour), cert.NotAfter)
	require.NoError(t, cert.CheckSignatureFrom(cert), "self-signed")

	st, err := os.Stat(filepath.Join(dir, "ca-key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "no temporary files are left behind")

	// A second run keeps the files; -force replaces them.
	before, err := os.ReadFile(filepath.Join(dir, "ca-cert"))
	require.NoError(t, err)
	out.Reset()
	require.NoError(t, run([]string{"-out", dir, "-mesh", "prod"}, &out, now))
	require.Contains(t, out.String(), "keeping them")
	after, err := os.ReadFile(filepath.Join(dir, "ca-cert"))
	require.NoError(t, err)
	require.Equal(t, before, after)

	require.NoError(t, run([]string{"-out", dir, "-mesh", "prod", "-force"}, &out, now))
	after, err = os.ReadFile(filepath.Join(dir, "ca-cert"))
	require.NoError(t, err)
	require.NotEqual(t, before, after)
}

func TestRunErrors(t *testing.T) {
	half := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(half, "ca-cert"), []byte("x"), 0o600))
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "bad mesh", args: []string{"-out", t.TempDir(), "-mesh", "Bad/Mesh"}, wantErr: "-mesh"},
		{name: "empty mesh", args: []string{"-out", t.TempDir(), "-mesh", ""}, wantErr: "-mesh"},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: "nope"},
		{name: "stray argument", args: []string{"-out", t.TempDir(), "extra"}, wantErr: "unexpected"},
		{name: "only one file exists", args: []string{"-out", half}, wantErr: "only one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			require.ErrorContains(t, run(tc.args, &out, now), tc.wantErr)
		})
	}
}
