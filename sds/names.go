package sds

// SDS resource names (DESIGN.md "SDS"), with the aliases used by configs
// written for Istio and SPIRE.
const (
	NameIdentityCert = "identity_cert"
	NameMeshCA       = "mesh_ca"
	AliasIdentity    = "default"
	AliasMeshCA      = "ROOTCA"
)

// ResourceKind says what an SDS resource name refers to.
type ResourceKind int

// The kinds of resources.
const (
	KindUnknown ResourceKind = iota
	// KindIdentity is the data plane's workload certificate and key.
	KindIdentity
	// KindBundle is its mesh's trust bundle.
	KindBundle
)

// KindOf says what the resource name refers to.
func KindOf(name string) ResourceKind {
	switch name {
	case NameIdentityCert, AliasIdentity:
		return KindIdentity
	case NameMeshCA, AliasMeshCA:
		return KindBundle
	}
	return KindUnknown
}

// Log keys shared by the SDS packages.
const (
	LogMesh      = "mesh"
	LogDataplane = "dataplane"
	LogErr       = "err"
	LogAPI       = "api"
)
