package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// adminTLSListener opens the remote admin endpoint: HTTPS whose clients must
// present a certificate from one of the CAs in --admin-client-certs-dir.
func adminTLSListener(cfg *Config, h http.Handler, log *slog.Logger) (listener, error) {
	certs := &certReloader{certFile: cfg.AdminTLSCert, keyFile: cfg.AdminTLSKey}
	if _, err := certs.get(); err != nil {
		return listener{}, fmt.Errorf("--admin-tls-cert/--admin-tls-key: %w", err)
	}
	cas := &clientCAs{dir: cfg.AdminClientCertsDir}
	_, n, err := cas.get()
	if err != nil {
		return listener{}, err
	}
	log.Info("remote admin access enabled", "address", cfg.AdminTLSAddress, "client_cas", n)
	tc := &tls.Config{
		GetCertificate: certs.getCertificate(log, "admin"),
		MinVersion:     tls.VersionTLS12,
		// The certificate is checked in requireClientCert, so that a missing
		// or untrusted one gets a clear 401/403 instead of a failed handshake.
		ClientAuth: tls.RequestClientCert,
	}
	lis, err := listenTCP(cfg.AdminTLSAddress)
	if err != nil {
		return listener{}, fmt.Errorf("--admin-tls-address: %w", err)
	}
	return listener{name: "admin_tls", lis: tls.NewListener(lis, tc), http: newHTTPServer(requireClientCert(cas, h, log))}, nil
}

// loadClientCAs reads every *.pem file of dir into a pool.
func loadClientCAs(dir string) (*x509.CertPool, int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		return nil, 0, err
	}
	pool := x509.NewCertPool()
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, 0, fmt.Errorf("--admin-client-certs-dir: %w", err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, 0, fmt.Errorf("--admin-client-certs-dir: %s holds no PEM certificate", f)
		}
		n++
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("--admin-client-certs-dir %s holds no *.pem file: no client could ever connect", dir)
	}
	return pool, n, nil
}

// clientCAs are the CAs of --admin-client-certs-dir, read again whenever
// the directory's *.pem files change: a certificate removed from it is
// refused from the next request on, not after a restart.
type clientCAs struct {
	dir string

	mu    sync.Mutex
	stamp string
	pool  *x509.CertPool
	n     int
}

// get returns the current pool. When the files cannot be read, or hold no
// certificate, it fails closed: an error, and no client is trusted.
func (c *clientCAs) get() (*x509.CertPool, int, error) {
	files, err := filepath.Glob(filepath.Join(c.dir, "*.pem"))
	if err != nil {
		return nil, 0, err
	}
	var stamp strings.Builder
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, 0, fmt.Errorf("--admin-client-certs-dir: %w", err)
		}
		fmt.Fprintf(&stamp, "%s\x00%d\x00%d\x00", f, fi.Size(), fi.ModTime().UnixNano())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pool != nil && stamp.String() == c.stamp {
		return c.pool, c.n, nil
	}
	c.pool, c.n, c.stamp = nil, 0, ""
	pool, n, err := loadClientCAs(c.dir)
	if err != nil {
		return nil, 0, err
	}
	c.pool, c.n, c.stamp = pool, n, stamp.String()
	return pool, n, nil
}

// requireClientCert answers 401 without a client certificate and 403 with
// one that does not chain to the current CAs.
func requireClientCert(cas *clientCAs, next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			deny(w, http.StatusUnauthorized, "a client certificate is required for remote admin access")
			return
		}
		pool, _, err := cas.get()
		if err != nil {
			log.Error("admin client CAs cannot be read: refusing every admin client until they can", "err", err)
			deny(w, http.StatusForbidden, "the server cannot read its trusted client CAs")
			return
		}
		inter := x509.NewCertPool()
		for _, c := range r.TLS.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := r.TLS.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			log.Warn("refused admin client certificate", "subject", leaf.Subject.String(), "remote", r.RemoteAddr, "err", err)
			deny(w, http.StatusForbidden, "the client certificate is not trusted by this server")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func deny(w http.ResponseWriter, code int, details string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"title": http.StatusText(code), "details": details})
}
