package meshconfig

import (
	"errors"
	"strconv"
	"strings"
)

// FieldError is one broken rule, naming the field as a dotted path such as
// "mtls.backends[0].config.cert" and the rule it breaks. The admin API
// renders it as one of Kuma's error causes {"field", "message"}.
type FieldError struct {
	// Field is the dotted path of the offending field; empty when the rule
	// concerns the whole resource.
	Field string
	// Message states the rule, e.g. "cannot be empty".
	Message string
}

// Error returns "field: message", or just the message when Field is empty.
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// ValidationError collects every broken rule of one resource. Callers get the
// individual causes with errors.As.
type ValidationError struct {
	Causes []FieldError
}

// Error joins the causes with "; ".
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Causes))
	for i := range e.Causes {
		parts[i] = e.Causes[i].Error()
	}
	return strings.Join(parts, "; ")
}

// Add records one broken rule.
func (e *ValidationError) Add(field, message string) {
	e.Causes = append(e.Causes, FieldError{Field: field, Message: message})
}

// AddError records err under the field prefix: the causes of a
// *ValidationError and a *FieldError keep their own fields below prefix; any
// other error becomes one cause at prefix. A nil err adds nothing.
func (e *ValidationError) AddError(prefix string, err error) {
	if err == nil {
		return
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		for _, c := range ve.Causes {
			e.Add(JoinField(prefix, c.Field), c.Message)
		}
		return
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		e.Add(JoinField(prefix, fe.Field), fe.Message)
		return
	}
	e.Add(prefix, err.Error())
}

// WithPrefix returns a copy of e whose fields all sit below prefix, e.g. the
// "cert" cause of ParseCA becomes "mtls.backends[0].config.cert".
func (e *ValidationError) WithPrefix(prefix string) *ValidationError {
	out := &ValidationError{Causes: make([]FieldError, len(e.Causes))}
	for i, c := range e.Causes {
		out.Causes[i] = FieldError{Field: JoinField(prefix, c.Field), Message: c.Message}
	}
	return out
}

// ErrOrNil returns e as an error when it holds causes and nil otherwise, so
// that a function never returns a non-nil error interface holding nothing.
func (e *ValidationError) ErrOrNil() error {
	if e == nil || len(e.Causes) == 0 {
		return nil
	}
	return e
}

// JoinField appends field to the dotted path prefix: JoinField("mtls",
// "enabledBackend") is "mtls.enabledBackend", an index such as "[0]" is
// appended without a dot, and an empty side yields the other.
func JoinField(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	case strings.HasPrefix(field, "["):
		return prefix + field
	default:
		return prefix + "." + field
	}
}

// indexField returns "name[i]".
func indexField(name string, i int) string {
	return name + "[" + strconv.Itoa(i) + "]"
}

// DocumentError is the error of one document of a multi-document file. It
// wraps the document's error, usually a *ValidationError.
type DocumentError struct {
	// Document is the 1-based position of the document among the non-empty
	// documents of the file.
	Document int
	// Err is why the document was rejected.
	Err error
}

// Error returns "document N: <error>".
func (e *DocumentError) Error() string {
	return "document " + strconv.Itoa(e.Document) + ": " + e.Err.Error()
}

// Unwrap returns the document's error.
func (e *DocumentError) Unwrap() error { return e.Err }
