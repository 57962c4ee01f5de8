package sds

import (
	"encoding/binary"
	"net/url"
	"sort"
	"time"

	"github.com/meshsds/meshsds/sds/token"
)

// ServiceTag is the tag whose values become SPIFFE identities.
const ServiceTag = token.ServiceTag

// Identity is who an authenticated data plane is: its mesh, its name and the
// tags its token grants. It is immutable once built.
type Identity struct {
	Mesh    string
	Name    string
	Tags    map[string][]string
	TokenID string
	// Expires is when the credential that proved the identity expires;
	// streams are closed then. Zero means never (--auth none).
	Expires time.Time
}

// NodeID is the Envoy node id this identity must present: "<mesh>.<name>".
func (id *Identity) NodeID() string { return id.Mesh + "." + id.Name }

// Key identifies the workload certificate this identity gets: the two
// streams of one data plane share it; another token (a replacement of a
// revoked one), other tags or another name do not. It starts with the mesh
// and a NUL byte (mesh names have none); every other part is
// length-prefixed, so that no two identities share a key.
func (id *Identity) Key() string {
	b := make([]byte, 0, 64)
	b = append(b, id.Mesh...)
	b = append(b, 0)
	field := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	field(id.Name)
	field(id.TokenID)
	names := make([]string, 0, len(id.Tags))
	for k := range id.Tags {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		field(k)
		vals := sortedCopy(id.Tags[k])
		b = binary.AppendUvarint(b, uint64(len(vals)))
		for _, v := range vals {
			field(v)
		}
	}
	return string(b)
}

// URIs returns the URI SANs of the identity: spiffe://<mesh>/<service> for
// every kuma.io/service value, then kuma://<tag>/<value> for the other tags,
// each group sorted so that certificates are deterministic.
func (id *Identity) URIs() []*url.URL {
	var spiffe, kuma []*url.URL
	for _, svc := range sortedCopy(id.Tags[ServiceTag]) {
		spiffe = append(spiffe, &url.URL{Scheme: "spiffe", Host: id.Mesh, Path: "/" + svc})
	}
	names := make([]string, 0, len(id.Tags))
	for k := range id.Tags {
		if k != ServiceTag {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range sortedCopy(id.Tags[k]) {
			kuma = append(kuma, &url.URL{Scheme: "kuma", Opaque: "//" + k + "/" + url.PathEscape(v)})
		}
	}
	return append(spiffe, kuma...)
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}
