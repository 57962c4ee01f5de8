package loadgen

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// newCA makes an ECDSA P-256 CA valid from an hour before now for 30 days,
// signed by parent (self-signed when nil). A non-nil key is reused.
func newCA(cn string, parent *pki.KeyPair, key crypto.Signer, now time.Time) (*pki.KeyPair, error) {
	ca, err := pki.Create(pki.Template{
		Subject:   pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(30 * 24 * time.Hour),
		IsCA:      true,
	}, key, parent)
	if err != nil {
		return nil, fmt.Errorf("making CA %q: %w", cn, err)
	}
	return ca, nil
}

// MeshCA is a mesh's provided CA as the load generator lays it out: a root,
// which is the trust bundle, and an intermediate, which signs the workload
// certificates.
type MeshCA struct {
	Root, Intermediate *pki.KeyPair
}

// NewMeshCA makes a new root and intermediate, both with new keys.
func NewMeshCA(name string, now time.Time) (*MeshCA, error) {
	root, err := newCA(name+" root", nil, nil, now)
	if err != nil {
		return nil, err
	}
	inter, err := newCA(name+" intermediate", root, nil, now)
	if err != nil {
		return nil, err
	}
	return &MeshCA{Root: root, Intermediate: inter}, nil
}

// ReissueRoot returns m with its root certificate re-issued: the same key
// and name, a new serial and validity. The intermediate stays valid, so
// workload certificates do not change; only the trust bundle does.
func (m *MeshCA) ReissueRoot(now time.Time) (*MeshCA, error) {
	root, err := newCA(m.Root.Cert.Subject.CommonName, nil, m.Root.Key, now.Add(time.Second))
	if err != nil {
		return nil, err
	}
	return &MeshCA{Root: root, Intermediate: m.Intermediate}, nil
}

// CertPEM is the content of the ca-cert secret: the intermediate, then the
// root.
func (m *MeshCA) CertPEM() []byte {
	return append(append([]byte{}, m.Intermediate.CertPEM...), m.Root.CertPEM...)
}

// KeyPEM is the content of the ca-key secret.
func (m *MeshCA) KeyPEM() []byte { return m.Intermediate.KeyPEM }

// stateDir is where, inside a mesh directory, the load generator keeps the
// keys of the CA it installed, for the next change. Hidden: meshsds ignores
// it.
const stateDir = ".meshsds-load"

var stateFiles = [4]string{"root.pem", "root-key.pem", "intermediate.pem", "intermediate-key.pem"}

// save keeps m in meshDir's state directory.
func (m *MeshCA) save(meshDir string) error {
	dir := filepath.Join(meshDir, stateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i, data := range [][]byte{m.Root.CertPEM, m.Root.KeyPEM, m.Intermediate.CertPEM, m.Intermediate.KeyPEM} {
		if err := writeAtomic(filepath.Join(dir, stateFiles[i]), data); err != nil {
			return err
		}
	}
	return nil
}

// LoadMeshCA reads the CA the load generator installed in meshDir (see
// WriteSecretsDir).
func LoadMeshCA(meshDir string) (*MeshCA, error) {
	var data [4][]byte
	for i, name := range stateFiles {
		b, err := os.ReadFile(filepath.Join(meshDir, stateDir, name))
		if err != nil {
			return nil, fmt.Errorf("%s was not laid out by meshsds-load setup: %w", meshDir, err)
		}
		data[i] = b
	}
	root, err := pki.ParseKeyPair(data[0], data[1])
	if err != nil {
		return nil, err
	}
	inter, err := pki.ParseKeyPair(data[2], data[3])
	if err != nil {
		return nil, err
	}
	return &MeshCA{Root: root, Intermediate: inter}, nil
}

// MeshManifest is a Mesh using the provided CA in the raw secret files
// ca-cert and ca-key of its directory.
func MeshManifest(mesh string) []byte {
	return fmt.Appendf(nil, `type: Mesh
name: %s
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: provided
    dpCert:
      rotation:
        expiration: 24h
    config:
      cert: { secret: ca-cert }
      key: { secret: ca-key }
`, mesh)
}

// WriteSecretsDir lays out a --secrets-dir serving mesh with ca.
func WriteSecretsDir(dir, mesh string, ca *MeshCA) error {
	if err := os.MkdirAll(filepath.Join(dir, mesh), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "mesh-"+mesh+".yaml"), MeshManifest(mesh), 0o600); err != nil {
		return err
	}
	_, err := ReplaceFiles(filepath.Join(dir, mesh), nil, ca)
	return err
}

// ReplaceFiles replaces the files of meshDir that differ between from (nil:
// none exist yet) and to: ca-cert, then ca-key, each by writing a temporary
// file and renaming it over the old one. It returns when the last rename
// was done. Between two renames the certificate and key do not match, which
// meshsds refuses, keeping the previous CA: the change is complete, and can
// be pushed, only from the returned time on.
func ReplaceFiles(meshDir string, from, to *MeshCA) (time.Time, error) {
	for _, f := range []struct {
		name     string
		old, new []byte
	}{{"ca-cert", nil, to.CertPEM()}, {"ca-key", nil, to.KeyPEM()}} {
		if from != nil {
			if f.name == "ca-cert" {
				f.old = from.CertPEM()
			} else {
				f.old = from.KeyPEM()
			}
		}
		if bytes.Equal(f.old, f.new) {
			continue
		}
		if err := writeAtomic(filepath.Join(meshDir, f.name), f.new); err != nil {
			return time.Time{}, err
		}
	}
	at := time.Now()
	return at, to.save(meshDir)
}

// PutSecrets writes the Secrets ca-cert and ca-key of mesh that differ
// between from (nil: none exist yet) and to through the admin API at
// adminURL, certificate first, as ReplaceFiles writes the files. It returns
// when the last write was sent: the change is complete from some moment
// between its request and its answer, and the server may push it before
// the answer arrives (measured from the answer, a bundle-only change on
// three replicas came out at -0.06 s p50).
func PutSecrets(ctx context.Context, adminURL, mesh string, from, to *MeshCA) (time.Time, error) {
	var at time.Time
	for _, sec := range []struct {
		name     string
		old, new []byte
	}{{"ca-cert", nil, to.CertPEM()}, {"ca-key", nil, to.KeyPEM()}} {
		if from != nil {
			sec.old = from.CertPEM()
			if sec.name == "ca-key" {
				sec.old = from.KeyPEM()
			}
		}
		if bytes.Equal(sec.old, sec.new) {
			continue
		}
		body, err := json.Marshal(map[string]string{"type": "Secret", "mesh": mesh, "name": sec.name, "data": base64.StdEncoding.EncodeToString(sec.new)})
		if err != nil {
			return time.Time{}, err
		}
		at = time.Now()
		if err := put(ctx, adminURL+"/meshes/"+mesh+"/secrets/"+sec.name, body); err != nil {
			return time.Time{}, err
		}
	}
	if at.IsZero() {
		at = time.Now() // nothing to write
	}
	return at, nil
}

// PutMesh writes MeshManifest(mesh), as JSON, through the admin API.
func PutMesh(ctx context.Context, adminURL, mesh string) error {
	body := fmt.Appendf(nil, `{"type":"Mesh","name":%q,"mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"provided",`+
		`"dpCert":{"rotation":{"expiration":"24h"}},"config":{"cert":{"secret":"ca-cert"},"key":{"secret":"ca-key"}}}]}}`, mesh)
	return put(ctx, adminURL+"/meshes/"+mesh, body)
}

func put(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("PUT %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	// A hidden temporary name: the file source ignores it.
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close() //nolint:errcheck,gosec // already failing
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// HeldBy returns a check that a secret comes from ca: a trust bundle that is
// exactly its root, or an identity whose leaf its intermediate signed.
func HeldBy(ca *MeshCA) func(Kind, *tlsv3.Secret) error {
	return func(k Kind, sec *tlsv3.Secret) error {
		if k == KindBundle {
			if !bytes.Equal(sec.GetValidationContext().GetTrustedCa().GetInlineBytes(), ca.Root.CertPEM) {
				return errors.New("trust bundle is not the expected root")
			}
			return nil
		}
		block, _ := pem.Decode(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
		if block == nil {
			return errors.New("certificate chain holds no PEM block")
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("parsing leaf: %w", err)
		}
		if err := leaf.CheckSignatureFrom(ca.Intermediate.Cert); err != nil {
			return fmt.Errorf("leaf not signed by the expected CA: %w", err)
		}
		return nil
	}
}
