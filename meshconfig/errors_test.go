package meshconfig

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFieldErrorString(t *testing.T) {
	require.Equal(t, "data: cannot be empty", (&FieldError{Field: "data", Message: "cannot be empty"}).Error())
	require.Equal(t, "cannot be empty", (&FieldError{Message: "cannot be empty"}).Error())
}

func TestJoinField(t *testing.T) {
	tests := []struct{ prefix, field, want string }{
		{"", "", ""},
		{"", "cert", "cert"},
		{"config", "", "config"},
		{"config", "cert", "config.cert"},
		{"mtls.backends", "[0]", "mtls.backends[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			require.Equal(t, tt.want, JoinField(tt.prefix, tt.field))
		})
	}
}

func TestValidationError(t *testing.T) {
	var verr ValidationError
	require.NoError(t, verr.ErrOrNil())
	require.NoError(t, (*ValidationError)(nil).ErrOrNil())

	verr.Add("name", "cannot be empty")
	verr.AddError("config", &ValidationError{Causes: []FieldError{{Field: "cert", Message: "a"}, {Message: "b"}}})
	verr.AddError("config.key", &FieldError{Field: "secret", Message: "c"})
	verr.AddError("dpCert", errors.New("d"))
	verr.AddError("ignored", nil)
	verr.AddError("wrapped", fmt.Errorf("context: %w", &FieldError{Field: "x", Message: "e"}))

	err := verr.ErrOrNil()
	require.EqualError(t, err, "name: cannot be empty; config.cert: a; config: b; config.key.secret: c; dpCert: d; wrapped.x: e")

	prefixed := verr.WithPrefix("spec")
	require.Equal(t, "spec.name", prefixed.Causes[0].Field)
	require.Equal(t, "name", verr.Causes[0].Field, "WithPrefix leaves the original alone")
}

func TestDocumentError(t *testing.T) {
	inner := &ValidationError{Causes: []FieldError{{Field: "data", Message: msgInvalidBase64}}}
	err := error(&DocumentError{Document: 2, Err: inner})
	require.EqualError(t, err, "document 2: data: has to be valid base64 string")
	var verr *ValidationError
	require.ErrorAs(t, err, &verr)
	require.Same(t, inner, verr)
}
