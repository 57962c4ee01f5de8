package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
)

// Provisioner generates the CAs of builtin backends into a store, as the
// Secrets meshconfig.BuiltinSecretNames names. It is safe for concurrent
// use, and replicas sharing a store agree on one CA per backend.
type Provisioner struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock of the generated certificates; nil means time.Now.
	Now func() time.Time
}

// ProvisionBuiltinCA generates the CA of a builtin backend into the store,
// unless it is there already. The key is created first (create-if-absent),
// then a certificate for whichever key won, so that replicas racing here
// still end with one matching pair.
func (p *Provisioner) ProvisionBuiltinCA(ctx context.Context, mesh string, b meshconfig.Backend) error {
	cfg, err := meshconfig.ParseBuiltinConfig(b.Config)
	if err != nil {
		return fmt.Errorf("backend %q: %w", b.Name, err)
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	certName, keyName := meshconfig.BuiltinSecretNames(mesh, b.Name)
	generated := false
	keyRec, err := GetOrCreate(ctx, p.Store, Key{Kind: KindSecret, Mesh: mesh, Name: keyName}, func() ([]byte, error) {
		generated = true
		return meshconfig.GenerateBuiltinKey(cfg)
	})
	if err != nil {
		return err
	}
	if _, err := GetOrCreate(ctx, p.Store, Key{Kind: KindSecret, Mesh: mesh, Name: certName}, func() ([]byte, error) {
		generated = true
		return meshconfig.GenerateBuiltinCert(mesh, cfg, keyRec.Data, now())
	}); err != nil {
		return err
	}
	if generated && p.Logger != nil {
		p.Logger.Info("generated the builtin CA", secretsource.LogMesh, mesh, secretsource.LogBackend, b.Name, "cert_secret", certName, "key_secret", keyName)
	}
	return nil
}

// DeleteBuiltinCAs removes the generated CAs of m's builtin backends.
func (p *Provisioner) DeleteBuiltinCAs(ctx context.Context, m *meshconfig.Mesh) error {
	if m.MTLS == nil {
		return nil
	}
	for _, b := range m.MTLS.Backends {
		if b.Type != meshconfig.BackendBuiltin {
			continue
		}
		cert, key := meshconfig.BuiltinSecretNames(m.Name, b.Name)
		for _, name := range []string{cert, key} {
			err := p.Store.Delete(ctx, Key{Kind: KindSecret, Mesh: m.Name, Name: name})
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// DeleteOrphanedBuiltinCAs removes the generated CAs (the Secrets named
// as meshconfig.BuiltinSecretNames names them) of every mesh for which
// exists is false, and returns their names ("mesh/name").
func (p *Provisioner) DeleteOrphanedBuiltinCAs(ctx context.Context, exists func(mesh string) bool) ([]string, error) {
	recs, err := p.Store.List(ctx, KindSecret, "")
	if err != nil {
		return nil, err
	}
	var deleted []string
	for _, rec := range recs {
		if exists(rec.Mesh) || !meshconfig.IsBuiltinSecretName(rec.Mesh, rec.Name) {
			continue
		}
		err := p.Store.Delete(ctx, rec.Key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return deleted, err
		}
		deleted = append(deleted, rec.Mesh+"/"+rec.Name)
	}
	return deleted, nil
}
