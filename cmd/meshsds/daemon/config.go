// Package daemon is "meshsds serve" put together: it builds every component
// from one Config (the store, the signing key, the sources and the
// reconciler, the SDS serving state and server, the admin API, the
// webhook, the listeners) and runs them until the context ends or one
// fails. It holds wiring only; the behaviour lives in the packages it
// wires. cmd/meshsds fills the Config from flags, the environment and a
// config file.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// Config is everything "meshsds serve" is told. Defaults sets what a flag
// left unset means; Validate checks the combination before anything starts.
type Config struct {
	SecretsDirs    []string
	DataDir        string
	SDSAddress     string
	AdminAddress   string // empty: no plain-HTTP admin listener
	MetricsAddress string // empty: no metrics listener
	Auth           string
	SDSTLSCert     string
	SDSTLSKey      string
	SDSInsecure    bool
	SDSTransport   string
	// The SDS port's limits on what does not authenticate (see
	// internal/grpclite Config).
	SDSMaxConnections          int
	SDSUnauthenticatedTimeout  time.Duration
	SDSMaxConnectionBufferSize int
	AdminTLSAddress            string
	AdminTLSCert               string
	AdminTLSKey                string
	AdminClientCertsDir        string
	Kubernetes                 bool
	Namespace                  string
	Kubeconfig                 string
	Webhook                    WebhookConfig
	Store                      string
	PostgresURL                string
	EncryptionKeyFile          string // empty: secrets stored in plain text
	AuditLog                   string // a file, "-" for standard output, empty for none
	LogLevel                   string
	LogFormat                  string
	Pprof                      bool
	ShutdownTimeout            time.Duration
	CARotationTimeout          time.Duration
	// ReplicaLease: see cluster.Config.Lease.
	ReplicaLease    time.Duration
	WorkloadKeyType string
}

// WebhookConfig configures the validating admission webhook (Kubernetes).
type WebhookConfig struct {
	Address string
	TLSCert string
	TLSKey  string
}

// Defaults returns the configuration of "meshsds serve" without flags.
func Defaults() Config {
	return Config{
		DataDir:                    "./meshsds-data",
		SDSAddress:                 "127.0.0.1:5677",
		AdminAddress:               "127.0.0.1:5681",
		MetricsAddress:             ":5680",
		Auth:                       "dataplane-token",
		SDSTransport:               "grpclite",
		SDSMaxConnections:          20000,
		SDSUnauthenticatedTimeout:  10 * time.Second,
		SDSMaxConnectionBufferSize: 4 << 20,
		Namespace:                  "kuma-system",
		Store:                      "sqlite",
		LogLevel:                   "info",
		LogFormat:                  "text",
		ShutdownTimeout:            10 * time.Second,
		CARotationTimeout:          time.Minute,
		ReplicaLease:               15 * time.Second,
		WorkloadKeyType:            string(pki.KeyECDSA),
	}
}

// Validate checks the combination of settings; errors name the flag.
func (c *Config) Validate() error {
	switch c.Auth {
	case "dataplane-token", "none":
	default:
		return fmt.Errorf("--auth must be dataplane-token or none, not %q", c.Auth)
	}
	if err := c.Webhook.validate(c.Kubernetes); err != nil {
		return err
	}
	if c.WorkloadKeyType != string(pki.KeyECDSA) && c.WorkloadKeyType != string(pki.KeyRSA) {
		return fmt.Errorf("--workload-key-type must be ecdsa or rsa, not %q", c.WorkloadKeyType)
	}
	if c.SDSTransport != "grpclite" && c.SDSTransport != "grpc-go" {
		return fmt.Errorf("--sds-transport must be grpclite or grpc-go, not %q", c.SDSTransport)
	}
	if c.SDSMaxConnections <= 0 || c.SDSUnauthenticatedTimeout <= 0 || c.SDSMaxConnectionBufferSize < 64<<10 {
		return errors.New("--sds-max-connections and --sds-unauthenticated-timeout must be positive, --sds-max-connection-buffer at least 65536")
	}
	if c.Store != "sqlite" && c.Store != "postgres" {
		return fmt.Errorf("--store must be sqlite or postgres, not %q", c.Store)
	}
	if c.Store == "postgres" && c.PostgresURL == "" {
		return errors.New("--store postgres needs --postgres-url")
	}
	if c.Store != "postgres" && c.PostgresURL != "" {
		return errors.New("--postgres-url is only used with --store postgres: add --store postgres, or drop --postgres-url")
	}
	if c.ReplicaLease < time.Second {
		return fmt.Errorf("--replica-lease must be at least 1s, not %s", c.ReplicaLease)
	}
	if c.SDSAddress == "" {
		return errors.New("--sds-address must be set: host:port or unix:///path")
	}
	if (c.SDSTLSCert == "") != (c.SDSTLSKey == "") {
		return errors.New("--sds-tls-cert and --sds-tls-key go together")
	}
	if c.SDSTLSCert == "" && !c.SDSInsecure && !strings.HasPrefix(c.SDSAddress, "unix://") && !isLoopback(c.SDSAddress) {
		return fmt.Errorf("--sds-address %s is not a loopback address: give --sds-tls-cert and --sds-tls-key, or --sds-insecure to serve plain text anyway", c.SDSAddress)
	}
	if c.AdminTLSAddress != "" && (c.AdminTLSCert == "" || c.AdminTLSKey == "" || c.AdminClientCertsDir == "") {
		return errors.New("--admin-tls-address needs --admin-tls-cert, --admin-tls-key and --admin-client-certs-dir: remote admin access requires client certificates")
	}
	if c.AdminTLSAddress == "" && (c.AdminTLSCert != "" || c.AdminTLSKey != "" || c.AdminClientCertsDir != "") {
		return errors.New("--admin-tls-cert, --admin-tls-key and --admin-client-certs-dir need --admin-tls-address")
	}
	// An empty address turns the plain admin listener off; any other must
	// be loopback (":5681" or "0.0.0.0:5681" are every interface).
	if c.AdminAddress != "" && !isLoopback(c.AdminAddress) {
		return fmt.Errorf("--admin-address %s is not a loopback address: plain-HTTP admin access is only allowed from this machine (remote access: --admin-tls-address with client certificates)", c.AdminAddress)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	}
	return nil
}

// validate checks the webhook settings against --kubernetes.
func (w *WebhookConfig) validate(kubernetes bool) error {
	if w.Address == "" {
		if w.TLSCert != "" || w.TLSKey != "" {
			return errors.New("--webhook-tls-cert and --webhook-tls-key need --webhook-address")
		}
		return nil
	}
	if !kubernetes {
		return errors.New("--webhook-address needs --kubernetes: the webhook checks Kubernetes objects against what the Kubernetes source holds")
	}
	if w.TLSCert == "" || w.TLSKey == "" {
		return errors.New("--webhook-address needs --webhook-tls-cert and --webhook-tls-key: the API server calls webhooks over HTTPS only")
	}
	return nil
}

// isLoopback reports whether a host:port address only listens on loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseLevel parses --log-level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level: %w", err)
	}
	return l, nil
}

// NewLogger is the daemon's logger of a validated Config, writing to w.
func NewLogger(cfg *Config, w io.Writer) *slog.Logger {
	level, _ := ParseLevel(cfg.LogLevel) // validated before
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
