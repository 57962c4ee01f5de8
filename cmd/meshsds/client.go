package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// clientConfig is how the CLI reaches the admin API: the connection flags
// of one verb, resolved against the environment and the CLI config file when
// the verb runs (see resolve).
type clientConfig struct {
	apiURL         string
	clientCertFile string
	clientKeyFile  string
	caCertFile     string
	controlPlane   string
	flags          *pflag.FlagSet
}

// Environment variables of the connection settings; flags win over them,
// and they win over the CLI config file.
const (
	envCACertFile     = "MESHSDS_CA_CERT_FILE"
	envClientCertFile = "MESHSDS_CLIENT_CERT_FILE"
	envClientKeyFile  = "MESHSDS_CLIENT_KEY_FILE"
)

// addClientFlags adds the admin API connection flags to a CLI verb.
func addClientFlags(cmd *cobra.Command, c *clientConfig) {
	f := cmd.PersistentFlags()
	c.flags = f
	f.StringVar(&c.apiURL, "api-url", defaultAPIURL, "admin API URL (else $"+envAPIURL+", else the current control plane of the CLI config file: meshsds config --help)")
	f.StringVar(&c.clientCertFile, "client-cert-file", "", "client certificate for an https admin API (env "+envClientCertFile+")")
	f.StringVar(&c.clientKeyFile, "client-key-file", "", "key of --client-cert-file (env "+envClientKeyFile+")")
	f.StringVar(&c.caCertFile, "ca-cert-file", "", "CA that signed the admin API's server certificate (env "+envCACertFile+")")
	f.StringVar(&c.controlPlane, "control-plane", "", "use this control plane of the CLI config file instead of its current one")
	mustRegister(cmd, "control-plane", completeControlPlanes(os.Getenv, false))
	mustRegister(cmd, "api-url", cobra.NoFileCompletions)
}

// connection is where and how the CLI reaches an admin API, after flags,
// environment and config file are combined.
type connection struct {
	URL            string
	CACertFile     string
	ClientCertFile string
	ClientKeyFile  string
	// From says where URL came from, for error messages: "--api-url",
	// "MESHSDS_API_URL", a control plane of the config file, or the default.
	From string
}

// resolve combines the flags, the environment and the CLI config file into
// one connection. The URL is --api-url or the control plane --control-plane
// names (flags, one or the other), else $MESHSDS_API_URL, else the config
// file's current control plane, else the default. The certificate files of a control plane are used
// only with its URL, and a flag or variable for one of them wins over the
// file's. The config file is read only when its URL is the one used, so a
// broken file does not stand in the way of --api-url.
func (c *clientConfig) resolve(getenv func(string) string) (connection, error) {
	changed := func(name string) bool {
		if c.flags == nil {
			return false
		}
		f := c.flags.Lookup(name)
		return f != nil && f.Changed
	}
	if changed("api-url") && changed("control-plane") {
		return connection{}, errors.New("give --api-url or --control-plane, not both")
	}
	conn := connection{URL: defaultAPIURL, From: "the default admin API URL"}
	switch {
	case changed("api-url"):
		conn.URL, conn.From = c.apiURL, "--api-url"
	case !changed("control-plane") && getenv(envAPIURL) != "":
		conn.URL, conn.From = getenv(envAPIURL), envAPIURL
	default:
		path, err := cliConfigPath(getenv)
		if err != nil {
			return connection{}, err
		}
		cfg, err := loadCLIConfig(path)
		if err != nil {
			return connection{}, err
		}
		name := cfg.Current
		if changed("control-plane") {
			name = c.controlPlane
		}
		if name != "" {
			cp, ok := cfg.find(name)
			if !ok {
				return connection{}, fmt.Errorf("--control-plane %q: no such control plane in the CLI config file %s (meshsds config list shows them)", name, path)
			}
			dir := filepath.Dir(path)
			conn = connection{
				URL: cp.URL, CACertFile: relativeTo(dir, cp.CACertFile),
				ClientCertFile: relativeTo(dir, cp.ClientCertFile), ClientKeyFile: relativeTo(dir, cp.ClientKeyFile),
				From: fmt.Sprintf("control plane %q of %s", cp.Name, path),
			}
		}
	}
	for _, s := range []struct {
		flag, env, value string
		dst              *string
	}{
		{"ca-cert-file", envCACertFile, c.caCertFile, &conn.CACertFile},
		{"client-cert-file", envClientCertFile, c.clientCertFile, &conn.ClientCertFile},
		{"client-key-file", envClientKeyFile, c.clientKeyFile, &conn.ClientKeyFile},
	} {
		switch {
		case changed(s.flag):
			*s.dst = s.value
		case getenv(s.env) != "":
			*s.dst = getenv(s.env)
		}
	}
	return conn, nil
}

// relativeTo resolves a path of the config file against its directory.
func relativeTo(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// apiClient calls the admin API.
type apiClient struct {
	base *url.URL
	from string
	http *http.Client
	// caFile is the CA certificate file the server's certificate is
	// checked against; empty: the system's roots.
	caFile string
}

// client resolves the connection settings and builds a client.
func (c *clientConfig) client() (*apiClient, error) {
	conn, err := c.resolve(os.Getenv)
	if err != nil {
		return nil, err
	}
	return conn.client()
}

func (c connection) client() (*apiClient, error) {
	if err := checkAPIURL(c.URL); err != nil {
		return nil, fmt.Errorf("admin API URL (from %s): %w", c.From, err)
	}
	u, _ := url.Parse(c.URL)
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 10 * time.Second}
	if u.Scheme == "https" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CACertFile != "" {
			pem, err := os.ReadFile(c.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("CA certificate file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA certificate file %s: no PEM certificate in it", c.CACertFile)
			}
			tc.RootCAs = pool
		}
		if (c.ClientCertFile == "") != (c.ClientKeyFile == "") {
			return nil, errors.New("--client-cert-file and --client-key-file go together")
		}
		if c.ClientCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		tr.TLSClientConfig = tc
	}
	return &apiClient{base: u, from: c.From, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, caFile: c.CACertFile}, nil
}

// apiError is an error answer of the admin API, in Kuma's shape.
type apiError struct {
	Status  int
	Title   string `json:"title"`
	Details string `json:"details"`
	Causes  []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"causes"`
}

func (e *apiError) Error() string {
	var b strings.Builder
	b.WriteString(e.Title)
	if e.Details != "" {
		b.WriteString(": " + e.Details)
	}
	for _, c := range e.Causes {
		b.WriteString("\n  ")
		if c.Field != "" {
			b.WriteString(c.Field + ": ")
		}
		b.WriteString(c.Message)
	}
	return b.String()
}

// do sends a request and decodes a JSON answer into out (if not nil). It
// returns the status code; non-2xx answers become an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, out any) (int, error) {
	u := *c.base
	path, query, _ := strings.Cut(path, "?")
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, c.explain(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("reading the answer of %s: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, ae) != nil || ae.Title == "" {
			ae.Title = resp.Status
			ae.Details = strings.TrimSpace(string(data))
		}
		return resp.StatusCode, ae
	}
	if out == nil {
		return resp.StatusCode, nil
	}
	if s, ok := out.(*string); ok {
		*s = string(data)
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, fmt.Errorf("the admin API at %s answered something that is not JSON: %w", c.base, err)
	}
	return resp.StatusCode, nil
}

// pointElsewhere tells how to choose another admin API.
const pointElsewhere = "another with --api-url, " + envAPIURL + " or \"meshsds config use NAME\""

// explain turns a transport error into one clear line.
func (c *apiClient) explain(err error) error {
	var opErr *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the meshsds admin API at %s (from %s): connection refused. "+
			"Is \"meshsds serve\" running there? Otherwise choose "+pointElsewhere, c.base, c.from)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("cannot reach the meshsds admin API at %s (from %s): %v. Choose "+pointElsewhere, c.base, c.from, opErr.Err)
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		if c.caFile != "" {
			return fmt.Errorf("the admin API at %s presented a certificate that does not verify with the CA of %s (%v)", c.base, c.caFile, certErr.Err)
		}
		return fmt.Errorf("the admin API at %s presented a certificate this CLI does not trust (%v): pass its CA with --ca-cert-file", c.base, certErr.Err)
	}
	return fmt.Errorf("calling the admin API at %s: %w", c.base, err)
}

// page is one answer of a list endpoint: Kuma's envelope.
type page struct {
	Total int               `json:"total"`
	Items []json.RawMessage `json:"items"`
	Next  *string           `json:"next"`
}

// maxListItems bounds what the CLI gathers from one list, in case a
// server's next URLs never end.
const maxListItems = 1_000_000

// list fetches every page of the list at path, following next as kumactl
// does: only its offset is taken, and asked of this client's own URL (the
// server's next is built from the Host it was called with, which a proxy
// may have changed). The result is one envelope with every item.
func (c *apiClient) list(ctx context.Context, path string) (page, error) {
	var all page
	query := url.Values{"size": {"1000"}}
	for {
		var p page
		if _, err := c.do(ctx, http.MethodGet, path+"?"+query.Encode(), nil, &p); err != nil {
			return page{}, err
		}
		all.Total = p.Total
		all.Items = append(all.Items, p.Items...)
		if p.Next == nil || len(p.Items) == 0 || len(all.Items) >= maxListItems {
			break
		}
		next, err := url.Parse(*p.Next)
		if err != nil {
			return page{}, fmt.Errorf("the admin API at %s answered a next URL that is not one: %w", c.base, err)
		}
		offset := next.Query().Get("offset")
		if offset == "" || offset == query.Get("offset") {
			break
		}
		query.Set("offset", offset)
	}
	if all.Items == nil {
		all.Items = []json.RawMessage{}
	}
	return all, nil
}
