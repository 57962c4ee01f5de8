package meshconfig

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Universal resource types.
const (
	typeSecret       = "Secret"
	typeGlobalSecret = "GlobalSecret"
	typeMesh         = "Mesh"
)

// Kubernetes forms.
const (
	k8sCoreAPIVersion = "v1"
	k8sKumaAPIVersion = "kuma.io/v1alpha1"
	k8sSecretType     = "system.kuma.io/secret"
	k8sGlobalType     = "system.kuma.io/global-secret"
	k8sMeshLabel      = "kuma.io/mesh"
	k8sSecretDataKey  = "value"
)

// DecodeOptions tunes Decode.
type DecodeOptions struct {
	// MaxSecretSize is the largest decoded Secret payload accepted, in bytes;
	// 0 means DefaultMaxSecretSize.
	MaxSecretSize int
}

// Object is one decoded document: exactly one of Mesh and Secret is set.
type Object struct {
	Mesh   *Mesh
	Secret *Secret
}

// Decode reads the Meshes and Secrets of a file in the Universal or
// Kubernetes form, YAML or JSON, with several documents separated by "---"
// lines. Empty and comment-only documents are skipped. Every object is
// validated.
//
// Decode is all or nothing: when any document is bad it returns no objects
// and an error listing each bad document as a *DocumentError ("document 2:
// ...") when the file holds several documents, or the document's own error
// when it holds one. The causes are reachable with errors.As as a
// *ValidationError.
func Decode(data []byte, opts DecodeOptions) ([]Object, error) {
	docs := splitDocuments(data)
	var (
		objs []Object
		errs []error
		// seen maps a resource's identity to the document defining it.
		seen = make(map[string]int, len(docs))
	)
	for i, doc := range docs {
		obj, err := decodeDocument(doc, opts)
		if err == nil {
			id := objectID(obj)
			if prev, dup := seen[id]; dup {
				err = fmt.Errorf("%s is already defined in document %d", id, prev)
			} else {
				seen[id] = i + 1
			}
		}
		if err != nil {
			if len(docs) > 1 {
				err = &DocumentError{Document: i + 1, Err: err}
			}
			errs = append(errs, err)
			continue
		}
		objs = append(objs, obj)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return objs, nil
}

// objectID names the identity of obj for duplicate detection and messages.
func objectID(obj Object) string {
	switch {
	case obj.Mesh != nil:
		return fmt.Sprintf("mesh %q", obj.Mesh.Name)
	case obj.Secret.Global:
		return fmt.Sprintf("global secret %q", obj.Secret.Name)
	default:
		return fmt.Sprintf("secret %q in mesh %q", obj.Secret.Name, obj.Secret.Mesh)
	}
}

// document is one non-empty YAML document of a file.
type document struct {
	text []byte
	// line is the number of lines of the file before the document, added to
	// the line numbers of YAML errors so that they point into the file.
	line int
}

// splitDocuments cuts data at "---" lines and drops documents that hold only
// blank lines and comments.
func splitDocuments(data []byte) []document {
	var (
		docs    []document
		cur     bytes.Buffer
		start   int // line number (0-based) where cur starts
		line    int
		content bool
	)
	flush := func() {
		if content {
			docs = append(docs, document{text: bytes.Clone(cur.Bytes()), line: start})
		}
		cur.Reset()
		content = false
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	for _, l := range bytes.SplitAfter(data, []byte("\n")) {
		trimmed := bytes.TrimRight(l, " \t\r\n")
		if isSeparator(trimmed) {
			flush()
			start = line + 1
			line++
			continue
		}
		if t := bytes.TrimSpace(trimmed); len(t) > 0 && t[0] != '#' {
			content = true
		}
		cur.Write(l)
		line++
	}
	flush()
	return docs
}

// isSeparator reports whether line (without its end) starts a new YAML
// document: "---", optionally followed by a comment.
func isSeparator(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("---")) {
		return false
	}
	rest := bytes.TrimSpace(line[3:])
	return len(rest) == 0 || rest[0] == '#'
}

// header holds the keys that tell the form and kind of a document.
type header struct {
	Type       json.RawMessage `json:"type"`
	APIVersion json.RawMessage `json:"apiVersion"`
	Kind       json.RawMessage `json:"kind"`
}

// decodeDocument decodes and validates one document.
func decodeDocument(doc document, opts DecodeOptions) (Object, error) {
	js, err := yamlToJSON(doc)
	if err != nil {
		return Object{}, err
	}
	if !isObject(js) {
		return Object{}, &FieldError{Message: "a document must be a YAML mapping or a JSON object"}
	}
	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		return Object{}, jsonFieldError(err)
	}
	typ, err := rawString("type", h.Type)
	if err != nil {
		return Object{}, err
	}
	apiVersion, err := rawString("apiVersion", h.APIVersion)
	if err != nil {
		return Object{}, err
	}
	kind, err := rawString("kind", h.Kind)
	if err != nil {
		return Object{}, err
	}
	if apiVersion != "" || kind != "" {
		return decodeKubernetes(js, apiVersion, kind, typ, opts)
	}
	switch typ {
	case typeSecret, typeGlobalSecret:
		return decodeUniversalSecret(js, typ == typeGlobalSecret, opts)
	case typeMesh:
		return decodeUniversalMesh(js)
	case "":
		return Object{}, &FieldError{Field: "type", Message: msgEmpty + `: expected "Secret", "GlobalSecret" or "Mesh", or a Kubernetes apiVersion and kind`}
	default:
		return Object{}, &FieldError{Field: "type", Message: fmt.Sprintf("unsupported resource type %q: expected \"Secret\", \"GlobalSecret\" or \"Mesh\"", typ)}
	}
}

// yamlToJSON converts one YAML document to JSON, rejecting duplicate keys
// and content the YAML parser would silently drop after the document (after
// a "..." line, or a second flow mapping).
func yamlToJSON(doc document) ([]byte, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(doc.text))
	var node yamlv3.Node
	if err := dec.Decode(&node); err != nil {
		return nil, invalidYAML(err, doc.line)
	}
	if err := dec.Decode(&node); !errors.Is(err, io.EOF) {
		msg := "unexpected content after the document: put \"---\" alone on a line between documents"
		if err != nil {
			msg += " (" + shiftLines(err.Error(), doc.line) + ")"
		}
		return nil, &FieldError{Message: "invalid YAML: " + msg}
	}
	js, err := yaml.YAMLToJSONStrict(doc.text)
	if err != nil {
		return nil, invalidYAML(err, doc.line)
	}
	return js, nil
}

// invalidYAML turns a YAML parser error into a one-line FieldError whose
// line numbers count from the start of the file.
func invalidYAML(err error, offset int) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	msg = strings.Join(strings.Fields(msg), " ")
	return &FieldError{Message: "invalid YAML: " + shiftLines(msg, offset)}
}

// shiftLines adds offset to every "line N" of a YAML parser message.
func shiftLines(msg string, offset int) string {
	if offset == 0 {
		return msg
	}
	const word = "line "
	var b strings.Builder
	for {
		i := strings.Index(msg, word)
		if i < 0 {
			break
		}
		i += len(word)
		j := i
		for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' {
			j++
		}
		b.WriteString(msg[:i])
		if n, err := strconv.Atoi(msg[i:j]); err == nil {
			b.WriteString(strconv.Itoa(n + offset))
		} else {
			b.WriteString(msg[i:j])
		}
		msg = msg[j:]
	}
	b.WriteString(msg)
	return b.String()
}

// rawString decodes an optional string-valued key.
func rawString(field string, raw json.RawMessage) (string, error) {
	if isNullOrEmpty(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", &FieldError{Field: field, Message: "must be a string"}
	}
	return s, nil
}

// universalSecret is the Universal form of a Secret or GlobalSecret.
type universalSecret struct {
	Type string  `json:"type"`
	Name string  `json:"name"`
	Mesh *string `json:"mesh"`
	Data *string `json:"data"`
	printedMeta
}

// printedMeta is what Kuma and meshsds write when they print a resource,
// and kumactl sends back when it applies one; it is accepted and ignored:
// the times, the labels, and the KRI (Kuma's resource identifier, which
// kumactl 2.14 computes and sends with every Mesh).
type printedMeta struct {
	CreationTime     json.RawMessage   `json:"creationTime"`
	ModificationTime json.RawMessage   `json:"modificationTime"`
	Labels           map[string]string `json:"labels"`
	KRI              json.RawMessage   `json:"kri"`
}

// decodeUniversalSecret decodes "type: Secret" and "type: GlobalSecret".
func decodeUniversalSecret(js []byte, global bool, opts DecodeOptions) (Object, error) {
	var u universalSecret
	if err := decodeStrict(js, &u); err != nil {
		return Object{}, err
	}
	s := &Secret{Name: u.Name, Global: global}
	if u.Mesh != nil {
		s.Mesh = *u.Mesh
	}
	if s.Mesh == "" && !global {
		s.Mesh = DefaultMesh
	}
	var badBase64 bool
	if u.Data != nil {
		s.Data, badBase64 = decodeBase64(*u.Data)
	}
	if err := secretErrors(s, opts, badBase64, func(f string) string { return f }); err != nil {
		return Object{}, err
	}
	return Object{Secret: s}, nil
}

// decodeBase64 decodes a Secret payload, reporting whether it was invalid.
func decodeBase64(s string) ([]byte, bool) {
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, true
	}
	return data, false
}

// secretErrors validates s, reporting an invalid base64 payload instead of
// an empty one, with each field renamed by field.
func secretErrors(s *Secret, opts DecodeOptions, badBase64 bool, field func(string) string) error {
	var verr ValidationError
	err := s.Validate(opts.MaxSecretSize)
	var ve *ValidationError
	if errors.As(err, &ve) {
		for _, c := range ve.Causes {
			if c.Field == "data" && badBase64 {
				continue
			}
			verr.Add(field(c.Field), c.Message)
		}
	}
	if badBase64 {
		verr.Add(field("data"), msgInvalidBase64)
	}
	return verr.ErrOrNil()
}

// meshSpec is the body of a Mesh: the Universal form without type and name,
// and the spec of the Kubernetes custom resource.
type meshSpec struct {
	MTLS *mtlsSpec `json:"mtls"`
	kumaOnlyMesh
}

// kumaOnlyMesh lists the sections of a Kuma Mesh that configure Kuma's other
// features. They are accepted, so that a Mesh written for Kuma applies
// unchanged, and ignored; any other unknown key is still an error.
type kumaOnlyMesh struct {
	Logging                     json.RawMessage `json:"logging"`
	Metrics                     json.RawMessage `json:"metrics"`
	Tracing                     json.RawMessage `json:"tracing"`
	Routing                     json.RawMessage `json:"routing"`
	Networking                  json.RawMessage `json:"networking"`
	Constraints                 json.RawMessage `json:"constraints"`
	MeshServices                json.RawMessage `json:"meshServices"`
	SkipCreatingInitialPolicies json.RawMessage `json:"skipCreatingInitialPolicies"`
}

// mtlsSpec is the decoding form of MTLS.
type mtlsSpec struct {
	EnabledBackend string        `json:"enabledBackend"`
	Backends       []backendSpec `json:"backends"`
}

// backendSpec is the decoding form of Backend, with "conf" as an alias of
// "config".
type backendSpec struct {
	Name   string          `json:"name"`
	Type   string          `json:"type"`
	DPCert *dpCertSpec     `json:"dpCert"`
	Config json.RawMessage `json:"config"`
	Conf   json.RawMessage `json:"conf"`
	// Kuma's backend keys for its own features, accepted and ignored.
	Mode      json.RawMessage `json:"mode"`
	RootChain json.RawMessage `json:"rootChain"`
}

// dpCertSpec is the decoding form of DPCert; Kuma's requestTimeout (how long
// its data plane waits for a certificate) is accepted and ignored.
type dpCertSpec struct {
	Rotation       *Rotation       `json:"rotation"`
	RequestTimeout json.RawMessage `json:"requestTimeout"`
}

// universalMesh is the Universal form of a Mesh.
type universalMesh struct {
	Type string `json:"type"`
	Name string `json:"name"`
	meshSpec
	printedMeta
	// Status is what the admin API says is served for the mesh
	// (meshsds get mesh -o yaml prints it); it is not part of the Mesh.
	Status json.RawMessage `json:"status"`
}

// decodeUniversalMesh decodes "type: Mesh".
func decodeUniversalMesh(js []byte) (Object, error) {
	var u universalMesh
	if err := decodeStrict(js, &u); err != nil {
		return Object{}, err
	}
	return buildMesh(u.Name, &u.meshSpec)
}

// buildMesh turns a decoded body into a validated Mesh.
func buildMesh(name string, spec *meshSpec) (Object, error) {
	m := &Mesh{Name: name}
	var verr ValidationError
	if spec.MTLS != nil {
		m.MTLS = &MTLS{EnabledBackend: spec.MTLS.EnabledBackend}
		for i, b := range spec.MTLS.Backends {
			cfg := b.Config
			if !isNullOrEmpty(b.Conf) {
				if !isNullOrEmpty(b.Config) {
					verr.Add(indexField("mtls.backends", i), `"config" and "conf" are aliases: set only one`)
				}
				cfg = b.Conf
			}
			var dp *DPCert
			if b.DPCert != nil {
				dp = &DPCert{Rotation: b.DPCert.Rotation}
			}
			m.MTLS.Backends = append(m.MTLS.Backends, Backend{Name: b.Name, Type: b.Type, DPCert: dp, Config: cfg})
		}
	}
	verr.AddError("", m.Validate())
	if err := verr.ErrOrNil(); err != nil {
		return Object{}, err
	}
	// Backends' configs are kept as written and read again at every
	// resolution, where their keys' case is not checked (meshsds read them
	// so before it checked); here, as they come in, it is.
	var backends []Backend
	if m.MTLS != nil {
		backends = m.MTLS.Backends
	}
	for i, b := range backends {
		var cfg any
		switch b.Type {
		case BackendProvided:
			cfg = &ProvidedConfig{}
		case BackendBuiltin:
			cfg = &BuiltinConfig{}
		}
		if cfg == nil || isNullOrEmpty(b.Config) {
			continue
		}
		if err := decodeStrict(b.Config, cfg); err != nil {
			verr.AddError(indexField("mtls.backends", i)+".config", err)
			return Object{}, &verr
		}
	}
	return Object{Mesh: m}, nil
}

// k8sMetadata is the part of Kubernetes object metadata meshsds reads;
// everything else (uid, resourceVersion, annotations, ...) is ignored.
type k8sMetadata struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

// k8sSecret is a Kubernetes v1/Secret.
type k8sSecret struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   json.RawMessage   `json:"metadata"`
	Type       string            `json:"type"`
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	Immutable  *bool             `json:"immutable"`
}

// k8sMesh is a kuma.io/v1alpha1 Mesh custom resource.
type k8sMesh struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   json.RawMessage `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// decodeKubernetes decodes the Kubernetes forms.
func decodeKubernetes(js []byte, apiVersion, kind, typ string, opts DecodeOptions) (Object, error) {
	switch {
	case apiVersion == k8sCoreAPIVersion && kind == "Secret":
		return decodeK8sSecret(js, typ, opts)
	case apiVersion == k8sKumaAPIVersion && kind == "Mesh":
		return decodeK8sMesh(js)
	default:
		return Object{}, &FieldError{Field: "kind", Message: fmt.Sprintf("unsupported kind %q of apiVersion %q: expected a v1 Secret or a %s Mesh", kind, apiVersion, k8sKumaAPIVersion)}
	}
}

// decodeMetadata decodes metadata leniently.
func decodeMetadata(raw json.RawMessage) (k8sMetadata, error) {
	var md k8sMetadata
	if isNullOrEmpty(raw) {
		return md, nil
	}
	var generic any
	err := json.Unmarshal(raw, &md)
	if err == nil {
		// Other keys are Kubernetes' and ignored, but "Labels" is not
		// "labels": the API server would drop it, so must meshsds.
		_ = json.Unmarshal(raw, &generic)
		err = checkKeyCase(generic, reflect.TypeOf(md), "")
	}
	if err != nil {
		var verr ValidationError
		var fe *FieldError
		if !errors.As(err, &fe) {
			fe = jsonFieldError(err)
		}
		verr.AddError("metadata", fe)
		return md, &verr
	}
	return md, nil
}

// decodeK8sSecret decodes a v1/Secret of a Kuma secret type.
func decodeK8sSecret(js []byte, typ string, opts DecodeOptions) (Object, error) {
	var k k8sSecret
	if err := decodeStrict(js, &k); err != nil {
		return Object{}, err
	}
	md, err := decodeMetadata(k.Metadata)
	if err != nil {
		return Object{}, err
	}
	s := &Secret{Name: md.Name}
	var verr ValidationError
	switch typ {
	case k8sSecretType:
		s.Mesh = md.Labels[k8sMeshLabel]
		if s.Mesh == "" {
			s.Mesh = DefaultMesh
		}
	case k8sGlobalType:
		s.Global = true
	default:
		return Object{}, &FieldError{Field: "type", Message: fmt.Sprintf("unsupported Secret type %q: expected %q or %q", typ, k8sSecretType, k8sGlobalType)}
	}
	for key := range k.Data {
		if key != k8sSecretDataKey {
			verr.Add("data", fmt.Sprintf("unexpected key %q: only %q is allowed", key, k8sSecretDataKey))
		}
	}
	for key := range k.StringData {
		if key != k8sSecretDataKey {
			verr.Add("stringData", fmt.Sprintf("unexpected key %q: only %q is allowed", key, k8sSecretDataKey))
		}
	}
	encoded, hasData := k.Data[k8sSecretDataKey]
	plain, hasString := k.StringData[k8sSecretDataKey]
	var badBase64 bool
	switch {
	case hasData && hasString:
		verr.Add("data.value", "set only one of data.value and stringData.value")
		return Object{}, &verr
	case hasString:
		s.Data = []byte(plain)
	case hasData:
		s.Data, badBase64 = decodeBase64(encoded)
	}
	verr.AddError("", secretErrors(s, opts, badBase64, k8sSecretField))
	if err := verr.ErrOrNil(); err != nil {
		return Object{}, err
	}
	return Object{Secret: s}, nil
}

// k8sSecretField maps a Secret field to where the Kubernetes form holds it.
func k8sSecretField(field string) string {
	switch field {
	case "name":
		return "metadata.name"
	case "mesh":
		return `metadata.labels["` + k8sMeshLabel + `"]`
	case "data":
		return "data.value"
	default:
		return field
	}
}

// decodeK8sMesh decodes a kuma.io/v1alpha1 Mesh.
func decodeK8sMesh(js []byte) (Object, error) {
	var k k8sMesh
	if err := decodeStrict(js, &k); err != nil {
		return Object{}, err
	}
	md, err := decodeMetadata(k.Metadata)
	if err != nil {
		return Object{}, err
	}
	var spec meshSpec
	if !isNullOrEmpty(k.Spec) {
		if err := decodeStrict(k.Spec, &spec); err != nil {
			var verr ValidationError
			verr.AddError("spec", err)
			return Object{}, &verr
		}
	}
	obj, err := buildMesh(md.Name, &spec)
	if err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			out := &ValidationError{}
			for _, c := range ve.Causes {
				f := "metadata.name"
				if c.Field != "name" {
					f = JoinField("spec", c.Field)
				}
				out.Add(f, c.Message)
			}
			return Object{}, out
		}
		return Object{}, err
	}
	return obj, nil
}

// decodeStrict decodes one JSON value into v, rejecting unknown keys (and
// keys that match a field only in another case) and trailing data, and
// turns decoding errors into field errors. It is for manifests as they
// come in; what was stored already is read again with decodeKnown.
func decodeStrict(data []byte, v any) error {
	if err := decodeKnown(data, v); err != nil {
		return err
	}
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		return jsonFieldError(err)
	}
	return checkKeyCase(generic, reflect.TypeOf(v), "")
}

// decodeKnown is decodeStrict without the check of the keys' case, as
// meshsds read manifests before it checked: a backend's config, kept as
// written, must resolve after an upgrade as it did before.
func decodeKnown(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonFieldError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &FieldError{Message: "unexpected data after the object"}
	}
	return nil
}

// checkKeyCase refuses keys that encoding/json matched to a field only
// case-insensitively ("TYPE" for "type"): its unknown-field check ignores
// case, and a manifest whose keys are spelled otherwise than documented
// must not be half understood. val is the decoded JSON of a value of type
// t; types with their own UnmarshalJSON, interfaces and raw messages are
// not looked into.
func checkKeyCase(val any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := val.(map[string]any)
		if !ok {
			return nil
		}
		fields := jsonFields(t)
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			v := obj[key]
			ft, ok := fields[key]
			if !ok {
				for _, name := range slices.Sorted(maps.Keys(fields)) {
					if strings.EqualFold(name, key) {
						return &FieldError{Field: path, Message: fmt.Sprintf("unknown field %q: keys are case-sensitive, did you mean %q?", key, name)}
					}
				}
				continue // not a field at all: the decoder refused it already
			}
			if err := checkKeyCase(v, ft, JoinField(path, key)); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		arr, ok := val.([]any)
		if !ok {
			return nil
		}
		for i, v := range arr {
			if err := checkKeyCase(v, t.Elem(), JoinField(path, fmt.Sprintf("[%d]", i))); err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, ok := val.(map[string]any)
		if !ok {
			return nil
		}
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			if err := checkKeyCase(obj[key], t.Elem(), JoinField(path, key)); err != nil {
				return err
			}
		}
	}
	return nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// jsonFields maps the JSON names of struct type t's fields, embedded
// structs' included, to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			for et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				maps.Copy(out, jsonFields(et))
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// jsonFieldError turns an encoding/json error into a FieldError without Go
// type names.
func jsonFieldError(err error) *FieldError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &FieldError{Field: te.Field, Message: fmt.Sprintf("must be %s, got %s", jsonTypeName(te.Type), te.Value)}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &FieldError{Message: "invalid JSON: " + strings.TrimPrefix(se.Error(), "json: ")}
	}
	return &FieldError{Message: strings.TrimPrefix(err.Error(), "json: ")}
}

// jsonTypeName names a Go type the way a manifest author thinks of it.
func jsonTypeName(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a value"
		}
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonTypeName(t.Elem())
	default:
		return "a value"
	}
}
