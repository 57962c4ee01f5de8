package meshconfig

// SecretRef is a Secret that a Mesh's backend uses.
type SecretRef struct {
	// Backend is the name of the backend that uses the secret.
	Backend string
	// Field is where, e.g. "mtls.backends[0].config.cert.secret".
	Field string
	// Secret is the name of the secret, in the Mesh's own mesh.
	Secret string
}

// SecretRefs lists the Secrets every backend of m references, enabled or
// not, so that none of them is deleted while the Mesh could switch to it.
// Backends whose config does not parse reference nothing.
func (m *Mesh) SecretRefs() []SecretRef {
	if m == nil || m.MTLS == nil {
		return nil
	}
	var refs []SecretRef
	for i, b := range m.MTLS.Backends {
		if b.Type == BackendBuiltin {
			cert, key := BuiltinSecretNames(m.Name, b.Name)
			field := indexField("mtls.backends", i)
			refs = append(refs, SecretRef{Backend: b.Name, Field: field, Secret: cert}, SecretRef{Backend: b.Name, Field: field, Secret: key})
			continue
		}
		if b.Type != BackendProvided {
			continue
		}
		cfg, err := ParseProvidedConfig(b.Config)
		if err != nil {
			continue
		}
		prefix := JoinField(indexField("mtls.backends", i), "config")
		for _, ds := range []struct {
			field string
			src   *DataSource
		}{{"cert", cfg.Cert}, {"key", cfg.Key}} {
			if ds.src != nil && ds.src.Secret != "" {
				refs = append(refs, SecretRef{Backend: b.Name, Field: JoinField(prefix, ds.field+".secret"), Secret: ds.src.Secret})
			}
		}
	}
	return refs
}
