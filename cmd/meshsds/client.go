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
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// clientConfig is how the CLI reaches the admin API.
type clientConfig struct {
	apiURL         string
	clientCertFile string
	clientKeyFile  string
	caCertFile     string
}

// addClientFlags adds the admin API connection flags to a CLI verb.
func addClientFlags(cmd *cobra.Command, c *clientConfig) {
	f := cmd.PersistentFlags()
	def := os.Getenv("MESHSDS_API_URL")
	if def == "" {
		def = "http://127.0.0.1:5681"
	}
	f.StringVar(&c.apiURL, "api-url", def, "admin API URL (env MESHSDS_API_URL)")
	f.StringVar(&c.clientCertFile, "client-cert-file", "", "client certificate for an https admin API")
	f.StringVar(&c.clientKeyFile, "client-key-file", "", "key of --client-cert-file")
	f.StringVar(&c.caCertFile, "ca-cert-file", "", "CA that signed the admin API's server certificate")
}

// apiClient calls the admin API.
type apiClient struct {
	base *url.URL
	http *http.Client
}

func (c *clientConfig) client() (*apiClient, error) {
	u, err := url.Parse(c.apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--api-url %q: must be http://host:port or https://host:port", c.apiURL)
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 10 * time.Second}
	if u.Scheme == "https" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.caCertFile != "" {
			pem, err := os.ReadFile(c.caCertFile)
			if err != nil {
				return nil, fmt.Errorf("--ca-cert-file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca-cert-file %s: no PEM certificate in it", c.caCertFile)
			}
			tc.RootCAs = pool
		}
		if (c.clientCertFile == "") != (c.clientKeyFile == "") {
			return nil, errors.New("--client-cert-file and --client-key-file go together")
		}
		if c.clientCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.clientCertFile, c.clientKeyFile)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		tr.TLSClientConfig = tc
	}
	return &apiClient{base: u, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
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

// explain turns a transport error into one clear line.
func (c *apiClient) explain(err error) error {
	var opErr *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the meshsds admin API at %s (connection refused): is \"meshsds serve\" running there? "+
			"Point the CLI elsewhere with --api-url or MESHSDS_API_URL", c.base)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("cannot reach the meshsds admin API at %s: %v; point the CLI elsewhere with --api-url or MESHSDS_API_URL", c.base, opErr.Err)
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
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
