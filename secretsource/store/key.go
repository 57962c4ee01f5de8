package store

import (
	"errors"
	"fmt"
)

// Validate reports whether k is a key a Store accepts: a known Kind, a
// non-empty Name, and a Mesh that is set for KindSecret and empty for
// KindMesh and KindGlobalSecret. Names are not checked against RFC 1123
// here; that is the admin API's job, and the store keeps whatever it is
// given. Every implementation calls Validate before touching its database.
func (k Key) Validate() error {
	if k.Name == "" {
		return errors.New("invalid key: name is empty")
	}
	switch k.Kind {
	case KindSecret:
		if k.Mesh == "" {
			return fmt.Errorf("invalid key %s: a Secret needs a mesh", k)
		}
	case KindMesh, KindGlobalSecret:
		if k.Mesh != "" {
			return fmt.Errorf("invalid key %s: a %s has no mesh, got %q", k, k.Kind, k.Mesh)
		}
	default:
		return fmt.Errorf("invalid key %s: unknown kind %q", k, k.Kind)
	}
	return nil
}

// String formats k for logs and errors: "Secret default/ca-cert",
// "Mesh default", "GlobalSecret signing-key". Record embeds Key, so a Record
// formatted with %v or %s prints only its key: its Data cannot reach a log
// line that way by accident.
func (k Key) String() string {
	if k.Mesh == "" {
		return fmt.Sprintf("%s %s", k.Kind, k.Name)
	}
	return fmt.Sprintf("%s %s/%s", k.Kind, k.Mesh, k.Name)
}

// ValidateListArgs reports whether kind and mesh are valid arguments to
// Store.List: a known Kind, and an empty mesh for the kinds that have none.
func ValidateListArgs(kind Kind, mesh string) error {
	switch kind {
	case KindSecret:
	case KindMesh, KindGlobalSecret:
		if mesh != "" {
			return fmt.Errorf("invalid list: a %s has no mesh, got %q", kind, mesh)
		}
	default:
		return fmt.Errorf("invalid list: unknown kind %q", kind)
	}
	return nil
}

// ValidatePutArgs reports whether rec and expectVersion are valid arguments
// to Store.Put: a valid key and a version that is not negative.
func ValidatePutArgs(rec Record, expectVersion int64) error {
	if err := rec.Validate(); err != nil {
		return err
	}
	if expectVersion < 0 {
		return fmt.Errorf("putting %s: expected version %d is negative", rec.Key, expectVersion)
	}
	return nil
}
