package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshsds/meshsds/internal/testing/kubetest"
)

func TestWebhookFlags(t *testing.T) {
	for _, tc := range []struct {
		name       string
		flags      WebhookConfig
		kubernetes bool
		want       string
	}{
		{name: "off"},
		{name: "on", flags: WebhookConfig{":5443", "c", "k"}, kubernetes: true},
		{name: "without kubernetes", flags: WebhookConfig{":5443", "c", "k"}, want: "--webhook-address needs --kubernetes"},
		{name: "without TLS", flags: WebhookConfig{Address: ":5443"}, kubernetes: true, want: "needs --webhook-tls-cert and --webhook-tls-key"},
		{name: "TLS without address", flags: WebhookConfig{TLSCert: "c", TLSKey: "k"}, kubernetes: true, want: "need --webhook-address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.flags.validate(tc.kubernetes)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestRetriable(t *testing.T) {
	gr := schema.GroupResource{Resource: "secrets"}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&url.Error{Op: "Get", URL: "https://127.0.0.1:6443", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, true},
		{apierrors.NewServiceUnavailable("starting"), true},
		{apierrors.NewTooManyRequests("slow down", 1), true},
		{apierrors.NewForbidden(gr, "x", errors.New("no")), false},
		{fmt.Errorf("secret has type %q; it is not replaced", "Opaque"), false},
	} {
		require.Equal(t, tc.want, retriable(tc.err), "%v", tc.err)
	}
}

func TestCertReloaderFollowsTheFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca := kubetest.NewCA(t, "test")
	write := func(cn string) {
		c, k := ca.Issue(t, cn, true, []net.IP{net.ParseIP("127.0.0.1")}, nil, nil)
		require.NoError(t, os.WriteFile(certFile, c, 0o600))
		require.NoError(t, os.WriteFile(keyFile, k, 0o600))
		// A later modification time, even on a coarse-grained file system.
		later := time.Now().Add(time.Duration(len(cn)) * time.Minute)
		require.NoError(t, os.Chtimes(certFile, later, later))
		require.NoError(t, os.Chtimes(keyFile, later, later))
	}
	write("first")
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	c, err := r.get()
	require.NoError(t, err)
	require.Equal(t, "first", c.Leaf.Subject.CommonName)

	write("second!")
	c, err = r.get()
	require.NoError(t, err)
	require.Equal(t, "second!", c.Leaf.Subject.CommonName)

	// A broken file keeps the last good certificate, with the error.
	require.NoError(t, os.WriteFile(keyFile, []byte("garbage"), 0o600))
	c, err = r.get()
	require.Error(t, err)
	require.Equal(t, "second!", c.Leaf.Subject.CommonName)
}

func TestKubeGlobalSecretsGivesUpAfterItsTimeout(t *testing.T) {
	// No API server behind the address: every attempt is refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+addr+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600))
	src, err := newKubeSource(&Config{Kubeconfig: kc, Namespace: "kuma-system"}, slog.New(slog.DiscardHandler), nil, nil)
	require.NoError(t, err)
	gs := kubeGlobalSecrets{src: src, log: slog.New(slog.DiscardHandler), timeout: 2 * time.Second}
	_, err = gs.GetOrCreateGlobalSecret(context.Background(), "k", func() ([]byte, error) { return []byte("v"), nil })
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
