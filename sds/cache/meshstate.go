package cache

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/sds/xds"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshsds/meshsds/sds"
)

// meshState is what the cache serves for one mesh. Its bundle resources are
// built and serialized once per change and shared by every stream.
type meshState struct {
	resolved *meshconfig.ResolvedMesh
	// ca signs workload certificates; during a CA change it is the old CA
	// until every data plane trusts the new one (see rotation.go).
	ca *pki.CA
	// target is the CA the mesh resolves to now.
	target *pki.CA
	// trusted are the CAs in the trust bundle.
	trusted []*pki.CA
	rotation
	validity  time.Duration
	caVersion string // identifies what a workload certificate depends on: a change re-issues
	bundleVer string
	bundle    map[string]*anypb.Any // by resource name (mesh_ca, ROOTCA)
	changedAt time.Time
	// watchers by identity key, so a renewal wakes only that data plane.
	watchers map[string]map[*Watch]struct{}
}

// buildMeshState derives the served state of a mesh: which CA signs and
// which are trusted (moving through a CA change, see rotation.go), reusing
// the previous serialized bundle when the trust bundle did not change.
func (c *Cache) buildMeshState(name string, rm *meshconfig.ResolvedMesh, old *meshState, changedAt time.Time) *meshState {
	ms := &meshState{resolved: rm, target: rm.CA, validity: rm.DPCertValidity, changedAt: changedAt, watchers: map[string]map[*Watch]struct{}{}}
	if ms.validity <= 0 {
		ms.validity = meshconfig.DefaultDPCertValidity
	}
	var (
		prev       rotationStep
		prevTarget *pki.CA
	)
	if old != nil {
		ms.watchers = old.watchers
		prev = rotationStep{issuing: old.ca, trusted: old.trusted, phase: old.phase}
		prevTarget = old.target
		ms.rotation = old.rotation
	}
	step := nextStep(prev, prevTarget, rm.CA, c.cfg.Now())
	ms.ca, ms.trusted, ms.phase = step.issuing, step.trusted, step.phase
	if prev.issuing == nil && !pki.SameCA(rm.CA, prevTarget) {
		c.joinLocked(name, ms)
	}
	if len(ms.trusted) == 0 {
		return ms
	}
	if ms.ca != nil {
		ms.caVersion = caVersionOf(ms.ca, ms.validity)
	}
	if old != nil {
		ms.bundleVer, ms.bundle = old.bundleVer, old.bundle
	}
	if c.setBundle(ms) || old == nil {
		return ms
	}
	ms.changedAt = old.changedAt
	return ms
}

// caVersionOf identifies what a workload certificate depends on: the
// signing CA (its key matches it), the intermediates sent after it and the
// validity, not the root: a root re-issued with the same key (a longer
// validity, say) changes the trust bundle only, and is pushed to the bundle
// streams only.
func caVersionOf(ca *pki.CA, validity time.Duration) string {
	return fmt.Sprintf("%s/%d", xds.ContentVersion(ca.Chain[0].Raw, ca.IssuedChainPEM), validity)
}

// setBundle serializes the trust bundle of ms.trusted, once per change, for
// every stream to share. It reports whether the bundle changed.
func (c *Cache) setBundle(ms *meshState) bool {
	pem := bundlePEM(ms.trusted)
	ver := xds.ContentVersion(pem)
	if ver == ms.bundleVer && ms.bundle != nil {
		return false
	}
	ms.bundleVer = ver
	ms.bundle = map[string]*anypb.Any{}
	for _, name := range []string{sds.NameMeshCA, sds.AliasMeshCA} {
		a, err := anypb.New(&tlsv3.Secret{
			Name: name,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pem}},
			}},
		})
		if err != nil {
			// Marshalling a well-formed message cannot fail; keep serving
			// the rest rather than crash.
			c.log.Error("serializing trust bundle", sds.LogMesh, ms.resolved.Name, sds.LogErr, err)
			continue
		}
		ms.bundle[name] = a
	}
	return true
}
