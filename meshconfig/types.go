// Package meshconfig holds meshsds' resource model: the Mesh and Secret
// resources, their decoding from the Universal and Kubernetes forms, their
// validation, and the resolution of a Mesh's enabled mutual-TLS backend into a
// certificate authority.
//
// The package imports none of meshsds' other packages but its own pki
// (certificates and keys); sources and the SDS server depend on it, never the
// other way round.
package meshconfig

import (
	"bytes"
	"encoding/json"
	"reflect"
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// DefaultMesh is the mesh a resource belongs to when it names none.
const DefaultMesh = "default"

// Backend types of a Mesh's mTLS section.
const (
	BackendProvided = "provided"
	BackendBuiltin  = "builtin"
)

// DefaultDPCertValidity is the workload certificate lifetime used when a
// backend sets no dpCert.rotation.expiration.
const DefaultDPCertValidity = 24 * time.Hour

// DefaultMaxSecretSize is the largest decoded Secret payload accepted.
const DefaultMaxSecretSize = 1 << 20

// RevocationSecretPrefix starts the name of the Secret that lists the revoked
// dataplane token ids of a mesh: "dataplane-token-revocations-<mesh>".
const RevocationSecretPrefix = "dataplane-token-revocations-"

// RevocationSecretName is the revocation Secret every mesh may also use,
// whatever the length of its name: "dataplane-token-revocations" (the
// name with the mesh appended would not fit 253 characters for meshes
// longer than 225).
const RevocationSecretName = "dataplane-token-revocations"

// IsRevocationSecret reports whether key names a revocation Secret of its
// mesh.
func IsRevocationSecret(key SecretKey) bool {
	return key.Mesh != "" && (key.Name == RevocationSecretName || key.Name == RevocationSecretPrefix+key.Mesh)
}

// Secret is a named, opaque payload. A Secret belongs to one mesh; a global
// secret (used internally, e.g. for the token signing key) has Global set and
// an empty Mesh.
type Secret struct {
	Mesh   string
	Name   string
	Global bool
	Data   []byte
}

// Mesh is the Universal body of a Mesh resource (the spec of the Kubernetes
// custom resource) plus its name.
type Mesh struct {
	Name string `json:"name"`
	MTLS *MTLS  `json:"mtls,omitempty"`
}

// MTLS is a Mesh's mutual-TLS section.
type MTLS struct {
	// EnabledBackend names the backend in use. It may be empty when there is
	// exactly one backend.
	EnabledBackend string    `json:"enabledBackend,omitempty"`
	Backends       []Backend `json:"backends,omitempty"`
}

// Backend is one certificate authority backend of a Mesh.
type Backend struct {
	Name   string  `json:"name"`
	Type   string  `json:"type"`
	DPCert *DPCert `json:"dpCert,omitempty"`
	// Config is the type-specific configuration, kept raw (JSON) so that each
	// backend type decodes and validates its own shape. The Universal key
	// "conf" is accepted as an alias of "config".
	Config json.RawMessage `json:"config,omitempty"`
}

// DPCert configures the workload certificates a backend issues.
type DPCert struct {
	Rotation *Rotation `json:"rotation,omitempty"`
}

// Rotation sets the lifetime of workload certificates.
type Rotation struct {
	// Expiration is a Go duration such as "24h".
	Expiration string `json:"expiration,omitempty"`
}

// ProvidedConfig is the Config of a "provided" backend.
type ProvidedConfig struct {
	Cert *DataSource `json:"cert,omitempty"`
	Key  *DataSource `json:"key,omitempty"`
}

// DataSource names where bytes come from; exactly one field is set.
type DataSource struct {
	// Secret names a Secret in the same mesh.
	Secret string `json:"secret,omitempty"`
	// Inline is base64-encoded data.
	Inline string `json:"inline,omitempty"`
	// InlineString is the data itself, e.g. a PEM block.
	InlineString string `json:"inlineString,omitempty"`
	// File is a path on the control plane's file system.
	File string `json:"file,omitempty"`
}

// SecretKey identifies a Secret: global secrets have an empty Mesh.
type SecretKey struct {
	Mesh string
	Name string
}

// Resources is a complete view of the Meshes and Secrets one source (or the
// merge of all sources) holds. Values are shared and must not be modified
// once published.
type Resources struct {
	Meshes  map[string]*Mesh
	Secrets map[SecretKey]*Secret
}

// ResolvedMesh is a Mesh with its enabled backend resolved.
type ResolvedMesh struct {
	Name string
	// Backend is the name of the enabled backend; empty when mTLS is off.
	Backend string
	// CA signs workload certificates. It is nil when mTLS is off, or when the
	// backend never resolved. When Err is set, CA is the last good one.
	CA *pki.CA
	// DPCertValidity is the lifetime of issued workload certificates.
	DPCertValidity time.Duration
	// RevokedTokenIDs are the dataplane token ids listed in the Secret
	// "dataplane-token-revocations-<mesh>".
	RevokedTokenIDs map[string]struct{}
	// Err is why the current Mesh could not be resolved, or nil.
	Err error
}

// Equal reports whether r and o hold the same resources, by content.
func (r Resources) Equal(o Resources) bool {
	if len(r.Meshes) != len(o.Meshes) || len(r.Secrets) != len(o.Secrets) {
		return false
	}
	for k, a := range r.Meshes {
		b, ok := o.Meshes[k]
		if !ok || (a != b && !reflect.DeepEqual(a, b)) {
			return false
		}
	}
	for k, a := range r.Secrets {
		b, ok := o.Secrets[k]
		if !ok {
			return false
		}
		if a != b && (a.Mesh != b.Mesh || a.Name != b.Name || a.Global != b.Global || !bytes.Equal(a.Data, b.Data)) {
			return false
		}
	}
	return true
}
