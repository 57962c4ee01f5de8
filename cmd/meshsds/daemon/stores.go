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
// With PostgreSQL it also returns the database's store itself, through
// which the replicas share their state (cluster.Backend); nil otherwise.
func openServeStore(ctx context.Context, cfg *Config, log *slog.Logger) (store.Store, *postgres.Store, error) {
	var (
		inner store.Store
		pg    *postgres.Store
		err   error
	)
	if cfg.Store != "postgres" {
		if inner, err = openStore(cfg.DataDir); err != nil {
			return nil, nil, err
		}
	} else {
		octx, cancel := context.WithTimeout(ctx, storeOpenTimeout)
		defer cancel()
		if pg, err = postgres.Open(octx, postgres.Config{URL: cfg.PostgresURL, Logger: log}); err != nil {
			return nil, nil, fmt.Errorf("opening the store (--store postgres): %w", err)
		}
		inner = pg
	}
	st, err := encryptStore(ctx, inner, cfg.EncryptionKeyFile, log)
	if err != nil {
		inner.Close()
		return nil, nil, err
	}
	return st, pg, nil
}

// encryptStore wraps a store in the encryption of keyFile (none when
// empty), and refuses a store it cannot read: encrypted records without
// the key file, or with keys the file does not hold.
func encryptStore(ctx context.Context, inner store.Store, keyFile string, log *slog.Logger) (*store.Encrypted, error) {
	var ring *store.KeyRing
	if keyFile != "" {
		var err error
		if ring, err = store.LoadKeyRing(keyFile); err != nil {
			return nil, err
		}
		if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the encryption key file is readable by other users; it should be mode 0600", "path", keyFile, "mode", fi.Mode().Perm().String())
		}
	}
	st := store.NewEncrypted(inner, ring)
	n, err := st.CheckReadable(ctx)
	if err != nil {
		return nil, fmt.Errorf("the store cannot be read: %w", err)
	}
	if ring == nil {
		log.Warn("secrets are stored in plain text: give --encryption-key-file to encrypt them at rest")
	} else {
		log.Info("secrets are encrypted at rest", "key", ring.Primary(), "encrypted_records", n)
	}
	return st, nil
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
// of dataDir, or the PostgreSQL database at postgresURL, encrypted with the
// keys of keyFile (if any).
func OfflineSigningKey(ctx context.Context, dataDir, postgresURL, keyFile string) (*ecdsa.PrivateKey, func(), error) {
	cfg := &Config{DataDir: dataDir, Store: "sqlite", EncryptionKeyFile: keyFile}
	if postgresURL != "" {
		cfg.Store, cfg.PostgresURL = "postgres", postgresURL
	}
	s, _, err := openServeStore(ctx, cfg, slog.New(slog.DiscardHandler))
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

// RotateEncryptionKey re-encrypts every record of a server's store (the
// embedded store of dataDir, or PostgreSQL at postgresURL) with the first
// key of keyFile, while servers keep using it.
func RotateEncryptionKey(ctx context.Context, dataDir, postgresURL, keyFile string) (store.Rotation, error) {
	if keyFile == "" {
		return store.Rotation{}, errors.New("--encryption-key-file is required: its first key encrypts, the others decrypt")
	}
	cfg := &Config{DataDir: dataDir, Store: "sqlite", EncryptionKeyFile: keyFile}
	if postgresURL != "" {
		cfg.Store, cfg.PostgresURL = "postgres", postgresURL
	}
	st, _, err := openServeStore(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return store.Rotation{}, err
	}
	defer st.Close()
	return st.(*store.Encrypted).RotateKeys(ctx)
}
