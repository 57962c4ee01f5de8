package daemon

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/meshsds/meshsds/internal/buildinfo"
	"github.com/meshsds/meshsds/secretsource/api"
)

// indexInfo is what GET / of the admin API says about this server, as
// Kuma's index does: the host, the version, an id of this process and an id
// of the cluster, which every replica sharing the token signing key (one
// store, or one Kubernetes namespace) shares.
func indexInfo(signingKey *ecdsa.PublicKey) api.Index {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	suffix := make([]byte, 2)
	_, _ = rand.Read(suffix)
	return api.Index{
		Hostname:   host,
		Version:    buildinfo.Get().Version,
		InstanceID: host + "-" + hex.EncodeToString(suffix), // Kuma's form
		ClusterID:  clusterID(signingKey),
	}
}

// clusterID derives a stable UUID-shaped id from the public half of the
// token signing key: the replicas of one deployment share the key, and a
// public key's hash gives nothing away.
func clusterID(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8: custom
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
