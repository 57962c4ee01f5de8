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
// finds. Refused are a referenced Secret that does not exist (yet), as
//
//	mtls.backends[0].config.cert.secret: secret "ca-cert" of backend "ca-1"
//	does not exist in mesh "default": create the Secret first
//
// a key that does not match its certificate, and a certificate that is not
// a CA or has expired; each cause names its field. A data source reading a file is not read here: the file is read
// on the meshsds host that resolves the Mesh, so a backend with a file is
// only checked for its Secrets' existence. Builtin backends are admitted,
// as meshsds generates their CA.
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
	var missing ValidationError
	secrets := map[SecretKey]*Secret{}
	for _, ref := range m.SecretRefs() {
		if ref.Backend != backend.Name {
			continue
		}
		data, ok := lookup(m.Name, ref.Secret)
		if !ok {
			missing.Add(ref.Field, missingSecretMessage(m.Name, ref.Backend, ref.Secret))
			continue
		}
		secrets[SecretKey{Mesh: m.Name, Name: ref.Secret}] = &Secret{Mesh: m.Name, Name: ref.Secret, Data: data}
	}
	if err := missing.ErrOrNil(); err != nil {
		return err
	}
	if cfg.Cert.File != "" || cfg.Key.File != "" {
		return nil
	}
	_, err = ResolveMesh(m, secrets, now, ResolveOptions{
		ReadFile: func(string) ([]byte, error) { return nil, errors.New("files are not read at admission") },
	})
	return err
}

// missingSecretMessage is why a Mesh whose backend references a Secret
// that does not exist is refused: Secrets come first, then the Mesh that
// uses them (a Secret may exist before its Mesh, never after).
func missingSecretMessage(mesh, backend, secret string) string {
	return fmt.Sprintf("secret %q of backend %q does not exist in mesh %q: create the Secret first", secret, backend, mesh)
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
