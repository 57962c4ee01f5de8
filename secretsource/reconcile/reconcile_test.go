package reconcile

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource publishes what the test hands it.
type fakeSource struct {
	name string
	in   chan meshconfig.Resources
}

func (f *fakeSource) Name() string { return f.name }

func (f *fakeSource) Run(ctx context.Context, publish func(meshconfig.Resources)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-f.in:
			publish(r)
		}
	}
}

// recordingSink keeps every update.
type recordingSink struct {
	mu      sync.Mutex
	updates []map[string]*meshconfig.ResolvedMesh
	ready   bool
}

func (s *recordingSink) Update(m map[string]*meshconfig.ResolvedMesh, _ time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates = append(s.updates, m)
}

func (s *recordingSink) SetReady() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = true
}

func (s *recordingSink) last() (map[string]*meshconfig.ResolvedMesh, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.updates) == 0 {
		return nil, 0, s.ready
	}
	return s.updates[len(s.updates)-1], len(s.updates), s.ready
}

func meshWithCA(name string) *meshconfig.Mesh {
	return &meshconfig.Mesh{Name: name, MTLS: &meshconfig.MTLS{Backends: []meshconfig.Backend{{
		Name: "ca-1", Type: meshconfig.BackendProvided,
		Config: []byte(`{"cert":{"secret":"ca-cert"},"key":{"secret":"ca-key"}}`),
	}}}}
}

func view(t *testing.T, meshes ...string) meshconfig.Resources {
	t.Helper()
	r := meshconfig.Resources{Meshes: map[string]*meshconfig.Mesh{}, Secrets: map[meshconfig.SecretKey]*meshconfig.Secret{}}
	for _, m := range meshes {
		ca := pkitest.NewRootCA(t, m)
		r.Meshes[m] = meshWithCA(m)
		r.Secrets[meshconfig.SecretKey{Mesh: m, Name: "ca-cert"}] = &meshconfig.Secret{Mesh: m, Name: "ca-cert", Data: ca.CertPEM}
		r.Secrets[meshconfig.SecretKey{Mesh: m, Name: "ca-key"}] = &meshconfig.Secret{Mesh: m, Name: "ca-key", Data: ca.KeyPEM}
	}
	return r
}

func TestNothingIsServedUntilEverySourceSynced(t *testing.T) {
	a := &fakeSource{name: "a", in: make(chan meshconfig.Resources)}
	b := &fakeSource{name: "b", in: make(chan meshconfig.Resources)}
	sink := &recordingSink{}
	reg := prometheus.NewRegistry()
	r, err := New(Config{Sources: []secretsource.Source{a, b}, Sink: sink, Registerer: reg})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	a.in <- view(t, "one")
	// b has not synced: the loop must not hand a partial view to the sink.
	require.Eventually(t, func() bool { return len(r.kick) == 0 }, 10*time.Second, time.Millisecond)
	a.in <- view(t, "one")
	require.Eventually(t, func() bool { return len(r.kick) == 0 }, 10*time.Second, time.Millisecond)
	_, n, ready := sink.last()
	require.Zero(t, n)
	require.False(t, ready)
	require.False(t, r.Ready())
	_, synced := r.Current()
	require.False(t, synced, "no merged view before every source synced")

	b.in <- view(t, "two")
	require.Eventually(t, r.Ready, 10*time.Second, 5*time.Millisecond)
	merged, synced := r.Current()
	require.True(t, synced)
	require.Contains(t, merged.Meshes, "one", "the merged view holds every source's resources")
	require.Contains(t, merged.Meshes, "two")
	got, _, ready := sink.last()
	require.True(t, ready)
	require.Contains(t, got, "one")
	require.Contains(t, got, "two")
	require.NotNil(t, got["one"].CA)
	require.NotNil(t, got["two"].CA)
}

func TestBrokenMeshIsReportedAndKeepsLastGood(t *testing.T) {
	src := &fakeSource{name: "files", in: make(chan meshconfig.Resources)}
	sink := &recordingSink{}
	reg := prometheus.NewRegistry()
	r, err := New(Config{Sources: []secretsource.Source{src}, Sink: sink, Registerer: reg})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	good := view(t, "a", "b")
	src.in <- good
	require.Eventually(t, r.Ready, 10*time.Second, 5*time.Millisecond)
	first, n, _ := sink.last()
	goodCA := first["a"].CA

	broken := view(t, "b")
	broken.Meshes["a"] = good.Meshes["a"]
	// a's key no longer matches its certificate.
	broken.Secrets[meshconfig.SecretKey{Mesh: "a", Name: "ca-cert"}] = good.Secrets[meshconfig.SecretKey{Mesh: "a", Name: "ca-cert"}]
	broken.Secrets[meshconfig.SecretKey{Mesh: "a", Name: "ca-key"}] = broken.Secrets[meshconfig.SecretKey{Mesh: "b", Name: "ca-key"}]
	src.in <- broken
	require.Eventually(t, func() bool { _, m, _ := sink.last(); return m > n }, 10*time.Second, 5*time.Millisecond)
	got, _, _ := sink.last()
	require.Error(t, got["a"].Err)
	require.Same(t, goodCA, got["a"].CA, "the broken mesh keeps its last good CA")
	require.NoError(t, got["b"].Err)
	require.InDelta(t, 1, testutil.ToFloat64(r.metrics.failing.WithLabelValues("a")), 0)
	require.InDelta(t, 0, testutil.ToFloat64(r.metrics.failing.WithLabelValues("b")), 0)
	require.InDelta(t, 1, testutil.ToFloat64(r.metrics.errors.WithLabelValues("a")), 0)
}

func TestConflictsAreCounted(t *testing.T) {
	a := &fakeSource{name: "first", in: make(chan meshconfig.Resources)}
	b := &fakeSource{name: "second", in: make(chan meshconfig.Resources)}
	sink := &recordingSink{}
	r, err := New(Config{Sources: []secretsource.Source{a, b}, Sink: sink, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	va, vb := view(t, "m"), view(t, "m")
	a.in <- va
	b.in <- vb
	require.Eventually(t, r.Ready, 10*time.Second, 5*time.Millisecond)
	got, _, _ := sink.last()
	// The first source wins: its CA is served.
	require.Equal(t, va.Secrets[meshconfig.SecretKey{Mesh: "m", Name: "ca-cert"}].Data, got["m"].CA.TrustBundlePEM)
	require.Eventually(t, func() bool { return testutil.ToFloat64(r.metrics.conflicts) == 3 }, 10*time.Second, 5*time.Millisecond)
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	_, err := New(Config{Sink: &recordingSink{}})
	require.ErrorContains(t, err, "no secret source")
	_, err = New(Config{Sources: []secretsource.Source{&fakeSource{}}})
	require.ErrorContains(t, err, "sink")
}

func TestOthersSeesEverySourceButOne(t *testing.T) {
	files := &fakeSource{name: "files", in: make(chan meshconfig.Resources)}
	api := &fakeSource{name: "api", in: make(chan meshconfig.Resources)}
	r, err := New(Config{Sources: []secretsource.Source{files, api}, Sink: &recordingSink{}, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	files.in <- view(t, "from-files")
	api.in <- view(t, "from-api")
	require.Eventually(t, r.Ready, 10*time.Second, 5*time.Millisecond)
	others := r.Others("api")
	_, ok := others.Secret("from-files", "ca-cert")
	require.True(t, ok)
	_, ok = others.Secret("from-api", "ca-cert")
	require.False(t, ok, "the excluded source's own secrets are not others'")
	meshes := others.Meshes()
	require.Len(t, meshes, 1)
	require.Equal(t, "from-files", meshes[0].Name)
}

// recordingProvisioner notes which builtin backends it was asked for.
type recordingProvisioner struct {
	mu    sync.Mutex
	asked []string
}

func (p *recordingProvisioner) ProvisionBuiltinCA(_ context.Context, mesh string, b meshconfig.Backend) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, mesh+"/"+b.Name)
	return nil
}

func TestBuiltinBackendsWithoutSecretsAreProvisioned(t *testing.T) {
	src := &fakeSource{name: "files", in: make(chan meshconfig.Resources)}
	prov := &recordingProvisioner{}
	r, err := New(Config{Sources: []secretsource.Source{src}, Sink: &recordingSink{}, Provisioner: prov, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	v := view(t, "provided")
	v.Meshes["fresh"] = &meshconfig.Mesh{Name: "fresh", MTLS: &meshconfig.MTLS{Backends: []meshconfig.Backend{{Name: "ca-1", Type: meshconfig.BackendBuiltin}}}}
	v.Meshes["done"] = &meshconfig.Mesh{Name: "done", MTLS: &meshconfig.MTLS{Backends: []meshconfig.Backend{{Name: "ca-1", Type: meshconfig.BackendBuiltin}}}}
	cert, key := meshconfig.BuiltinSecretNames("done", "ca-1")
	v.Secrets[meshconfig.SecretKey{Mesh: "done", Name: cert}] = &meshconfig.Secret{Mesh: "done", Name: cert, Data: []byte("c")}
	v.Secrets[meshconfig.SecretKey{Mesh: "done", Name: key}] = &meshconfig.Secret{Mesh: "done", Name: key, Data: []byte("k")}
	src.in <- v
	require.Eventually(t, r.Ready, 10*time.Second, 5*time.Millisecond)
	prov.mu.Lock()
	defer prov.mu.Unlock()
	require.Equal(t, []string{"fresh/ca-1"}, prov.asked)
}

// TestOrphanedBuiltinCAsAreRemoved: the generated CA of a mesh that no
// source holds any more is removed from the store; that of a mesh still
// held, and other Secrets of the gone mesh, stay.
func TestOrphanedBuiltinCAsAreRemoved(t *testing.T) {
	st, err := sqlite.Open(sqlite.Config{Path: filepath.Join(t.TempDir(), "meshsds.db")})
	require.NoError(t, err)
	defer st.Close()
	ctx := t.Context()
	put := func(mesh, name string) store.Key {
		k := store.Key{Kind: store.KindSecret, Mesh: mesh, Name: name}
		_, _, err := st.Put(ctx, store.Record{Key: k, Data: []byte("x")}, 0)
		require.NoError(t, err)
		return k
	}
	keptCert := put("kept", "kept.ca-builtin-cert-ca-1")
	goneCert := put("gone", "gone.ca-builtin-cert-ca-1")
	goneKey := put("gone", "gone.ca-builtin-key-ca-1")
	goneOther := put("gone", "some-secret")

	src := &fakeSource{name: "files", in: make(chan meshconfig.Resources)}
	r, err := New(Config{Sources: []secretsource.Source{src}, Sink: &recordingSink{}, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(runCtx) })
	wg.Go(func() { r.RemoveOrphanedCAs(runCtx, &store.Provisioner{Store: st}, 50*time.Millisecond) })
	defer func() { cancel(); wg.Wait() }()
	src.in <- view(t, "kept")

	exists := func(k store.Key) bool {
		_, err := st.Get(ctx, k)
		return err == nil
	}
	require.Eventually(t, func() bool { return !exists(goneCert) && !exists(goneKey) }, 10*time.Second, 10*time.Millisecond)
	require.True(t, exists(keptCert), "a mesh that exists keeps its CA")
	require.True(t, exists(goneOther), "only generated CAs are removed")
}
