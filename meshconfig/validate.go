package meshconfig

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// maxNameLength is the longest RFC 1123 subdomain.
const maxNameLength = 253

// minDPCertValidity is the shortest workload certificate lifetime accepted:
// shorter lifetimes would have data planes renewing all the time.
const minDPCertValidity = time.Minute

// Messages shared by several rules; they follow Kuma's wording.
const (
	msgEmpty         = "cannot be empty"
	msgInvalidBase64 = "has to be valid base64 string"
	msgInvalidName   = "must be a valid RFC 1123 subdomain: lowercase alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character"
)

// ValidateName checks that name is an RFC 1123 subdomain of at most 253
// characters, the rule for resource and mesh names. It returns nil when the
// name is fine and otherwise a FieldError for field.
func ValidateName(field, name string) *FieldError {
	if name == "" {
		return &FieldError{Field: field, Message: msgEmpty}
	}
	if len(name) > maxNameLength {
		return &FieldError{Field: field, Message: fmt.Sprintf("must be at most %d characters long, got %d", maxNameLength, len(name))}
	}
	for _, label := range strings.Split(name, ".") {
		if !validLabel(label) {
			return &FieldError{Field: field, Message: msgInvalidName}
		}
	}
	return nil
}

// validLabel reports whether s is one dot-separated part of an RFC 1123
// subdomain: lowercase alphanumerics and '-', alphanumeric at both ends.
func validLabel(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

// Validate checks a Secret: its name, its mesh (a global secret has none) and
// its payload, which must not be empty nor larger than maxSize bytes
// (DefaultMaxSecretSize when maxSize <= 0). It returns a *ValidationError.
func (s *Secret) Validate(maxSize int) error {
	if maxSize <= 0 {
		maxSize = DefaultMaxSecretSize
	}
	var verr ValidationError
	if fe := ValidateName("name", s.Name); fe != nil {
		verr.Causes = append(verr.Causes, *fe)
	}
	if s.Global {
		if s.Mesh != "" {
			verr.Add("mesh", "must not be set on a global secret")
		}
	} else if fe := ValidateName("mesh", s.Mesh); fe != nil {
		verr.Causes = append(verr.Causes, *fe)
	}
	switch {
	case len(s.Data) == 0:
		verr.Add("data", msgEmpty)
	case len(s.Data) > maxSize:
		verr.Add("data", fmt.Sprintf("must be at most %d bytes (decoded), got %d", maxSize, len(s.Data)))
	}
	return verr.ErrOrNil()
}

// Validate checks the structure of a Mesh and returns a *ValidationError
// listing every broken rule. It does not look for the Secrets the backends
// reference: a Secret may be created after its Mesh, and ResolveMesh reports
// what is missing.
func (m *Mesh) Validate() error {
	var verr ValidationError
	if fe := ValidateName("name", m.Name); fe != nil {
		verr.Causes = append(verr.Causes, *fe)
	}
	if m.MTLS != nil {
		m.MTLS.validate(&verr)
	}
	return verr.ErrOrNil()
}

// validate adds the broken rules of the mtls section to verr.
func (t *MTLS) validate(verr *ValidationError) {
	seen := make(map[string]int, len(t.Backends))
	for i := range t.Backends {
		b := &t.Backends[i]
		field := indexField("mtls.backends", i)
		if fe := ValidateName("name", b.Name); fe != nil {
			verr.Add(JoinField(field, fe.Field), fe.Message)
		} else if j, dup := seen[b.Name]; dup {
			verr.Add(JoinField(field, "name"), fmt.Sprintf("must be unique: %q is also the name of %s", b.Name, indexField("mtls.backends", j)))
		} else {
			seen[b.Name] = i
		}
		verr.AddError(field, b.validate())
	}
	switch {
	case t.EnabledBackend != "":
		if _, ok := seen[t.EnabledBackend]; !ok {
			verr.Add("mtls.enabledBackend", fmt.Sprintf("has to be set to one of the backends of the mesh: backend %q is not defined", t.EnabledBackend))
		}
	case len(t.Backends) > 1:
		verr.Add("mtls.enabledBackend", "must be set when there is more than one backend")
	}
}

// validate returns the broken rules of one backend, fields relative to it.
func (b *Backend) validate() error {
	var verr ValidationError
	switch b.Type {
	case "":
		verr.Add("type", msgEmpty)
	case BackendProvided:
		if _, err := ParseProvidedConfig(b.Config); err != nil {
			verr.AddError("config", err)
		}
	case BackendBuiltin:
		if _, err := ParseBuiltinConfig(b.Config); err != nil {
			verr.AddError("config", err)
		}
	default:
		verr.Add("type", fmt.Sprintf("unsupported backend type %q: must be %q or %q", b.Type, BackendProvided, BackendBuiltin))
	}
	if b.DPCert != nil && b.DPCert.Rotation != nil && b.DPCert.Rotation.Expiration != "" {
		if _, err := parseValidity(b.DPCert.Rotation.Expiration); err != nil {
			verr.Add("dpCert.rotation.expiration", err.Error())
		}
	}
	return verr.ErrOrNil()
}

// DPCertValidity returns the lifetime of the workload certificates backend b
// issues: its dpCert.rotation.expiration, or DefaultDPCertValidity when unset.
func DPCertValidity(b *Backend) (time.Duration, error) {
	if b == nil || b.DPCert == nil || b.DPCert.Rotation == nil || b.DPCert.Rotation.Expiration == "" {
		return DefaultDPCertValidity, nil
	}
	d, err := parseValidity(b.DPCert.Rotation.Expiration)
	if err != nil {
		return 0, &FieldError{Field: "dpCert.rotation.expiration", Message: err.Error()}
	}
	return d, nil
}

// parseValidity parses a workload certificate lifetime: a Go duration such as
// "24h", or a whole number of days ("1d") or years ("1y") as Kuma writes them.
func parseValidity(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, errors.New("must be positive")
	}
	if d < minDPCertValidity {
		return 0, fmt.Errorf("must be at least %s, got %s", minDPCertValidity, d)
	}
	return d, nil
}

// parseDuration is time.ParseDuration extended with the "d" (24h) and "y"
// (365 days) units of Kuma's configuration, for whole numbers only.
func parseDuration(s string) (time.Duration, error) {
	const msg = `must be a valid duration such as "24h", "90m" or "1d"`
	unit := time.Duration(0)
	switch {
	case strings.HasSuffix(s, "d"):
		unit = 24 * time.Hour
	case strings.HasSuffix(s, "y"):
		unit = 365 * 24 * time.Hour
	}
	if unit == 0 {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, errors.New(msg)
		}
		return d, nil
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, errors.New(msg)
	}
	if n > int64(math.MaxInt64/unit) || n < -int64(math.MaxInt64/unit) {
		return 0, errors.New("is too long")
	}
	return time.Duration(n) * unit, nil
}

// ParseProvidedConfig decodes and checks the config of a "provided" backend:
// cert and key are both required, each naming exactly one source. Unknown
// keys are errors. It returns a *ValidationError with fields relative to the
// config ("cert", "key.inline", ...).
func ParseProvidedConfig(raw json.RawMessage) (*ProvidedConfig, error) {
	var verr ValidationError
	if isNullOrEmpty(raw) {
		verr.Add("", msgEmpty+": cert and key are required")
		return nil, &verr
	}
	var cfg ProvidedConfig
	if err := decodeKnown(raw, &cfg); err != nil {
		verr.AddError("", err)
		return nil, &verr
	}
	validateDataSource(&verr, "cert", cfg.Cert)
	validateDataSource(&verr, "key", cfg.Key)
	if err := verr.ErrOrNil(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// validateDataSource adds the broken rules of one DataSource to verr.
func validateDataSource(verr *ValidationError, field string, ds *DataSource) {
	if ds == nil {
		verr.Add(field, msgEmpty)
		return
	}
	set := 0
	for _, v := range []string{ds.Secret, ds.Inline, ds.InlineString, ds.File} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		verr.Add(field, "must set exactly one of secret, inline, inlineString or file")
		return
	}
	switch {
	case ds.Secret != "":
		if fe := ValidateName("secret", ds.Secret); fe != nil {
			verr.Add(JoinField(field, fe.Field), fe.Message)
		}
	case ds.Inline != "":
		if _, err := base64.StdEncoding.DecodeString(ds.Inline); err != nil {
			verr.Add(JoinField(field, "inline"), msgInvalidBase64)
		}
	case ds.File != "":
		if !filepath.IsAbs(ds.File) {
			verr.Add(JoinField(field, "file"), "must be an absolute path")
		}
	}
}

// Enabled returns the backend in use and its index in Backends. ok is false
// when mTLS is off: no mtls section, no backends, or an enabledBackend that
// names no backend or is missing among several (which Validate rejects).
// With exactly one backend, an empty EnabledBackend means that one.
func (t *MTLS) Enabled() (backend *Backend, index int, ok bool) {
	if t == nil || len(t.Backends) == 0 {
		return nil, -1, false
	}
	if t.EnabledBackend == "" {
		if len(t.Backends) == 1 {
			return &t.Backends[0], 0, true
		}
		return nil, -1, false
	}
	for i := range t.Backends {
		if t.Backends[i].Name == t.EnabledBackend {
			return &t.Backends[i], i, true
		}
	}
	return nil, -1, false
}

// isNullOrEmpty reports whether raw holds no JSON value or JSON null.
func isNullOrEmpty(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// isObject reports whether raw holds a JSON object.
func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}
