package meshconfig

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// The admission policy: what every entry point that accepts a write (the
// admin API, the Kubernetes admission webhook) refuses, with one rule and
// one wording. Files are not admitted: they are read as they are, and a
// broken one harms only itself.

// SecretLookup finds the data of the Secret name of mesh in any source
// meshsds reads.
type SecretLookup func(mesh, name string) ([]byte, bool)

// AdmitMesh decides whether m may be written. It must be valid, and its
// enabled provided backend must resolve to a CA with the Secrets lookup
// finds: a key that does not match its certificate, a certificate that is
// not a CA or has expired, and a referenced Secret that does not exist are
// refused, the error naming the field (and for a missing Secret, the
// Secret and mesh). A backend reading a file is resolved only on the
// meshsds host that reads it, so it is not checked here; builtin backends
// are admitted, as meshsds generates their CA.
func AdmitMesh(m *Mesh, lookup SecretLookup, now time.Time) error {
	if err := m.Validate(); err != nil {
		return err
	}
	backend, _, ok := m.MTLS.Enabled()
	if !ok || backend.Type != BackendProvided {
		return nil
	}
	cfg, err := ParseProvidedConfig(backend.Config)
	if err != nil {
		return err // refused by Validate already
	}
	if cfg.Cert.File != "" || cfg.Key.File != "" {
		return nil
	}
	secrets := map[SecretKey]*Secret{}
	for _, ref := range m.SecretRefs() {
		if data, ok := lookup(m.Name, ref.Secret); ok {
			secrets[SecretKey{Mesh: m.Name, Name: ref.Secret}] = &Secret{Mesh: m.Name, Name: ref.Secret, Data: data}
		}
	}
	_, err = ResolveMesh(m, secrets, now, ResolveOptions{
		ReadFile: func(string) ([]byte, error) { return nil, errors.New("files are not read at admission") },
	})
	return err
}

// SecretUsers describes every backend of the Meshes of mesh (among meshes)
// that references the Secret name, sorted, as
// `Mesh "default", backend "ca-1" (mtls.backends[0].config.cert.secret)`.
func SecretUsers(meshes []*Mesh, mesh, name string) []string {
	seen := map[string]bool{}
	var users []string
	for _, m := range meshes {
		if m == nil || m.Name != mesh {
			continue
		}
		for _, ref := range m.SecretRefs() {
			if ref.Secret != name {
				continue
			}
			u := fmt.Sprintf("Mesh %q, backend %q (%s)", m.Name, ref.Backend, ref.Field)
			if !seen[u] {
				seen[u] = true
				users = append(users, u)
			}
		}
	}
	sort.Strings(users)
	return users
}

// SecretInUseError is why the Secret name of mesh, which users (from
// SecretUsers) reference, cannot be deleted; nil when users is empty.
func SecretInUseError(mesh, name string, users []string) error {
	if len(users) == 0 {
		return nil
	}
	return fmt.Errorf("secret %q of mesh %q is in use by %s: change the Mesh first", name, mesh, strings.Join(users, " and "))
}

// BuiltinCAUse is why the Secret name of mesh cannot be replaced: it holds
// the CA meshsds generated for a builtin backend of one of meshes (of that
// mesh), which would otherwise be replaced by whatever the write carries,
// and break the mesh at its next start. nil when no builtin backend uses it.
func BuiltinCAUse(meshes []*Mesh, mesh, name string) error {
	for _, m := range meshes {
		if m == nil || m.Name != mesh || m.MTLS == nil {
			continue
		}
		for _, b := range m.MTLS.Backends {
			if b.Type != BackendBuiltin {
				continue
			}
			cert, key := BuiltinSecretNames(m.Name, b.Name)
			if name == cert || name == key {
				return fmt.Errorf("secret %q of mesh %q holds the CA meshsds generated for Mesh %q, backend %q: it cannot be replaced while the Mesh has that backend; to change the CA, add another builtin backend and enable it",
					name, mesh, m.Name, b.Name)
			}
		}
	}
	return nil
}
