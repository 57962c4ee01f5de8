package meshconfig

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantMsg string
	}{
		{name: "simple", in: "default"},
		{name: "dots and dashes", in: "a-1.b-2.c"},
		{name: "digits only", in: "123"},
		{name: "single character", in: "a"},
		{name: "253 characters", in: strings.Repeat("a", 253)},
		{name: "empty", in: "", wantMsg: "cannot be empty"},
		{name: "254 characters", in: strings.Repeat("a", 254), wantMsg: "must be at most 253 characters long, got 254"},
		{name: "uppercase", in: "Default", wantMsg: msgInvalidName},
		{name: "underscore", in: "my_secret", wantMsg: msgInvalidName},
		{name: "leading dash", in: "-a", wantMsg: msgInvalidName},
		{name: "trailing dash", in: "a-", wantMsg: msgInvalidName},
		{name: "leading dot", in: ".a", wantMsg: msgInvalidName},
		{name: "trailing dot", in: "a.", wantMsg: msgInvalidName},
		{name: "double dot", in: "a..b", wantMsg: msgInvalidName},
		{name: "dash before dot", in: "a-.b", wantMsg: msgInvalidName},
		{name: "slash", in: "a/b", wantMsg: msgInvalidName},
		{name: "non-ASCII", in: "caf\u00e9", wantMsg: msgInvalidName},
		{name: "space", in: "a b", wantMsg: msgInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fe := ValidateName("name", tt.in)
			if tt.wantMsg == "" {
				require.Nil(t, fe)
				return
			}
			require.Equal(t, &FieldError{Field: "name", Message: tt.wantMsg}, fe)
		})
	}
}

func TestSecretValidate(t *testing.T) {
	tests := []struct {
		name    string
		secret  Secret
		maxSize int
		wantErr string
	}{
		{name: "mesh secret", secret: Secret{Mesh: "default", Name: "s", Data: []byte("x")}},
		{name: "global secret", secret: Secret{Name: "s", Global: true, Data: []byte("x")}},
		{name: "at the limit", secret: Secret{Mesh: "m", Name: "s", Data: make([]byte, 4)}, maxSize: 4},
		{name: "over the limit", secret: Secret{Mesh: "m", Name: "s", Data: make([]byte, 5)}, maxSize: 4, wantErr: "data: must be at most 4 bytes (decoded), got 5"},
		{name: "missing mesh", secret: Secret{Name: "s", Data: []byte("x")}, wantErr: "mesh: cannot be empty"},
		{name: "global with mesh", secret: Secret{Mesh: "m", Name: "s", Global: true, Data: []byte("x")}, wantErr: "mesh: must not be set on a global secret"},
		{
			name: "everything wrong", secret: Secret{Mesh: "M", Name: ""},
			wantErr: "name: cannot be empty; mesh: " + msgInvalidName + "; data: cannot be empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.secret.Validate(tt.maxSize)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.wantErr)
			var verr *ValidationError
			require.ErrorAs(t, err, &verr)
		})
	}
}

// providedConfig is a valid provided backend config.
const providedConfig = `{"cert":{"secret":"my-cert"},"key":{"secret":"my-key"}}`

func TestMeshValidate(t *testing.T) {
	backend := func(name, typ string) Backend {
		b := Backend{Name: name, Type: typ}
		if typ == BackendProvided {
			b.Config = json.RawMessage(providedConfig)
		}
		return b
	}
	tests := []struct {
		name    string
		mesh    Mesh
		wantErr string
	}{
		{name: "no mtls", mesh: Mesh{Name: "default"}},
		{name: "empty mtls", mesh: Mesh{Name: "default", MTLS: &MTLS{}}},
		{name: "one backend, enabled implicitly", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{backend("ca-1", BackendProvided)}}}},
		{name: "several backends with enabledBackend", mesh: Mesh{Name: "m", MTLS: &MTLS{
			EnabledBackend: "ca-2",
			Backends:       []Backend{backend("ca-1", BackendBuiltin), backend("ca-2", BackendProvided)},
		}}},
		{name: "builtin with config object", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{Name: "b", Type: BackendBuiltin, Config: json.RawMessage(`{"caCert":{}}`)}}}}},
		{
			name: "builtin with config not an object", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{Name: "b", Type: BackendBuiltin, Config: json.RawMessage(`"x"`)}}}},
			wantErr: "mtls.backends[0].config: must be an object, got string",
		},
		{
			name: "builtin with a bad key size", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{Name: "b", Type: BackendBuiltin, Config: json.RawMessage(`{"caCert":{"RSAbits":1024}}`)}}}},
			wantErr: "mtls.backends[0].config.caCert.RSAbits: must be 2048, 3072 or 4096 (or unset for ECDSA P-256)",
		},
		{
			name: "builtin with a short expiration", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{Name: "b", Type: BackendBuiltin, Config: json.RawMessage(`{"caCert":{"expiration":"1h"}}`)}}}},
			wantErr: "mtls.backends[0].config.caCert.expiration: must be at least 1d",
		},
		{
			name: "builtin with an unknown key", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{Name: "b", Type: BackendBuiltin, Config: json.RawMessage(`{"caCertt":{}}`)}}}},
			wantErr: "mtls.backends[0].config: unknown field \"caCertt\"",
		},
		{
			name: "enabledBackend without backends", mesh: Mesh{Name: "m", MTLS: &MTLS{EnabledBackend: "x"}},
			wantErr: `mtls.enabledBackend: has to be set to one of the backends of the mesh: backend "x" is not defined`,
		},
		{
			name: "missing type", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{Name: "b"}}}},
			wantErr: "mtls.backends[0].type: cannot be empty",
		},
		{
			name: "bad backend name", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{backend("B", BackendBuiltin)}}},
			wantErr: "mtls.backends[0].name: " + msgInvalidName,
		},
		{name: "expiration in days", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{
			Name: "b", Type: BackendBuiltin,
			DPCert: &DPCert{Rotation: &Rotation{Expiration: "2d"}},
		}}}}},
		{
			name: "expiration overflowing", mesh: Mesh{Name: "m", MTLS: &MTLS{Backends: []Backend{{
				Name: "b", Type: BackendBuiltin,
				DPCert: &DPCert{Rotation: &Rotation{Expiration: "9999999999y"}},
			}}}},
			wantErr: "mtls.backends[0].dpCert.rotation.expiration: is too long",
		},
		{
			name: "all causes collected", mesh: Mesh{Name: "", MTLS: &MTLS{Backends: []Backend{
				{Name: "a", Type: "vault"},
				{Name: "a", Type: BackendProvided, DPCert: &DPCert{Rotation: &Rotation{Expiration: "0s"}}},
			}}},
			wantErr: `name: cannot be empty; ` +
				`mtls.backends[0].type: unsupported backend type "vault": must be "provided" or "builtin"; ` +
				`mtls.backends[1].name: must be unique: "a" is also the name of mtls.backends[0]; ` +
				`mtls.backends[1].config: cannot be empty: cert and key are required; ` +
				`mtls.backends[1].dpCert.rotation.expiration: must be positive; ` +
				`mtls.enabledBackend: must be set when there is more than one backend`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.mesh.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.wantErr)
		})
	}
}

func TestParseProvidedConfig(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    *ProvidedConfig
		wantErr string
	}{
		{name: "secrets", raw: providedConfig, want: &ProvidedConfig{Cert: &DataSource{Secret: "my-cert"}, Key: &DataSource{Secret: "my-key"}}},
		{
			name: "every kind of source", raw: `{"cert":{"inlineString":"PEM"},"key":{"file":"/k.pem"}}`,
			want: &ProvidedConfig{Cert: &DataSource{InlineString: "PEM"}, Key: &DataSource{File: "/k.pem"}},
		},
		{
			name: "inline", raw: `{"cert":{"inline":"UEVN"},"key":{"inline":"S0VZ"}}`,
			want: &ProvidedConfig{Cert: &DataSource{Inline: "UEVN"}, Key: &DataSource{Inline: "S0VZ"}},
		},
		{name: "null", raw: `null`, wantErr: "cannot be empty: cert and key are required"},
		{name: "empty", raw: ``, wantErr: "cannot be empty: cert and key are required"},
		{name: "not an object", raw: `[1]`, wantErr: "must be an object, got array"},
		{name: "empty object", raw: `{}`, wantErr: "cert: cannot be empty; key: cannot be empty"},
		{name: "unknown key in a data source", raw: `{"cert":{"secrett":"x"},"key":{"secret":"k"}}`, wantErr: `unknown field "secrett"`},
		{name: "source of the wrong type", raw: `{"cert":{"secret":1},"key":{"secret":"k"}}`, wantErr: "cert.secret: must be a string, got number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProvidedConfig(json.RawMessage(tt.raw))
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestDPCertValidity(t *testing.T) {
	withExpiration := func(e string) *Backend {
		return &Backend{DPCert: &DPCert{Rotation: &Rotation{Expiration: e}}}
	}
	tests := []struct {
		name    string
		backend *Backend
		want    time.Duration
		wantErr string
	}{
		{name: "nil backend", backend: nil, want: DefaultDPCertValidity},
		{name: "no dpCert", backend: &Backend{}, want: DefaultDPCertValidity},
		{name: "no rotation", backend: &Backend{DPCert: &DPCert{}}, want: DefaultDPCertValidity},
		{name: "empty expiration", backend: withExpiration(""), want: DefaultDPCertValidity},
		{name: "hours", backend: withExpiration("12h"), want: 12 * time.Hour},
		{name: "mixed Go duration", backend: withExpiration("1h30m"), want: 90 * time.Minute},
		{name: "days", backend: withExpiration("3d"), want: 72 * time.Hour},
		{name: "years", backend: withExpiration("1y"), want: 365 * 24 * time.Hour},
		{name: "exactly the minimum", backend: withExpiration("1m"), want: time.Minute},
		{name: "below the minimum", backend: withExpiration("59s"), wantErr: "dpCert.rotation.expiration: must be at least 1m0s, got 59s"},
		{name: "zero", backend: withExpiration("0"), wantErr: "dpCert.rotation.expiration: must be positive"},
		{name: "zero days", backend: withExpiration("0d"), wantErr: "dpCert.rotation.expiration: must be positive"},
		{name: "garbage", backend: withExpiration("soon"), wantErr: `dpCert.rotation.expiration: must be a valid duration`},
		{name: "fractional days", backend: withExpiration("1.5d"), wantErr: `dpCert.rotation.expiration: must be a valid duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DPCertValidity(tt.backend)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestMTLSEnabled(t *testing.T) {
	two := []Backend{{Name: "a"}, {Name: "b"}}
	tests := []struct {
		name      string
		mtls      *MTLS
		wantName  string
		wantIndex int
		wantOK    bool
	}{
		{name: "nil", mtls: nil, wantIndex: -1},
		{name: "no backends", mtls: &MTLS{}, wantIndex: -1},
		{name: "single implicit", mtls: &MTLS{Backends: []Backend{{Name: "a"}}}, wantName: "a", wantIndex: 0, wantOK: true},
		{name: "named", mtls: &MTLS{EnabledBackend: "b", Backends: two}, wantName: "b", wantIndex: 1, wantOK: true},
		{name: "several without enabledBackend", mtls: &MTLS{Backends: two}, wantIndex: -1},
		{name: "unknown enabledBackend", mtls: &MTLS{EnabledBackend: "c", Backends: two}, wantIndex: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, i, ok := tt.mtls.Enabled()
			require.Equal(t, tt.wantOK, ok)
			require.Equal(t, tt.wantIndex, i)
			if !ok {
				require.Nil(t, b)
				return
			}
			require.Equal(t, tt.wantName, b.Name)
			require.Same(t, &tt.mtls.Backends[i], b)
		})
	}
}
