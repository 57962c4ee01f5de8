package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource/store"
)

// ProvisionBuiltinCA generates the CA of a builtin backend into the store,
// unless it is there already. The key is created first (create-if-absent),
// then a certificate for whichever key won, so that replicas racing here
// still end with one matching pair.
func (a *API) ProvisionBuiltinCA(ctx context.Context, mesh string, b meshconfig.Backend) error {
	cfg, err := meshconfig.ParseBuiltinConfig(b.Config)
	if err != nil {
		return fmt.Errorf("backend %q: %w", b.Name, err)
	}
	certName, keyName := meshconfig.BuiltinSecretNames(mesh, b.Name)
	generated := false
	keyRec, err := store.GetOrCreate(ctx, a.store, store.Key{Kind: store.KindSecret, Mesh: mesh, Name: keyName}, func() ([]byte, error) {
		generated = true
		return meshconfig.GenerateBuiltinKey(cfg)
	})
	if err != nil {
		return err
	}
	if _, err := store.GetOrCreate(ctx, a.store, store.Key{Kind: store.KindSecret, Mesh: mesh, Name: certName}, func() ([]byte, error) {
		generated = true
		return meshconfig.GenerateBuiltinCert(mesh, cfg, keyRec.Data, a.cfg.Now())
	}); err != nil {
		return err
	}
	if generated {
		a.log.Info("generated the builtin CA", "mesh", mesh, "backend", b.Name, "cert_secret", certName, "key_secret", keyName)
	}
	a.notify()
	return nil
}

// deleteBuiltinCAs removes the generated CAs of m's builtin backends.
func (a *API) deleteBuiltinCAs(ctx context.Context, m *meshconfig.Mesh) error {
	if m.MTLS == nil {
		return nil
	}
	for _, b := range m.MTLS.Backends {
		if b.Type != meshconfig.BackendBuiltin {
			continue
		}
		cert, key := meshconfig.BuiltinSecretNames(m.Name, b.Name)
		for _, name := range []string{cert, key} {
			err := a.store.Delete(ctx, store.Key{Kind: store.KindSecret, Mesh: m.Name, Name: name})
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}
