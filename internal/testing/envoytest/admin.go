package envoytest

import (
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Certs is the admin's /certs: the certificates of every TLS context Envoy
// holds (a listener's filter chain, a cluster), as Envoy reports them.
type Certs struct {
	Certificates []TLSContextCerts `json:"certificates"`
}

// TLSContextCerts is one TLS context's trusted CAs and certificate chain.
// An SDS context that has not received its secret yet is missing, or has
// empty lists.
type TLSContextCerts struct {
	CACert    []CertDetails `json:"ca_cert"`
	CertChain []CertDetails `json:"cert_chain"`
}

// CertDetails is one certificate as /certs shows it.
type CertDetails struct {
	Path                string `json:"path"`
	SerialNumber        string `json:"serial_number"` // hex
	SubjectAltNames     []SAN  `json:"subject_alt_names"`
	DaysUntilExpiration string `json:"days_until_expiration"`
	ValidFrom           string `json:"valid_from"`
	ExpirationTime      string `json:"expiration_time"`
}

// SAN is one subject alternative name; one field is set.
type SAN struct {
	URI       string `json:"uri,omitempty"`
	DNS       string `json:"dns,omitempty"`
	IPAddress string `json:"ip_address,omitempty"`
}

// Certs fetches /certs.
func (e *Envoy) Certs() (*Certs, error) {
	body, err := e.Admin(http.MethodGet, "/certs")
	if err != nil {
		return nil, err
	}
	var c Certs
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		return nil, fmt.Errorf("%s /certs: %w", e.name, err)
	}
	return &c, nil
}

// URIs returns the URI SANs of the leaf certificate of every context that
// has one (the SPIFFE ids Envoy presents), in order, duplicates kept.
func (c *Certs) URIs() []string {
	var out []string
	for _, ctx := range c.Certificates {
		if len(ctx.CertChain) == 0 {
			continue
		}
		for _, san := range ctx.CertChain[0].SubjectAltNames {
			if san.URI != "" {
				out = append(out, san.URI)
			}
		}
	}
	return out
}

// CASerials returns the serial numbers of every trusted CA certificate of
// every context, normalised as SerialHex does.
func (c *Certs) CASerials() []string {
	var out []string
	for _, ctx := range c.Certificates {
		for _, ca := range ctx.CACert {
			out = append(out, normSerial(ca.SerialNumber))
		}
	}
	return out
}

// LeafSerials returns the serial number of the leaf of every context that
// has a certificate chain, normalised as SerialHex does.
func (c *Certs) LeafSerials() []string {
	var out []string
	for _, ctx := range c.Certificates {
		if len(ctx.CertChain) > 0 {
			out = append(out, normSerial(ctx.CertChain[0].SerialNumber))
		}
	}
	return out
}

// Holds reports whether at least n TLS contexts present a certificate
// whose leaf has the URI SAN uri, and every context presenting one trusts
// exactly the CAs of the given serials (SerialHex), in any order. It is the
// check that an Envoy has both of its SDS secrets, from the right CA, in n
// places (e.g. an inbound listener and an upstream cluster). Contexts that
// present no certificate (an upstream TLS context that only verifies its
// server) do not count.
func (c *Certs) Holds(n int, uri string, caSerials ...string) bool {
	want := map[string]bool{}
	for _, s := range caSerials {
		want[normSerial(s)] = true
	}
	holding := 0
	for _, ctx := range c.Certificates {
		if len(ctx.CertChain) == 0 {
			continue
		}
		found := false
		for _, san := range ctx.CertChain[0].SubjectAltNames {
			found = found || san.URI == uri
		}
		if !found || len(ctx.CACert) != len(want) {
			return false
		}
		for _, ca := range ctx.CACert {
			if !want[normSerial(ca.SerialNumber)] {
				return false
			}
		}
		holding++
	}
	return holding >= n
}

// SerialHex formats a certificate serial number the way /certs does, for
// comparison with CertDetails.SerialNumber.
func SerialHex(n *big.Int) string { return normSerial(n.Text(16)) }

func normSerial(s string) string {
	s = strings.TrimLeft(strings.ToLower(strings.ReplaceAll(s, ":", "")), "0")
	if s == "" {
		return "0"
	}
	return s
}

// Stats fetches the admin's counters and gauges (not histograms or text
// readouts) whose name matches the regular expression filter (all when
// empty), by name.
func (e *Envoy) Stats(filter string) (map[string]uint64, error) {
	path := "/stats?format=json"
	if filter != "" {
		path += "&filter=" + url.QueryEscape(filter)
	}
	body, err := e.Admin(http.MethodGet, path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Stats []struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		return nil, fmt.Errorf("%s /stats: %w", e.name, err)
	}
	out := map[string]uint64{}
	for _, s := range doc.Stats {
		if s.Name == "" || len(s.Value) == 0 || s.Value[0] == '"' {
			continue // histograms, text readouts
		}
		v, err := strconv.ParseUint(string(s.Value), 10, 64)
		if err != nil {
			continue
		}
		out[s.Name] = v
	}
	return out, nil
}

// Stat returns one counter or gauge; a stat Envoy does not have is 0.
func (e *Envoy) Stat(name string) (uint64, error) {
	stats, err := e.Stats("^" + regexpQuote(name) + "$")
	if err != nil {
		return 0, err
	}
	return stats[name], nil
}

func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// SDSStats sums, over the SDS secrets Envoy subscribes to (the stats
// sds.<secret>.<name>), the counters update_success, update_rejected and
// update_failure, and reports the secrets seen.
type SDSStats struct {
	Secrets        []string
	UpdateSuccess  uint64
	UpdateRejected uint64
	UpdateFailure  uint64
	// Connected counts secrets whose control_plane.connected_state is 1.
	Connected int
}

// SDS reads the sds.* stats.
func (e *Envoy) SDS() (*SDSStats, error) {
	stats, err := e.Stats(`^sds\.`)
	if err != nil {
		return nil, err
	}
	out := &SDSStats{}
	for name, v := range stats {
		rest, ok := strings.CutPrefix(name, "sds.")
		if !ok {
			continue
		}
		i := strings.Index(rest, ".")
		if i < 0 {
			continue
		}
		secret, stat := rest[:i], rest[i+1:]
		switch stat {
		case "update_success":
			out.Secrets = append(out.Secrets, secret)
			out.UpdateSuccess += v
		case "update_rejected":
			out.UpdateRejected += v
		case "update_failure":
			out.UpdateFailure += v
		case "control_plane.connected_state":
			if v == 1 {
				out.Connected++
			}
		}
	}
	return out, nil
}

// ConfigDump fetches /config_dump with the given query (e.g.
// "resource=dynamic_active_secrets&mask=..."; empty for all) and returns
// its JSON.
func (e *Envoy) ConfigDump(query string) (json.RawMessage, error) {
	path := "/config_dump"
	if query != "" {
		path += "?" + query
	}
	body, err := e.Admin(http.MethodGet, path)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(body), nil
}
