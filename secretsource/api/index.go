package api

import (
	"net/http"
	"strings"
)

// The index at GET /, as Kuma's API server answers it, so that kumactl
// accepts meshsds as a control plane (kumactl config control-planes add)
// and runs its commands without warning.
//
// kumactl checks two things (app/kumactl/pkg/config/validate.go and
// CheckCompatibility in app/kumactl/pkg/cmd/root_context.go of Kuma 2.x):
// adding a control plane requires product "Kuma" (tagline "Kuma" before
// 2.9) or, from 2.2 on, a version containing "preview"; and before every
// get, apply, delete, inspect and generate it warns unless the version
// contains "preview" (from 2.2 on) or equals kumactl's own version exactly
// with product "Kuma". meshsds is not Kuma and follows no Kuma release, so
// it says so: product "meshsds", and its own version marked as a preview of
// Kuma's API, the one answer no kumactl from 2.2 on warns about. tagline,
// Kuma 1.x's product field, is "Kuma" (the API meshsds speaks), so that
// kumactl 2.0 and 2.1, which know no preview, can still add meshsds (they
// warn). basedOnKuma names the Kuma release whose API meshsds follows and
// was tested with.

// Index is what the daemon tells GET / about itself.
type Index struct {
	// Hostname of the host meshsds runs on.
	Hostname string
	// Version of meshsds (internal/buildinfo).
	Version string
	// InstanceID identifies this process; ClusterID the replicas that share
	// one store and signing key.
	InstanceID string
	ClusterID  string
}

// KumaAPIVersion is the Kuma release whose REST API meshsds follows where
// the two overlap, and against whose kumactl it is tested.
const KumaAPIVersion = "2.14.3"

// Product is meshsds' product name in the index.
const Product = "meshsds"

// indexResponse is Kuma's index (api/openapi/types Index), with Kuma 1.x's
// tagline.
type indexResponse struct {
	Hostname    string `json:"hostname"`
	Tagline     string `json:"tagline"`
	Product     string `json:"product"`
	Version     string `json:"version"`
	BasedOnKuma string `json:"basedOnKuma"`
	InstanceID  string `json:"instanceId"`
	ClusterID   string `json:"clusterId"`
	GUI         string `json:"gui"`
}

// PreviewVersion is the version GET / reports for a meshsds version: marked
// as a preview, which kumactl does not compare with its own.
func PreviewVersion(v string) string {
	if v == "" {
		v = "dev"
	}
	if strings.Contains(v, "preview") {
		return v
	}
	return v + "-kuma-api-preview"
}

func (a *API) index(w http.ResponseWriter, _ *http.Request) {
	idx := a.cfg.Index
	writeJSON(w, http.StatusOK, indexResponse{
		Hostname: idx.Hostname, Tagline: "Kuma", Product: Product, Version: PreviewVersion(idx.Version),
		BasedOnKuma: KumaAPIVersion, InstanceID: idx.InstanceID, ClusterID: idx.ClusterID, GUI: uiPath,
	})
}
