package kube

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
)

// maxEventMessage bounds an Event's message; validation errors listing many
// fields could otherwise exceed what the API server accepts.
const maxEventMessage = 1000

// objectKey identifies an object across rebuilds: Secrets (of either type)
// share one name space in the namespace, Meshes are cluster-scoped.
type objectKey struct {
	kind string // meshconfig.KindSecret or meshconfig.KindMesh
	name string
}

// entry is what the source remembers about one object between rebuilds.
type entry struct {
	// decoded is set once a version was decoded; uid and rv identify it.
	decoded bool
	uid     types.UID
	rv      string
	// good is the last version that decoded, kept while the object is bad.
	good    meshconfig.Object
	hasGood bool
	// errMsg is the current version's error, "" when it is good.
	errMsg string
}

// viewInput is the content of the informers' stores.
type viewInput struct {
	secrets, globals, meshes []any
}

// state builds views from the informers' stores, decoding each object
// version once. It is used by Run's goroutine only.
type state struct {
	src      *Source
	recorder EventRecorder
	entries  map[objectKey]*entry
}

func newState(src *Source, recorder EventRecorder) *state {
	return &state{src: src, recorder: recorder, entries: map[objectKey]*entry{}}
}

// build returns the complete view of in: every object's current version
// when it is good, its last good version when it is bad, and nothing for an
// object that was never good. Objects gone from the stores are forgotten.
func (st *state) build(in viewInput) meshconfig.Resources {
	view := meshconfig.Resources{Meshes: map[string]*meshconfig.Mesh{}, Secrets: map[meshconfig.SecretKey]*meshconfig.Secret{}}
	seen := make(map[objectKey]struct{}, len(in.secrets)+len(in.globals)+len(in.meshes))
	add := func(key objectKey, obj runtime.Object, uid types.UID, rv string, decode func() (meshconfig.Object, error)) {
		seen[key] = struct{}{}
		e := st.entries[key]
		if e == nil {
			e = &entry{}
			st.entries[key] = e
		}
		// An object without a resourceVersion (only from fakes) is decoded
		// every time: there is no telling its versions apart.
		if !e.decoded || rv == "" || e.uid != uid || e.rv != rv {
			e.decoded, e.uid, e.rv = true, uid, rv
			o, err := decode()
			st.record(key, e, obj, o, err)
		}
		if !e.hasGood {
			return
		}
		switch {
		case e.good.Mesh != nil:
			view.Meshes[e.good.Mesh.Name] = e.good.Mesh
		case e.good.Secret != nil:
			sec := e.good.Secret
			view.Secrets[meshconfig.SecretKey{Mesh: sec.Mesh, Name: sec.Name}] = sec
		}
	}
	for _, list := range []struct {
		objs []any
		typ  corev1.SecretType
	}{{in.secrets, SecretType}, {in.globals, GlobalSecretType}} {
		for _, o := range list.objs {
			// The type check guards against a server (or fake) that
			// ignores the informer's field selector.
			sec, ok := o.(*corev1.Secret)
			if !ok || sec.Type != list.typ {
				continue
			}
			add(objectKey{meshconfig.KindSecret, sec.Name}, sec, sec.UID, sec.ResourceVersion, func() (meshconfig.Object, error) {
				return DecodeSecret(sec, st.src.maxSecretSize)
			})
		}
	}
	for _, o := range in.meshes {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		add(objectKey{meshconfig.KindMesh, u.GetName()}, u, u.GetUID(), u.GetResourceVersion(), func() (meshconfig.Object, error) {
			return DecodeMesh(u)
		})
	}
	for key := range st.entries {
		if _, ok := seen[key]; !ok {
			delete(st.entries, key)
		}
	}
	st.src.metrics.LastSync.Set(float64(st.src.now().UnixNano()) / 1e9)
	return view
}

// record stores the outcome of decoding a new version of an object and
// reports a failure: a log line, the error counter and a Warning Event on
// the object, once per version.
func (st *state) record(key objectKey, e *entry, obj runtime.Object, o meshconfig.Object, err error) {
	if err == nil {
		e.good, e.hasGood = o, true
		if e.errMsg != "" {
			st.src.log.Info("object is valid again", "kind", key.kind, "name", key.name, "resource_version", e.rv)
		}
		e.errMsg = ""
		return
	}
	e.errMsg = err.Error()
	st.src.metrics.SyncErrors.Inc()
	consequence := "it is ignored"
	if e.hasGood {
		consequence = "meshsds keeps serving its last good version"
	}
	st.src.log.Warn("invalid object; "+consequence, "kind", key.kind, "name", key.name,
		"resource_version", e.rv, secretsource.LogErr, err)
	reason := ReasonInvalidSecret
	if key.kind == meshconfig.KindMesh {
		reason = ReasonInvalidMesh
	}
	msg := e.errMsg
	if len(msg) > maxEventMessage {
		msg = msg[:maxEventMessage] + "..."
	}
	if st.src.leading == nil || st.src.leading() {
		st.recorder.Eventf(obj, corev1.EventTypeWarning, reason, "%s; %s", msg, consequence)
	}
}

// DecodeSecret decodes and validates a Secret of type SecretType or
// GlobalSecretType with meshconfig's Kubernetes-form rules: payload under
// data.value (no other key), mesh from the kuma.io/mesh label ("default"
// when missing). It returns a *meshconfig.ValidationError (or
// *meshconfig.FieldError) naming the field when the Secret is bad. The
// payload is never part of an error.
func DecodeSecret(sec *corev1.Secret, maxSecretSize int) (meshconfig.Object, error) {
	metadata := map[string]any{"name": sec.Name}
	if len(sec.Labels) > 0 {
		metadata["labels"] = sec.Labels
	}
	doc := map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": string(sec.Type)}
	if sec.Data != nil {
		doc["data"] = sec.Data // []byte values marshal as base64, the wire form
	}
	if sec.StringData != nil { // only in admission requests, never stored
		doc["stringData"] = sec.StringData
	}
	return decodeOne(doc, maxSecretSize)
}

// DecodeMesh decodes and validates a kuma.io/v1alpha1 Mesh custom resource
// with meshconfig's rules. Metadata other than name and labels, and any
// status, are ignored; an unknown key in spec is an error.
func DecodeMesh(u *unstructured.Unstructured) (meshconfig.Object, error) {
	metadata := map[string]any{"name": u.GetName()}
	if l := u.GetLabels(); len(l) > 0 {
		metadata["labels"] = l
	}
	doc := map[string]any{"apiVersion": MeshGVR.GroupVersion().String(), "kind": "Mesh", "metadata": metadata}
	if spec, ok := u.Object["spec"]; ok {
		doc["spec"] = spec
	}
	return decodeOne(doc, 0)
}

// decodeOne runs meshconfig.Decode on one Kubernetes document.
func decodeOne(doc map[string]any, maxSecretSize int) (meshconfig.Object, error) {
	js, err := json.Marshal(doc)
	if err != nil {
		return meshconfig.Object{}, fmt.Errorf("encoding object: %w", err)
	}
	objs, err := meshconfig.Decode(js, meshconfig.DecodeOptions{MaxSecretSize: maxSecretSize})
	if err != nil {
		return meshconfig.Object{}, err
	}
	if len(objs) != 1 {
		return meshconfig.Object{}, fmt.Errorf("decoded %d objects, want 1", len(objs))
	}
	return objs[0], nil
}
