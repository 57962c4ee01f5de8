package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/postgres"
	"github.com/meshsds/meshsds/secretsource/store/sqlite"
)

// signingKeySecret is the global secret holding the dataplane token
// signing key (PKCS#8 PEM).
const signingKeySecret = "dataplane-token-signing-key"

// storeFile is the embedded store's database inside --data-dir.
const storeFile = "meshsds.db"

// globalSecrets keeps meshsds' own secrets, created only if absent so that
// replicas sharing it agree on one value: the embedded store, or the
// control plane's Kubernetes namespace.
type globalSecrets interface {
	GetOrCreateGlobalSecret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error)
}

// storeGlobalSecrets keeps global secrets in a store.Store.
type storeGlobalSecrets struct{ s store.Store }

func (g storeGlobalSecrets) GetOrCreateGlobalSecret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	rec, err := store.GetOrCreate(ctx, g.s, store.Key{Kind: store.KindGlobalSecret, Name: name}, generate)
	if err != nil {
		return nil, err
	}
	return rec.Data, nil
}

// loadSigningKey returns the token signing key, generating it on first use.
// A data directory from before the store existed keeps its key: the PEM file
// it holds becomes the stored key.
func loadSigningKey(ctx context.Context, gs globalSecrets, dataDir string) (*ecdsa.PrivateKey, error) {
	data, err := gs.GetOrCreateGlobalSecret(ctx, signingKeySecret, func() ([]byte, error) {
		legacy, err := os.ReadFile(filepath.Join(dataDir, token.SigningKeyFile))
		switch {
		case err == nil:
			if _, err := token.ParseSigningKey(legacy); err != nil {
				return nil, fmt.Errorf("existing %s: %w", token.SigningKeyFile, err)
			}
			return legacy, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		return token.MarshalSigningKey(key)
	})
	if err != nil {
		return nil, fmt.Errorf("dataplane token signing key: %w", err)
	}
	return token.ParseSigningKey(data)
}

// storeOpenTimeout bounds connecting to PostgreSQL and migrating its schema
// at start-up (which waits for another replica's migration), so that a
// server that cannot be reached fails the start with a clear error.
const storeOpenTimeout = time.Minute

// openServeStore opens the store "meshsds serve" is configured with: the
// embedded store of --data-dir, or the PostgreSQL database shared by
// several replicas.
func openServeStore(ctx context.Context, cfg *Config, log *slog.Logger) (store.Store, error) {
	if cfg.Store != "postgres" {
		s, err := openStore(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	ctx, cancel := context.WithTimeout(ctx, storeOpenTimeout)
	defer cancel()
	s, err := postgres.Open(ctx, postgres.Config{URL: cfg.PostgresURL, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("opening the store (--store postgres): %w", err)
	}
	return s, nil
}

// openStore opens the embedded store of a data directory.
func openStore(dataDir string) (*sqlite.Store, error) {
	s, err := sqlite.Open(sqlite.Config{Path: filepath.Join(dataDir, storeFile)})
	if err != nil {
		return nil, fmt.Errorf("opening the store in --data-dir %s: %w", dataDir, err)
	}
	return s, nil
}

// OfflineSigningKey reads (or creates) the signing key of a server's store,
// for offline token generation next to a running server: the embedded store
// of dataDir, or the PostgreSQL database at postgresURL.
func OfflineSigningKey(ctx context.Context, dataDir, postgresURL string) (*ecdsa.PrivateKey, func(), error) {
	cfg := &Config{DataDir: dataDir, Store: "sqlite"}
	if postgresURL != "" {
		cfg.Store, cfg.PostgresURL = "postgres", postgresURL
	}
	s, err := openServeStore(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, err
	}
	key, err := loadSigningKey(ctx, storeGlobalSecrets{s}, dataDir)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return key, func() { s.Close() }, nil
}
