package meshconfig

import "sort"

// Conflict kinds.
const (
	KindMesh   = "Mesh"
	KindSecret = "Secret"
)

// NamedView is the complete view of one source, named for conflict reports.
type NamedView struct {
	// Source names the source, e.g. "file:/etc/meshsds/secrets" or "api".
	Source    string
	Resources Resources
}

// Conflict reports a resource defined by more than one source.
type Conflict struct {
	// Kind is KindMesh or KindSecret.
	Kind string
	// Mesh is the Secret's mesh; empty for a global secret and for a Mesh.
	Mesh string
	// Name is the Secret's or the Mesh's name.
	Name string
	// Winner is the source whose resource is used; Loser the one ignored.
	Winner, Loser string
}

// Merge combines the views of several sources into one. When several views
// define the same Mesh, or the same Secret (same mesh and name; global
// secrets have an empty mesh), the view that comes first in views wins and
// each other definition is reported as a Conflict, even when the contents are
// equal. Revocation Secrets are the exception: their lists are joined, so
// that a revocation written anywhere counts. Conflicts are sorted by kind, mesh and name, then by the loser's
// position in views. Resources are shared, not copied; the returned maps are
// never nil.
func Merge(views []NamedView) (Resources, []Conflict) {
	out := Resources{Meshes: map[string]*Mesh{}, Secrets: map[SecretKey]*Secret{}}
	meshOwner := map[string]string{}
	secretOwner := map[SecretKey]string{}
	var conflicts []Conflict
	for _, v := range views {
		for name, m := range v.Resources.Meshes {
			if owner, taken := meshOwner[name]; taken {
				conflicts = append(conflicts, Conflict{Kind: KindMesh, Name: name, Winner: owner, Loser: v.Source})
				continue
			}
			meshOwner[name] = v.Source
			out.Meshes[name] = m
		}
		for key, s := range v.Resources.Secrets {
			if IsRevocationSecret(key) {
				// Revocations add up: a token revoked in any source is
				// revoked, whoever else lists the same Secret.
				if prev, taken := out.Secrets[key]; taken {
					joined := append(append(append([]byte(nil), prev.Data...), '\n'), s.Data...)
					out.Secrets[key] = &Secret{Mesh: key.Mesh, Name: key.Name, Data: joined}
					continue
				}
				out.Secrets[key] = s
				continue
			}
			if owner, taken := secretOwner[key]; taken {
				conflicts = append(conflicts, Conflict{Kind: KindSecret, Mesh: key.Mesh, Name: key.Name, Winner: owner, Loser: v.Source})
				continue
			}
			secretOwner[key] = v.Source
			out.Secrets[key] = s
		}
	}
	// Conflicts were appended in view order, so a stable sort keeps the
	// losers of one resource in that order.
	sort.SliceStable(conflicts, func(i, j int) bool {
		a, b := conflicts[i], conflicts[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Mesh != b.Mesh {
			return a.Mesh < b.Mesh
		}
		return a.Name < b.Name
	})
	return out, conflicts
}
