// Package kube is the Kubernetes secret source (meshsds serve --kubernetes):
// it watches, through informers, the Kuma Secrets of the control plane's
// namespace and the cluster-scoped kuma.io/v1alpha1 Mesh custom resources,
// and publishes a complete view of them after every change. It also keeps
// meshsds' own global secrets (the dataplane token signing key) as Secrets of
// type system.kuma.io/global-secret, and serves a validating admission
// webhook (Webhook) that refuses bad objects before they are stored.
//
// Only Secrets of the two Kuma types are ever listed or cached: each type
// has its own informer with a field selector on "type" (a field selector
// cannot express "one of"). A Secret's mesh is its kuma.io/mesh label
// ("default" when missing) and its payload is data.value.
//
// A bad object (a Secret without data.value, a Mesh that fails validation)
// keeps its last good version in the view; the failure is logged, counted in
// meshsds_source_sync_errors_total and reported as a Warning Event on the
// object, once per resourceVersion. During an API server outage the
// informers keep their caches, so the last known view keeps being served;
// watch expiry (410 Gone) and reconnects are handled by the informers, which
// relist, and the view is rebuilt from their caches, so nothing is lost or
// duplicated.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
)

// Kubernetes names of the Kuma resources.
const (
	// SecretType is the type of a Kuma Secret that belongs to a mesh.
	SecretType corev1.SecretType = "system.kuma.io/secret"
	// GlobalSecretType is the type of a Secret that belongs to no mesh,
	// used for meshsds' own state such as the token signing key.
	GlobalSecretType corev1.SecretType = "system.kuma.io/global-secret"
	// MeshLabel names a Secret's mesh; a Secret without it is in mesh
	// "default".
	MeshLabel = "kuma.io/mesh"
	// DataKey is the key of a Secret's payload under data.
	DataKey = "value"
	// DefaultNamespace is the control plane's namespace when none is given.
	DefaultNamespace = "kuma-system"
)

// MeshGVR is the resource of the Mesh custom resource.
var MeshGVR = schema.GroupVersionResource{Group: "kuma.io", Version: "v1alpha1", Resource: "meshes"}

// Event reasons, for `kubectl get events --field-selector reason=...`.
const (
	ReasonInvalidSecret = "InvalidSecret"
	ReasonInvalidMesh   = "InvalidMesh"
)

// DefaultDebounce is how long a burst of changes must stay quiet before the
// view is rebuilt and published, as in the file source.
const DefaultDebounce = 100 * time.Millisecond

// EventRecorder records Kubernetes Events about objects. The Source calls it
// from its own goroutine; an implementation must not block for long (the
// default one, from client-go's record package, queues and sends
// asynchronously). record.EventRecorder implements it.
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Config configures a Source.
type Config struct {
	// Client reads Secrets and writes Events and global secrets. Required.
	Client kubernetes.Interface
	// Dynamic reads the Mesh custom resources. Required.
	Dynamic dynamic.Interface
	// Namespace is the control plane's namespace, the only one whose
	// Secrets are read. It defaults to DefaultNamespace.
	Namespace string
	// Name identifies the source in logs, metrics and conflict reports. It
	// defaults to "kubernetes:" followed by Namespace.
	Name string
	// Debounce is how long a burst of changes must stay quiet before the
	// view is published; a burst is never delayed by more than ten times
	// Debounce. It defaults to DefaultDebounce.
	Debounce time.Duration
	// MaxSecretSize is the largest Secret payload accepted. Zero means
	// meshconfig.DefaultMaxSecretSize.
	MaxSecretSize int
	// Recorder receives the Events about bad objects. Nil means Events are
	// written to the API server through Client by client-go's recorder,
	// started by Run, with component "meshsds".
	Recorder EventRecorder
	// Leading reports whether this replica is the leader, which alone
	// writes Events among replicas (so that a bad object gets one Event,
	// not one per replica); nil means always.
	Leading func() bool
	// Logger receives the source's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the source's metrics. Nil disables them.
	Registerer prometheus.Registerer
}

// Source is the Kubernetes secret source. Create it with New and start it
// with Run.
type Source struct {
	client        kubernetes.Interface
	dynamic       dynamic.Interface
	namespace     string
	name          string
	debounce      time.Duration
	maxSecretSize int
	recorder      EventRecorder
	leading       func() bool
	log           *slog.Logger
	metrics       *secretsource.Metrics
	now           func() time.Time

	running atomic.Bool
	// current is the last published view, nil before the first sync.
	current atomic.Pointer[meshconfig.Resources]

	// informers are set while Run runs; tests look into their stores.
	informersMu sync.Mutex
	informers   []cache.SharedIndexInformer
}

// New validates cfg, applies its defaults and returns a Source that is not
// yet running.
func New(cfg Config) (*Source, error) {
	if cfg.Client == nil || cfg.Dynamic == nil {
		return nil, errors.New("kubernetes source: a client and a dynamic client are required")
	}
	if cfg.Debounce < 0 {
		return nil, fmt.Errorf("kubernetes source: debounce must not be negative, got %s", cfg.Debounce)
	}
	if cfg.MaxSecretSize < 0 {
		return nil, fmt.Errorf("kubernetes source: max secret size must not be negative, got %d", cfg.MaxSecretSize)
	}
	s := &Source{
		client:        cfg.Client,
		dynamic:       cfg.Dynamic,
		namespace:     cfg.Namespace,
		name:          cfg.Name,
		debounce:      cfg.Debounce,
		maxSecretSize: cfg.MaxSecretSize,
		recorder:      cfg.Recorder,
		leading:       cfg.Leading,
		log:           cfg.Logger,
		now:           time.Now,
	}
	if s.namespace == "" {
		s.namespace = DefaultNamespace
	}
	if fe := meshconfig.ValidateName("namespace", s.namespace); fe != nil {
		return nil, fmt.Errorf("kubernetes source: %w", fe)
	}
	if s.name == "" {
		s.name = "kubernetes:" + s.namespace
	}
	if s.debounce == 0 {
		s.debounce = DefaultDebounce
	}
	if s.maxSecretSize == 0 {
		s.maxSecretSize = meshconfig.DefaultMaxSecretSize
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With(secretsource.LogSource, s.name)
	var err error
	if s.metrics, err = secretsource.NewMetrics(cfg.Registerer, s.name); err != nil {
		return nil, fmt.Errorf("kubernetes source %s: %w", s.name, err)
	}
	return s, nil
}

// Name returns the source's name as used in logs and metrics.
func (s *Source) Name() string { return s.name }

// Cluster returns the backend through which replicas sharing this API
// server share their state (cluster.go).
func (s *Source) Cluster() *Cluster { return NewCluster(s.client, s.namespace, s.log) }

// Namespace returns the control plane's namespace the source reads.
func (s *Source) Namespace() string { return s.namespace }

// Current returns the last view Run published and true, or false before the
// first complete view (while the informers have not synced). The view must
// not be modified. It is safe for concurrent use.
func (s *Source) Current() (meshconfig.Resources, bool) {
	v := s.current.Load()
	if v == nil {
		return meshconfig.Resources{}, false
	}
	return *v, true
}

// Run starts the informers, waits until they have synced, calls publish with
// the complete view, then calls publish again after every change that alters
// the view (debounced), until ctx ends. Until the first call the source is
// not synced; if the Mesh custom resource definition is missing or access is
// denied, the failures are logged and counted and Run keeps waiting.
//
// publish is called from Run's goroutine only, never concurrently, and Run
// waits for it to return. The Resources passed are fresh maps each time and
// never modified afterwards; the *Mesh and *Secret values may be shared
// between successive views and must not be modified by anyone.
//
// Run returns nil when ctx ends, and an error only when it is already
// running.
func (s *Source) Run(ctx context.Context, publish func(meshconfig.Resources)) error {
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("kubernetes source %s: already running", s.name)
	}
	defer s.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Deferred in this order so that cancel runs first and Run returns only
	// once every goroutine it started has stopped.
	defer wg.Wait()
	defer cancel()

	recorder := s.recorder
	if recorder == nil {
		b := record.NewBroadcaster(record.WithContext(ctx))
		defer b.Shutdown()
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.client.CoreV1().Events("")})
		recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "meshsds"})
	}

	kick := make(chan struct{}, 1)
	onChange := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { onChange() },
		UpdateFunc: func(any, any) { onChange() },
		DeleteFunc: func(any) { onChange() },
	}
	secrets := s.secretInformer(SecretType)
	globals := s.secretInformer(GlobalSecretType)
	meshes := dynamicinformer.NewFilteredDynamicInformer(s.dynamic, MeshGVR, metav1.NamespaceAll, 0, cache.Indexers{}, nil).Informer()
	infs := []struct {
		inf  cache.SharedIndexInformer
		what string
	}{{secrets, "secrets of type " + string(SecretType)}, {globals, "secrets of type " + string(GlobalSecretType)}, {meshes, "meshes"}}
	synced := make([]cache.InformerSynced, 0, len(infs))
	for _, i := range infs {
		if _, err := i.inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("kubernetes source %s: %w", s.name, err)
		}
		if err := i.inf.SetWatchErrorHandlerWithContext(s.watchErrorHandler(i.what)); err != nil {
			return fmt.Errorf("kubernetes source %s: %w", s.name, err)
		}
		synced = append(synced, i.inf.HasSynced)
	}
	s.informersMu.Lock()
	s.informers = []cache.SharedIndexInformer{secrets, globals, meshes}
	s.informersMu.Unlock()
	for _, i := range infs {
		wg.Go(func() { i.inf.RunWithContext(ctx) })
	}

	s.log.Info("waiting for the informers to sync", "namespace", s.namespace)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended
	}

	st := newState(s, recorder)
	stores := func() viewInput {
		return viewInput{secrets: secrets.GetStore().List(), globals: globals.GetStore().List(), meshes: meshes.GetStore().List()}
	}
	first := st.build(stores())
	s.log.Info("informers synced", "meshes", len(first.Meshes), "secrets", len(first.Secrets))
	s.current.Store(&first)
	publish(first)
	last := first

	debounce := secretsource.NewDebouncer(s.debounce, nil)
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			debounce.Event()
		case <-debounce.C():
			debounce.Fired()
			view := st.build(stores())
			if last.Equal(view) {
				continue
			}
			last = view
			s.current.Store(&view)
			s.log.Debug("publishing", "meshes", len(view.Meshes), "secrets", len(view.Secrets))
			publish(view)
		}
	}
}

// secretInformer returns an informer on the Secrets of typ in the namespace:
// the field selector makes the API server send no other Secret.
func (s *Source) secretInformer(typ corev1.SecretType) cache.SharedIndexInformer {
	selector := fields.OneTermEqualSelector("type", string(typ)).String()
	return coreinformers.NewFilteredSecretInformer(s.client, s.namespace, 0, cache.Indexers{}, func(o *metav1.ListOptions) {
		o.FieldSelector = selector
	})
}

// watchErrorHandler logs and counts a failed list or watch. The informer
// retries with backoff on its own; a watch that expired (410 Gone) is
// followed by a relist, which the view absorbs.
func (s *Source) watchErrorHandler(what string) cache.WatchErrorHandlerWithContext {
	return func(_ context.Context, _ *cache.Reflector, err error) {
		switch {
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			s.log.Info("watch expired; relisting", "resource", what, secretsource.LogErr, err)
			return
		case apierrors.IsNotFound(err) && what == "meshes":
			s.log.Error("cannot list Meshes: is the kuma.io Mesh CustomResourceDefinition installed? (examples/kubernetes/crd.yaml)", secretsource.LogErr, err)
		case apierrors.IsForbidden(err):
			s.log.Error("access denied; check meshsds' RBAC (examples/kubernetes/rbac.yaml)", "resource", what, secretsource.LogErr, err)
		default:
			s.log.Warn("list or watch failed; retrying and serving the last known state", "resource", what, secretsource.LogErr, err)
		}
		s.metrics.SyncErrors.Inc()
	}
}

// GetOrCreateGlobalSecret returns the payload of the global secret name: a
// Secret of type system.kuma.io/global-secret in the source's namespace.
// When it does not exist, it is created with the payload generate returns;
// when another replica creates it first, that replica's payload is read back
// and returned, so that every replica agrees on one value. An existing
// Secret of another type, or without data.value, is an error and is never
// replaced. It does not need Run and is safe for concurrent use.
func (s *Source) GetOrCreateGlobalSecret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	data, _, err := s.getOrCreate(ctx, name, GlobalSecretType, nil, nil, generate)
	return data, err
}

// ProvisionBuiltinCA generates the CA of a builtin backend of mesh as the
// Kuma Secrets meshconfig.BuiltinSecretNames names (label kuma.io/mesh),
// unless they exist. The key is created first (create-if-absent), then a
// certificate for whichever key won, so that replicas racing here end with
// one matching pair. The Secrets are owned by the Mesh, so that Kubernetes'
// garbage collector deletes them with it. The informers bring them into the
// view like any other Secret.
func (s *Source) ProvisionBuiltinCA(ctx context.Context, mesh string, b meshconfig.Backend) error {
	cfg, err := meshconfig.ParseBuiltinConfig(b.Config)
	if err != nil {
		return fmt.Errorf("backend %q: %w", b.Name, err)
	}
	var owners []metav1.OwnerReference
	if m, err := s.dynamic.Resource(MeshGVR).Get(ctx, mesh, metav1.GetOptions{}); err == nil {
		owners = []metav1.OwnerReference{{APIVersion: MeshGVR.GroupVersion().String(), Kind: "Mesh", Name: m.GetName(), UID: m.GetUID()}}
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading Mesh %s: %w", mesh, err)
	}
	labels := map[string]string{MeshLabel: mesh}
	certName, keyName := meshconfig.BuiltinSecretNames(mesh, b.Name)
	key, keyCreated, err := s.getOrCreate(ctx, keyName, SecretType, labels, owners, func() ([]byte, error) {
		return meshconfig.GenerateBuiltinKey(cfg)
	})
	if err != nil {
		return err
	}
	_, certCreated, err := s.getOrCreate(ctx, certName, SecretType, labels, owners, func() ([]byte, error) {
		return meshconfig.GenerateBuiltinCert(mesh, cfg, key, s.now())
	})
	if err != nil {
		return err
	}
	if keyCreated || certCreated {
		s.log.Info("generated the builtin CA", secretsource.LogMesh, mesh, secretsource.LogBackend, b.Name, "cert_secret", certName, "key_secret", keyName)
	}
	return nil
}

// getOrCreate returns data.value of the Secret name of type typ in the
// namespace, creating it with generate's payload when it does not exist
// (created is then true) and reading back the winner when another writer
// created it first.
func (s *Source) getOrCreate(ctx context.Context, name string, typ corev1.SecretType, labels map[string]string, owners []metav1.OwnerReference, generate func() ([]byte, error)) (data []byte, created bool, err error) {
	api := s.client.CoreV1().Secrets(s.namespace)
	got, err := api.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		data, err := payload(got, typ)
		return data, false, err
	}
	if !apierrors.IsNotFound(err) {
		return nil, false, fmt.Errorf("reading secret %s/%s: %w", s.namespace, name, err)
	}
	data, err = generate()
	if err != nil {
		return nil, false, fmt.Errorf("generating secret %s/%s: %w", s.namespace, name, err)
	}
	l := map[string]string{"app.kubernetes.io/managed-by": "meshsds"}
	maps.Copy(l, labels)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.namespace, Labels: l, OwnerReferences: owners},
		Type:       typ,
		Data:       map[string][]byte{DataKey: data},
	}
	if _, err := api.Create(ctx, sec, metav1.CreateOptions{}); err == nil {
		s.log.Info("created secret", "name", name, "type", string(typ))
		return data, true, nil
	} else if !apierrors.IsAlreadyExists(err) {
		return nil, false, fmt.Errorf("creating secret %s/%s: %w", s.namespace, name, err)
	}
	got, err = api.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, false, fmt.Errorf("reading secret %s/%s: %w", s.namespace, name, err)
	}
	data, err = payload(got, typ)
	return data, false, err
}

// payload returns data.value of sec, which must be of type typ.
func payload(sec *corev1.Secret, typ corev1.SecretType) ([]byte, error) {
	if sec.Type != typ {
		return nil, fmt.Errorf("secret %s/%s has type %q, want %q; it is not replaced", sec.Namespace, sec.Name, sec.Type, typ)
	}
	data := sec.Data[DataKey]
	if len(data) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no data.%s; it is not replaced", sec.Namespace, sec.Name, DataKey)
	}
	return data, nil
}
