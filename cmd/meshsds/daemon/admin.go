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
)

// adminTLSListener opens the remote admin endpoint: HTTPS whose clients must
// present a certificate from one of the CAs in --admin-client-certs-dir.
func adminTLSListener(cfg *Config, h http.Handler, log *slog.Logger) (listener, error) {
	certs := &certReloader{certFile: cfg.AdminTLSCert, keyFile: cfg.AdminTLSKey}
	if _, err := certs.get(); err != nil {
		return listener{}, fmt.Errorf("--admin-tls-cert/--admin-tls-key: %w", err)
	}
	pool, n, err := loadClientCAs(cfg.AdminClientCertsDir)
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
	return listener{name: "admin_tls", lis: tls.NewListener(lis, tc), http: newHTTPServer(requireClientCert(pool, h, log))}, nil
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

// requireClientCert answers 401 without a client certificate and 403 with
// one that does not chain to pool.
func requireClientCert(pool *x509.CertPool, next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			deny(w, http.StatusUnauthorized, "a client certificate is required for remote admin access")
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
