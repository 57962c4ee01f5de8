package xds

import (
	"crypto/sha256"
	"encoding/hex"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// AppendDiscoveryResponse appends the wire form of a DiscoveryResponse of
// Secrets, the one message every push sends: by hand, in field order, as
// proto.Marshal with Deterministic would, without its reflection and at a
// fraction of its stack depth on the goroutines that push (see
// TestAppendDiscoveryResponseIsProtoMarshal).
func AppendDiscoveryResponse(b []byte, version string, resources []*anypb.Any, nonce string) []byte {
	const (
		fieldVersion   = 1
		fieldResources = 2
		fieldTypeURL   = 4
		fieldNonce     = 5
		anyTypeURL     = 1
		anyValue       = 2
	)
	if version != "" {
		b = protowire.AppendTag(b, fieldVersion, protowire.BytesType)
		b = protowire.AppendString(b, version)
	}
	for _, r := range resources {
		size := 0
		if r.GetTypeUrl() != "" {
			size += protowire.SizeTag(anyTypeURL) + protowire.SizeBytes(len(r.GetTypeUrl()))
		}
		if len(r.GetValue()) > 0 {
			size += protowire.SizeTag(anyValue) + protowire.SizeBytes(len(r.GetValue()))
		}
		b = protowire.AppendTag(b, fieldResources, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		if r.GetTypeUrl() != "" {
			b = protowire.AppendTag(b, anyTypeURL, protowire.BytesType)
			b = protowire.AppendString(b, r.GetTypeUrl())
		}
		if len(r.GetValue()) > 0 {
			b = protowire.AppendTag(b, anyValue, protowire.BytesType)
			b = protowire.AppendBytes(b, r.GetValue())
		}
	}
	b = protowire.AppendTag(b, fieldTypeURL, protowire.BytesType)
	b = protowire.AppendString(b, TypeSecret)
	if nonce != "" {
		b = protowire.AppendTag(b, fieldNonce, protowire.BytesType)
		b = protowire.AppendString(b, nonce)
	}
	return b
}

// ContentVersion is a short, deterministic version string for bytes.
func ContentVersion(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
