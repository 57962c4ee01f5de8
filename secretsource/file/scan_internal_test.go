package file

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/meshconfig"
)

func TestIgnoredName(t *testing.T) {
	tests := []struct {
		name    string
		ignored bool
	}{
		{"ca.crt", false},
		{"secrets.yaml", false},
		{"#", false},
		{".hidden", true},
		{"..data", true},
		{"..2026_11_26_10_00_00.123", true},
		{".#ca.crt", true},
		{"ca.crt~", true},
		{".ca.crt.swp", true},
		{"ca.crt.swx", true},
		{"#ca.crt#", true},
		{"secrets.yaml.tmp", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.ignored, ignoredName(tt.name))
		})
	}
}

func TestCheckPEM(t *testing.T) {
	const block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	tests := []struct {
		name string
		data string
		ok   bool
	}{
		{name: "not PEM", data: "token", ok: true},
		{name: "one block", data: block, ok: true},
		{name: "leading blank line", data: "\n" + block, ok: true},
		{name: "two blocks", data: block + block, ok: true},
		{name: "no trailing newline", data: block[:len(block)-1], ok: true},
		{name: "no END line", data: "-----BEGIN CERTIFICATE-----\nAAAA\n"},
		{name: "END line cut", data: block[:len(block)-10]},
		{name: "second block without END", data: block + "-----BEGIN CERTIFICATE-----\nAA"},
		{name: "mismatched END", data: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPEM([]byte(tt.data))
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, "incomplete PEM")
			}
		})
	}
}

func TestEqualResources(t *testing.T) {
	view := func(data string, backend string) meshconfig.Resources {
		return meshconfig.Resources{
			Meshes: map[string]*meshconfig.Mesh{"m": {Name: "m", MTLS: &meshconfig.MTLS{EnabledBackend: backend}}},
			Secrets: map[meshconfig.SecretKey]*meshconfig.Secret{
				{Mesh: "m", Name: "s"}: {Mesh: "m", Name: "s", Data: []byte(data)},
			},
		}
	}
	require.True(t, view("a", "ca").Equal(view("a", "ca")), "equal content, other pointers")
	require.False(t, view("a", "ca").Equal(view("b", "ca")))
	require.False(t, view("a", "ca").Equal(view("a", "other")))
	require.False(t, view("a", "ca").Equal(meshconfig.Resources{}))
}

// FuzzDecodeRaw checks that no raw file content makes the decoder panic and
// that accepted content is kept byte for byte.
func FuzzDecodeRaw(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN X-----\n"))
	f.Add([]byte("token"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := candidate{path: "/d/default/s", raw: true, mesh: "default", name: "s"}
		objs, err := decodeRaw(c, data, 1<<20)
		if err != nil {
			return
		}
		require.Len(t, objs, 1)
		require.Equal(t, data, objs[0].Secret.Data)
	})
}
