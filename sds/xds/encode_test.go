package xds

import (
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestAppendDiscoveryResponseIsProtoMarshal(t *testing.T) {
	secret := &anypb.Any{TypeUrl: TypeSecret, Value: []byte("\x0a\x0didentity_cert" + strings.Repeat("x", 300))}
	big := &anypb.Any{TypeUrl: TypeSecret, Value: []byte(strings.Repeat("y", 70000))} // multi-byte lengths
	tests := []struct {
		name      string
		version   string
		resources []*anypb.Any
		nonce     string
	}{
		{"one secret", "3f2a", []*anypb.Any{secret}, "1"},
		{"two secrets", "3f2a", []*anypb.Any{secret, big}, "12"},
		{"no version, no nonce", "", []*anypb.Any{secret}, ""},
		{"no resources", "v", nil, "7"},
		{"empty Any", "v", []*anypb.Any{{}}, "7"},
		{"Any without type", "v", []*anypb.Any{{Value: []byte{1, 2}}}, "7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.DiscoveryResponse{
				VersionInfo: tc.version, Resources: tc.resources, TypeUrl: TypeSecret, Nonce: tc.nonce,
			})
			require.NoError(t, err)
			prefix := []byte{0xde, 0xad}
			got := AppendDiscoveryResponse(append([]byte(nil), prefix...), tc.version, tc.resources, tc.nonce)
			require.Equal(t, prefix, got[:2], "appends, keeping what is there")
			require.Equal(t, want, got[2:])
		})
	}
}
