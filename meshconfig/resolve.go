package meshconfig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// ResolveOptions tunes ResolveMesh and the Resolver.
type ResolveOptions struct {
	// ReadFile reads the file of a DataSource; nil means os.ReadFile.
	ReadFile func(path string) ([]byte, error)
}

// readFile returns the configured file reader.
func (o ResolveOptions) readFile() func(string) ([]byte, error) {
	if o.ReadFile != nil {
		return o.ReadFile
	}
	return os.ReadFile
}

// ResolveMesh resolves the enabled mTLS backend of m into a CA, checked at
// now, using the Secrets of m's mesh.
//
// The result is never nil: RevokedTokenIDs is always filled, and when mTLS is
// off Backend is empty and CA nil. On failure the error (a *ValidationError
// naming fields such as "mtls.backends[0].config.cert.secret") is returned
// and also set as the result's Err.
func ResolveMesh(m *Mesh, secrets map[SecretKey]*Secret, now time.Time, opts ResolveOptions) (*ResolvedMesh, error) {
	rm := &ResolvedMesh{
		Name:            m.Name,
		DPCertValidity:  DefaultDPCertValidity,
		RevokedTokenIDs: revocations(m.Name, secrets),
	}
	if err := resolveInto(rm, m, secrets, now, opts); err != nil {
		rm.CA = nil
		rm.Err = err
		return rm, err
	}
	return rm, nil
}

// resolveInto fills rm's backend, validity and CA.
func resolveInto(rm *ResolvedMesh, m *Mesh, secrets map[SecretKey]*Secret, now time.Time, opts ResolveOptions) error {
	if err := m.Validate(); err != nil {
		return err
	}
	backend, idx, ok := m.MTLS.Enabled()
	if !ok {
		return nil
	}
	field := indexField("mtls.backends", idx)
	rm.Backend = backend.Name
	validity, err := DPCertValidity(backend)
	if err != nil {
		var verr ValidationError
		verr.AddError(field, err)
		return &verr
	}
	rm.DPCertValidity = validity
	switch backend.Type {
	case BackendProvided:
		ca, err := resolveProvided(m.Name, backend, secrets, now, opts)
		if err != nil {
			var verr ValidationError
			verr.AddError(JoinField(field, "config"), err)
			return &verr
		}
		rm.CA = ca
		return nil
	case BackendBuiltin:
		// The CA lives in two Secrets that meshsds generates (see
		// reconcile's provisioning); until they exist the mesh waits.
		certName, keyName := BuiltinSecretNames(m.Name, backend.Name)
		cert, okCert := secrets[SecretKey{Mesh: m.Name, Name: certName}]
		key, okKey := secrets[SecretKey{Mesh: m.Name, Name: keyName}]
		if !okCert || !okKey {
			return &ValidationError{Causes: []FieldError{{
				Field:   JoinField(field, "type"),
				Message: fmt.Sprintf("the builtin CA (secrets %q and %q) has not been generated yet", certName, keyName),
			}}}
		}
		ca, err := parseCA(cert.Data, key.Data, now)
		if err != nil {
			var verr ValidationError
			verr.AddError(JoinField(field, "type"), err)
			return &verr
		}
		rm.CA = ca
		return nil
	default:
		// Unreachable after Validate; kept so that a new type is not
		// silently treated as mTLS off.
		return &ValidationError{Causes: []FieldError{{Field: JoinField(field, "type"), Message: fmt.Sprintf("unsupported backend type %q", backend.Type)}}}
	}
}

// resolveProvided reads the cert and key of a provided backend and parses
// them. Fields of the error are relative to the backend's config.
func resolveProvided(mesh string, b *Backend, secrets map[SecretKey]*Secret, now time.Time, opts ResolveOptions) (*pki.CA, error) {
	cfg, err := ParseProvidedConfig(b.Config)
	if err != nil {
		return nil, err
	}
	var verr ValidationError
	certPEM, err := resolveDataSource(mesh, cfg.Cert, secrets, opts)
	verr.AddError("cert", err)
	keyPEM, err := resolveDataSource(mesh, cfg.Key, secrets, opts)
	verr.AddError("key", err)
	if err := verr.ErrOrNil(); err != nil {
		return nil, err
	}
	return parseCA(certPEM, keyPEM, now)
}

// resolveDataSource returns the bytes ds names. Fields of the error are
// relative to the data source.
func resolveDataSource(mesh string, ds *DataSource, secrets map[SecretKey]*Secret, opts ResolveOptions) ([]byte, error) {
	switch {
	case ds.Secret != "":
		s, ok := secrets[SecretKey{Mesh: mesh, Name: ds.Secret}]
		if !ok {
			msg := fmt.Sprintf("secret %q not found in mesh %q", ds.Secret, mesh)
			if other := meshesHolding(ds.Secret, secrets); len(other) > 0 {
				msg += fmt.Sprintf(" (it exists in mesh %q; secrets are not shared between meshes)", other[0])
			}
			return nil, &FieldError{Field: "secret", Message: msg}
		}
		return s.Data, nil
	case ds.Inline != "":
		data, err := base64.StdEncoding.DecodeString(ds.Inline)
		if err != nil {
			return nil, &FieldError{Field: "inline", Message: msgInvalidBase64}
		}
		return data, nil
	case ds.InlineString != "":
		return []byte(ds.InlineString), nil
	case ds.File != "":
		data, err := opts.readFile()(ds.File)
		if err != nil {
			return nil, &FieldError{Field: "file", Message: "cannot be read: " + err.Error()}
		}
		return data, nil
	default:
		return nil, &FieldError{Message: msgEmpty}
	}
}

// meshesHolding lists, sorted, the other meshes that hold a Secret named
// name. It only runs on the error path.
func meshesHolding(name string, secrets map[SecretKey]*Secret) []string {
	var meshes []string
	for k, s := range secrets {
		if k.Name == name && !s.Global && k.Mesh != "" {
			meshes = append(meshes, k.Mesh)
		}
	}
	sort.Strings(meshes)
	return meshes
}

// revocations returns the revoked token ids of mesh; never nil.
func revocations(mesh string, secrets map[SecretKey]*Secret) map[string]struct{} {
	out := map[string]struct{}{}
	for _, name := range []string{RevocationSecretPrefix + mesh, RevocationSecretName} {
		if s, ok := secrets[SecretKey{Mesh: mesh, Name: name}]; ok {
			for id := range ParseRevocations(s.Data) {
				out[id] = struct{}{}
			}
		}
	}
	return out
}

// Resolver resolves every Mesh of successive views and keeps each mesh's last
// good resolution, so that a broken Mesh keeps being served with its last
// good CA while every other mesh is unaffected. Not safe for concurrent use.
type Resolver struct {
	opts ResolveOptions
	// lastGood is each mesh's last successful resolution.
	lastGood map[string]*ResolvedMesh
	// prev is what the previous Resolve returned for each mesh.
	prev map[string]*ResolvedMesh
}

// NewResolver returns a Resolver with no history.
func NewResolver(opts ResolveOptions) *Resolver {
	return &Resolver{
		opts:     opts,
		lastGood: map[string]*ResolvedMesh{},
		prev:     map[string]*ResolvedMesh{},
	}
}

// Resolve resolves every Mesh of res at now, keyed by mesh name.
//
// A mesh that fails to resolve is returned with Err set and, when it resolved
// before, the last good Backend, CA and DPCertValidity (unless that CA has
// expired meanwhile), with the RevokedTokenIDs of the current Secrets.
// Meshes absent from res are forgotten.
//
// Results are shared and must not be modified. When a mesh's result is
// equivalent to the previous call's, the same *ResolvedMesh is returned, and
// an unchanged CA (same fingerprint) keeps its *CA pointer, so consumers can
// detect changes by comparing pointers.
func (r *Resolver) Resolve(res Resources, now time.Time) map[string]*ResolvedMesh {
	out := make(map[string]*ResolvedMesh, len(res.Meshes))
	lastGood := make(map[string]*ResolvedMesh, len(res.Meshes))
	for name, m := range res.Meshes {
		rm, err := ResolveMesh(m, res.Secrets, now, r.opts)
		good := r.lastGood[name]
		if err == nil {
			if good != nil && pki.SameCA(good.CA, rm.CA) {
				rm.CA = good.CA
			}
		} else if good != nil {
			fallback := *good
			fallback.Err = err
			fallback.RevokedTokenIDs = rm.RevokedTokenIDs
			if fallback.CA != nil && fallback.CA.Expired(now) {
				fallback.CA = nil
			}
			rm = &fallback
			lastGood[name] = good
		}
		if prev := r.prev[name]; prev != nil && equivalent(prev, rm) {
			rm = prev
		}
		if err == nil {
			lastGood[name] = rm
		}
		out[name] = rm
	}
	r.lastGood = lastGood
	r.prev = out
	return out
}

// equivalent reports whether two results carry the same content.
func equivalent(a, b *ResolvedMesh) bool {
	if a.Name != b.Name || a.Backend != b.Backend || a.DPCertValidity != b.DPCertValidity || a.CA != b.CA {
		return false
	}
	if (a.Err == nil) != (b.Err == nil) || (a.Err != nil && a.Err.Error() != b.Err.Error()) {
		return false
	}
	if len(a.RevokedTokenIDs) != len(b.RevokedTokenIDs) {
		return false
	}
	for id := range a.RevokedTokenIDs {
		if _, ok := b.RevokedTokenIDs[id]; !ok {
			return false
		}
	}
	return true
}

// parseCA parses a CA with pki.ParseCA, its errors as causes "cert" and
// "key" for the caller to place below the backend's fields.
func parseCA(certPEM, keyPEM []byte, now time.Time) (*pki.CA, error) {
	ca, err := pki.ParseCA(certPEM, keyPEM, now)
	var cerr *pki.CAError
	if !errors.As(err, &cerr) {
		return ca, err
	}
	var verr ValidationError
	verr.AddError("cert", cerr.Cert)
	verr.AddError("key", cerr.Key)
	return nil, &verr
}
