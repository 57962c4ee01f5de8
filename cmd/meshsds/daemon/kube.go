package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/kube"
	"github.com/meshsds/meshsds/secretsource/reconcile"
)

// In Kubernetes mode the source keeps meshsds' global secrets and generates
// builtin CAs as Secrets, so that every replica agrees on them.
var (
	_ globalSecrets           = (*kube.Source)(nil)
	_ globalSecrets           = kubeGlobalSecrets{}
	_ reconcile.CAProvisioner = (*kube.Source)(nil)
	_ secretsource.Source     = (*kube.Source)(nil)
)

// newKubeSource builds the Kubernetes source from --kubeconfig (in-cluster
// configuration when empty) and --namespace. client-go's own logs (klog)
// go to log.
func newKubeSource(cfg *Config, log *slog.Logger, reg prometheus.Registerer, leading func() bool) (*kube.Source, error) {
	restCfg, err := kubeRESTConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	klog.SetSlogLogger(log.With("component", "client-go"))
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return kube.New(kube.Config{Client: client, Dynamic: dyn, Namespace: cfg.Namespace, Logger: log, Registerer: reg, Leading: leading})
}

// kubeRESTConfig loads a kubeconfig file, or the in-cluster configuration
// when path is empty.
func kubeRESTConfig(path string) (*rest.Config, error) {
	var (
		c   *rest.Config
		err error
	)
	if path == "" {
		c, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("--kubernetes without --kubeconfig needs to run in a Kubernetes pod: %w", err)
		}
	} else if c, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
	}
	c.UserAgent = "meshsds"
	// client-go's default of 5 requests a second (burst 10) would make
	// replicas going through a CA change together wait on their own
	// client: each step of the change renews a Lease.
	if c.QPS == 0 {
		c.QPS, c.Burst = 50, 100
	}
	return c, nil
}

// kubeGlobalSecrets keeps global secrets in Kubernetes, retrying while the
// API server cannot be reached (a pod may start before it is reachable), but
// not on errors a retry cannot fix (access denied, a Secret of the wrong
// type).
type kubeGlobalSecrets struct {
	src     *kube.Source
	log     *slog.Logger
	timeout time.Duration
}

func (k kubeGlobalSecrets) GetOrCreateGlobalSecret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	delay := 500 * time.Millisecond
	for {
		data, err := k.src.GetOrCreateGlobalSecret(ctx, name, generate)
		if err == nil || !retriable(err) {
			return data, err
		}
		k.log.Warn("cannot reach the Kubernetes API server; retrying", "secret", name, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("global secret %s: %w (last error: %w)", name, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// retriable reports whether err may go away by itself.
func retriable(err error) bool {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
			apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err)
	}
	// Transport errors (refused, reset, timed out) come as *url.Error,
	// which is a net.Error.
	var netErr net.Error
	return errors.As(err, &netErr)
}

// webhookListener opens the webhook's HTTPS listener. The certificate is
// read again when its files change, so that a rotated certificate (e.g. by
// cert-manager) is served without a restart.
func webhookListener(cfg *Config, view kube.ResourceView, log *slog.Logger, reg prometheus.Registerer) (listener, error) {
	certs := &certReloader{certFile: cfg.Webhook.TLSCert, keyFile: cfg.Webhook.TLSKey}
	if _, err := certs.get(); err != nil {
		return listener{}, fmt.Errorf("--webhook-tls-cert/--webhook-tls-key: %w", err)
	}
	wh, err := kube.NewWebhook(kube.WebhookConfig{View: view, Namespace: cfg.Namespace, Logger: log, Registerer: reg})
	if err != nil {
		return listener{}, err
	}
	lis, err := listenTCP(cfg.Webhook.Address)
	if err != nil {
		return listener{}, fmt.Errorf("--webhook-address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(kube.WebhookPath, wh)
	tlsLis := tls.NewListener(lis, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.getCertificate(log, "webhook")})
	return listener{name: "webhook", lis: tlsLis, http: newHTTPServer(mux)}, nil
}
