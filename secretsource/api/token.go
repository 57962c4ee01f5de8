package api

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource"
)

// tokenRequest is the body of POST /tokens/dataplane: Kuma's
// DataplaneTokenRequest, what kumactl generate dataplane-token sends.
type tokenRequest struct {
	Mesh     string              `json:"mesh"`
	Name     string              `json:"name"`
	Tags     map[string][]string `json:"tags"`
	ValidFor string              `json:"validFor"`
	// Type is the kind of proxy; meshsds serves data planes only, so it
	// must be empty or "dataplane".
	Type string `json:"type"`
	// Workload (Kuma 2.13 and later) binds a Kuma token to a workload
	// label. It is accepted and ignored: a meshsds token is bound to one
	// data plane by its name already, which is narrower.
	Workload string `json:"workload"`
}

// DefaultTokenValidity is the lifetime of a token when validFor is not given.
const DefaultTokenValidity = 365 * 24 * time.Hour

// Proxy types of Kuma's token request.
const (
	proxyTypeDataplane = "dataplane"
)

func (a *API) generateToken(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Tokens == nil {
		writeError(w, http.StatusNotImplemented, "Not available", "this server issues no dataplane tokens", nil)
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	req, validFor, err := decodeTokenRequest(body)
	if err != nil {
		invalidRequest(w, "Could not issue a token", err)
		return
	}
	raw, err := a.cfg.Tokens.Issue(token.Claims{Mesh: req.Mesh, Name: req.Name, Tags: req.Tags}, validFor, a.cfg.Now())
	if err != nil {
		invalidRequest(w, "Could not issue a token", err)
		return
	}
	auditResource(r.Context(), "dataplane-token "+req.Mesh+"/"+req.Name)
	a.log.Info("dataplane token issued through the admin API", secretsource.LogMesh, req.Mesh, sds.LogDataplane, req.Name)
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, raw)
}

// decodeTokenRequest parses and checks a token request. Every field of
// Kuma's request is accepted; any other key is an error (a typo would
// otherwise mint a token other than the one meant).
func decodeTokenRequest(body []byte) (tokenRequest, time.Duration, error) {
	var req tokenRequest
	if err := yaml.UnmarshalStrict(body, &req); err != nil {
		return req, 0, &meshconfig.FieldError{Message: "body must be {name, mesh, tags, type, workload, validFor}: " + err.Error()}
	}
	var verr meshconfig.ValidationError
	if fe := meshconfig.ValidateName("mesh", req.Mesh); fe != nil {
		verr.Causes = append(verr.Causes, *fe)
	}
	if req.Name == "" {
		// Kuma issues tokens for any data plane of a mesh; meshsds binds
		// each token to one, whose node id is <mesh>.<name>.
		verr.Add("name", "cannot be empty: a meshsds token is bound to one data plane (node id <mesh>.<name>)")
	} else if fe := meshconfig.ValidateName("name", req.Name); fe != nil {
		verr.Causes = append(verr.Causes, *fe)
	}
	switch req.Type {
	case "", proxyTypeDataplane:
	case "ingress", "egress":
		verr.Add("type", fmt.Sprintf("meshsds serves data planes only, not zone %s proxies: must be %q or empty", req.Type, proxyTypeDataplane))
	default:
		verr.Add("type", fmt.Sprintf("must be %q or empty", proxyTypeDataplane))
	}
	keys := make([]string, 0, len(req.Tags))
	for k := range req.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, " \t\n") {
			verr.Add("tags", fmt.Sprintf("tag name %q is not valid", k))
		}
		for _, v := range req.Tags[k] {
			if v == "" {
				verr.Add("tags", fmt.Sprintf("tag %q has an empty value", k))
			}
		}
	}
	validFor := DefaultTokenValidity
	if req.ValidFor != "" {
		d, err := time.ParseDuration(req.ValidFor)
		if err != nil || d <= 0 {
			verr.Add("validFor", "must be a positive duration such as 24h")
		}
		validFor = d
	}
	return req, validFor, verr.ErrOrNil()
}
