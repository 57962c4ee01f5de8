package meshconfig

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSecretRefs(t *testing.T) {
	m := &Mesh{Name: "default", MTLS: &MTLS{EnabledBackend: "ca-2", Backends: []Backend{
		{Name: "ca-1", Type: BackendProvided, Config: json.RawMessage(`{"cert":{"secret":"old-cert"},"key":{"inline":"a2V5"}}`)},
		{Name: "ca-2", Type: BackendProvided, Config: json.RawMessage(`{"cert":{"secret":"new-cert"},"key":{"secret":"new-key"}}`)},
		{Name: "ca-3", Type: BackendBuiltin},
	}}}
	require.Equal(t, []SecretRef{
		{Backend: "ca-1", Field: "mtls.backends[0].config.cert.secret", Secret: "old-cert"},
		{Backend: "ca-2", Field: "mtls.backends[1].config.cert.secret", Secret: "new-cert"},
		{Backend: "ca-2", Field: "mtls.backends[1].config.key.secret", Secret: "new-key"},
		{Backend: "ca-3", Field: "mtls.backends[2]", Secret: "default.ca-builtin-cert-ca-3"},
		{Backend: "ca-3", Field: "mtls.backends[2]", Secret: "default.ca-builtin-key-ca-3"},
	}, m.SecretRefs())
	require.Empty(t, (&Mesh{Name: "x"}).SecretRefs())
}
