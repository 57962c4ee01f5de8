package file_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/internal/testing/syncbuf"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource/file"
)

// waitFor bounds every wait of these tests.
const waitFor = 10 * time.Second

// recorder collects the views a Source publishes.
type recorder struct {
	mu      sync.Mutex
	views   []meshconfig.Resources
	publish func(meshconfig.Resources) // optional hook, called before recording
}

func (r *recorder) record(v meshconfig.Resources) {
	if r.publish != nil {
		r.publish(v)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.views = append(r.views, v)
}

// last returns the last view and the number of views published so far.
func (r *recorder) last() (meshconfig.Resources, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.views) == 0 {
		return meshconfig.Resources{}, 0
	}
	return r.views[len(r.views)-1], len(r.views)
}

// harness runs one Source on a temporary directory.
type harness struct {
	t    *testing.T
	dir  string
	src  *file.Source
	rec  *recorder
	reg  *prometheus.Registry
	logs *syncbuf.Buffer
}

// setup prepares a harness on a fresh directory; files may be written into
// h.dir before start.
func setup(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, dir: t.TempDir(), rec: &recorder{}, reg: prometheus.NewRegistry(), logs: &syncbuf.Buffer{}}
}

// start creates and runs the Source, stopping it when the test ends and
// checking that Run then returns nil.
func (h *harness) start(cfg file.Config) {
	h.t.Helper()
	cfg.Dir = h.dir
	if cfg.Debounce == 0 {
		cfg.Debounce = 20 * time.Millisecond
	}
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Registerer = h.reg
	src, err := file.New(cfg)
	require.NoError(h.t, err)
	h.src = src

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, h.rec.record) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(h.t, err)
		case <-time.After(waitFor):
			h.t.Fatal("Run did not return after cancellation")
		}
	})
}

// write writes a file below h.dir, creating its directory. The file is
// written to a hidden temporary name and renamed into place, so that no scan
// sees it half-written.
func (h *harness) write(rel string, data []byte) {
	h.t.Helper()
	p := filepath.Join(h.dir, rel)
	require.NoError(h.t, os.MkdirAll(filepath.Dir(p), 0o755))
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".new")
	require.NoError(h.t, os.WriteFile(tmp, data, 0o644))
	require.NoError(h.t, os.Rename(tmp, p))
}

// writeInPlace truncates and rewrites a file, which a scan may observe
// half-way.
func (h *harness) writeInPlace(rel string, data []byte) {
	h.t.Helper()
	require.NoError(h.t, os.WriteFile(filepath.Join(h.dir, rel), data, 0o644))
}

func (h *harness) remove(rel string) {
	h.t.Helper()
	require.NoError(h.t, os.RemoveAll(filepath.Join(h.dir, rel)))
}

// eventually waits until the last published view satisfies cond.
func (h *harness) eventually(msg string, cond func(v meshconfig.Resources) bool) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		v, n := h.rec.last()
		return n > 0 && cond(v)
	}, waitFor, 5*time.Millisecond, msg)
}

// waitSecret waits until the view holds the secret with the given data.
func (h *harness) waitSecret(mesh, name string, want []byte) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("secret %s/%s with the expected data", mesh, name), func(v meshconfig.Resources) bool {
		s, ok := v.Secrets[meshconfig.SecretKey{Mesh: mesh, Name: name}]
		return ok && bytes.Equal(s.Data, want)
	})
}

// waitNoSecret waits until the view lacks the secret.
func (h *harness) waitNoSecret(mesh, name string) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("secret %s/%s gone", mesh, name), func(v meshconfig.Resources) bool {
		_, ok := v.Secrets[meshconfig.SecretKey{Mesh: mesh, Name: name}]
		return !ok
	})
}

// secret returns the data of a secret of the last view.
func (h *harness) secret(mesh, name string) ([]byte, bool) {
	v, _ := h.rec.last()
	s, ok := v.Secrets[meshconfig.SecretKey{Mesh: mesh, Name: name}]
	if !ok {
		return nil, false
	}
	return s.Data, true
}

// metric returns the value of a source metric of h's source, 0 when absent.
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	return metricValue(h.t, h.reg, name, append([]string{"source", h.src.Name()}, labels...)...)
}

func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	want := make(map[string]string)
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := 0
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok {
					if v != lp.GetValue() {
						continue metrics
					}
					got++
				}
			}
			if got != len(want) {
				continue
			}
			return metricNumber(m)
		}
	}
	return 0
}

func metricNumber(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

func (h *harness) syncErrors() float64 {
	return h.metric("meshsds_source_sync_errors_total")
}

// waitSyncErrors waits until the error counter reaches at least n.
func (h *harness) waitSyncErrors(n float64) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.syncErrors() >= n }, waitFor, 5*time.Millisecond,
		"meshsds_source_sync_errors_total to reach %v", n)
}

// pemData returns a PEM block with random content, standing for a
// certificate; a raw secret's bytes are never parsed beyond PEM framing.
func pemData(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 300)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b})
}

// universalSecret returns a Universal Secret document.
func universalSecret(mesh, name string, data []byte) string {
	return fmt.Sprintf("type: Secret\nmesh: %s\nname: %s\ndata: %s\n", mesh, name, base64.StdEncoding.EncodeToString(data))
}

// kubeSecret returns a Kubernetes Secret document.
func kubeSecret(mesh, name string, data []byte) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: kuma-system
  labels:
    kuma.io/mesh: %s
type: system.kuma.io/secret
data:
  value: %s
`, name, mesh, base64.StdEncoding.EncodeToString(data))
}

func docs(d ...string) []byte {
	return []byte(strings.Join(d, "---\n"))
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	require.NoError(t, os.WriteFile(regular, []byte("x"), 0o644))

	tests := []struct {
		name    string
		cfg     file.Config
		wantErr string
	}{
		{name: "no dir", cfg: file.Config{}, wantErr: "dir is required"},
		{name: "missing dir", cfg: file.Config{Dir: filepath.Join(dir, "missing")}, wantErr: "no such file or directory"},
		{name: "not a directory", cfg: file.Config{Dir: regular}, wantErr: "is not a directory"},
		{name: "negative debounce", cfg: file.Config{Dir: dir, Debounce: -1}, wantErr: "debounce must not be negative"},
		{name: "negative rescan interval", cfg: file.Config{Dir: dir, RescanInterval: -1}, wantErr: "rescan interval must not be negative"},
		{name: "negative max secret size", cfg: file.Config{Dir: dir, MaxSecretSize: -1}, wantErr: "max secret size must not be negative"},
		{name: "defaults", cfg: file.Config{Dir: dir}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := file.New(tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "file:"+dir, src.Name())
		})
	}

	src, err := file.New(file.Config{Dir: dir, Name: "operators"})
	require.NoError(t, err)
	require.Equal(t, "operators", src.Name())
}

func TestSharedRegisterer(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := file.New(file.Config{Dir: t.TempDir(), Name: "a", Registerer: reg})
	require.NoError(t, err)
	b, err := file.New(file.Config{Dir: t.TempDir(), Name: "b", Registerer: reg})
	require.NoError(t, err)
	for _, src := range []*file.Source{a, b} {
		n, err := prometheusSeries(reg, "meshsds_source_rescans_total", src.Name())
		require.NoError(t, err)
		require.Equal(t, 3, n, "one rescans_total series per reason for %s", src.Name())
	}
}

func prometheusSeries(g prometheus.Gatherer, name, source string) (int, error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "source" && lp.GetValue() == source {
					n++
				}
			}
		}
	}
	return n, nil
}

func TestRunTwice(t *testing.T) {
	h := setup(t)
	h.start(file.Config{})
	h.eventually("first view", func(meshconfig.Resources) bool { return true })
	err := h.src.Run(context.Background(), func(meshconfig.Resources) {})
	require.ErrorContains(t, err, "already running")
}

func TestEmptyDirPublishes(t *testing.T) {
	h := setup(t)
	h.start(file.Config{})
	h.eventually("an empty first view", func(v meshconfig.Resources) bool {
		return len(v.Meshes) == 0 && len(v.Secrets) == 0 && v.Meshes != nil && v.Secrets != nil
	})
	require.Positive(t, h.metric("meshsds_source_last_sync_timestamp_seconds"))
}

func TestInitialScan(t *testing.T) {
	h := setup(t)
	ca, key, vault := pemData(t), pemData(t), []byte("s3cr3t-from-vault")
	s1, s2, k1 := []byte("one"), []byte("two"), []byte("kube")

	h.write("universal.yaml", docs(
		universalSecret("default", "s1", s1),
		"# a comment-only document\n",
		universalSecret("demo", "s2", s2),
		"type: Mesh\nname: demo\n",
		"type: GlobalSecret\nname: signing-key\ndata: "+base64.StdEncoding.EncodeToString([]byte("global"))+"\n",
	))
	h.write("nested/deeper/kube.yml", docs(
		kubeSecret("demo", "k1", k1),
		"apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: default\nspec: {}\n",
	))
	h.write("mesh.json", []byte(`{"type": "Mesh", "name": "json-mesh"}`))
	h.write("default/ca.crt", ca)
	h.write("default/ca.key", key)
	h.write("demo/vault-token", vault)

	h.start(file.Config{})

	first, n := h.rec.last()
	require.Eventually(t, func() bool { first, n = h.rec.last(); return n > 0 }, waitFor, 5*time.Millisecond)
	require.Equal(t, 1, n, "the initial scan publishes once")

	secrets := make(map[meshconfig.SecretKey]string)
	for k, s := range first.Secrets {
		require.Equal(t, k.Mesh, s.Mesh)
		require.Equal(t, k.Name, s.Name)
		secrets[k] = string(s.Data)
	}
	require.Equal(t, map[meshconfig.SecretKey]string{
		{Mesh: "default", Name: "s1"}:       "one",
		{Mesh: "demo", Name: "s2"}:          "two",
		{Mesh: "", Name: "signing-key"}:     "global",
		{Mesh: "demo", Name: "k1"}:          "kube",
		{Mesh: "default", Name: "ca.crt"}:   string(ca),
		{Mesh: "default", Name: "ca.key"}:   string(key),
		{Mesh: "demo", Name: "vault-token"}: string(vault),
	}, secrets)
	require.True(t, first.Secrets[meshconfig.SecretKey{Name: "signing-key"}].Global)

	meshes := make([]string, 0, len(first.Meshes))
	for name, m := range first.Meshes {
		require.Equal(t, name, m.Name)
		meshes = append(meshes, name)
	}
	require.ElementsMatch(t, []string{"demo", "default", "json-mesh"}, meshes)
	require.Zero(t, h.syncErrors())
	require.NotContains(t, h.logs.String(), "s3cr3t")
}

func TestCreateEditDelete(t *testing.T) {
	h := setup(t)
	h.start(file.Config{})
	h.eventually("first view", func(meshconfig.Resources) bool { return true })

	// A raw secret in a mesh directory created after the start.
	v1, v2 := pemData(t), pemData(t)
	h.write("default/tls.crt", v1)
	h.waitSecret("default", "tls.crt", v1)
	h.write("default/tls.crt", v2)
	h.waitSecret("default", "tls.crt", v2)

	// A manifest in a nested directory created after the start.
	h.write("a/b/c/secrets.yaml", []byte(universalSecret("default", "m", []byte("v1"))))
	h.waitSecret("default", "m", []byte("v1"))
	h.write("a/b/c/secrets.yaml", []byte(universalSecret("default", "m", []byte("v2"))))
	h.waitSecret("default", "m", []byte("v2"))

	// Deleting a file removes its resources.
	h.remove("default/tls.crt")
	h.waitNoSecret("default", "tls.crt")
	// Deleting a directory removes the resources of its files.
	h.remove("a")
	h.waitNoSecret("default", "m")

	// The directory can come back.
	h.write("a/b/again.yaml", []byte(universalSecret("default", "m", []byte("v3"))))
	h.waitSecret("default", "m", []byte("v3"))
	require.Zero(t, h.syncErrors())
}

func TestAtomicRename(t *testing.T) {
	h := setup(t)
	old, next := pemData(t), pemData(t)
	h.write("default/ca.crt", old)
	h.write("secrets.yaml", []byte(universalSecret("default", "m", []byte("old"))))
	h.start(file.Config{})
	h.waitSecret("default", "ca.crt", old)
	h.waitSecret("default", "m", []byte("old"))

	h.write("default/ca.crt", next)
	h.write("secrets.yaml", []byte(universalSecret("default", "m", []byte("new"))))
	h.waitSecret("default", "ca.crt", next)
	h.waitSecret("default", "m", []byte("new"))

	// Renaming a file away removes it; renaming it back restores it.
	require.NoError(t, os.Rename(filepath.Join(h.dir, "secrets.yaml"), filepath.Join(h.dir, "secrets.yaml.disabled~")))
	h.waitNoSecret("default", "m")
	require.NoError(t, os.Rename(filepath.Join(h.dir, "secrets.yaml.disabled~"), filepath.Join(h.dir, "secrets.yaml")))
	h.waitSecret("default", "m", []byte("new"))
	require.Zero(t, h.syncErrors())
}

// kubeMount lays out <dir>/<mesh> as the kubelet mounts a Secret volume and
// returns a function that publishes a new version of the files the way the
// kubelet's atomic writer does.
func kubeMount(t *testing.T, meshDir string, files map[string][]byte) (update func(map[string][]byte)) {
	t.Helper()
	require.NoError(t, os.MkdirAll(meshDir, 0o755))
	version := 0
	current := ""
	writeVersion := func(files map[string][]byte) string {
		version++
		name := "..2026_11_26_10_00_00." + strconv.Itoa(version)
		require.NoError(t, os.Mkdir(filepath.Join(meshDir, name), 0o755))
		for f, data := range files {
			require.NoError(t, os.WriteFile(filepath.Join(meshDir, name, f), data, 0o644))
		}
		return name
	}
	current = writeVersion(files)
	require.NoError(t, os.Symlink(current, filepath.Join(meshDir, "..data")))
	for f := range files {
		require.NoError(t, os.Symlink(filepath.Join("..data", f), filepath.Join(meshDir, f)))
	}
	return func(files map[string][]byte) {
		next := writeVersion(files)
		tmp := filepath.Join(meshDir, "..data_tmp")
		require.NoError(t, os.Symlink(next, tmp))
		require.NoError(t, os.Rename(tmp, filepath.Join(meshDir, "..data")))
		require.NoError(t, os.RemoveAll(filepath.Join(meshDir, current)))
		current = next
	}
}

func TestKubernetesSymlinkSwap(t *testing.T) {
	h := setup(t)
	crt1, key1 := pemData(t), pemData(t)
	update := kubeMount(t, filepath.Join(h.dir, "default"), map[string][]byte{"ca.crt": crt1, "ca.key": key1})
	h.start(file.Config{})
	h.waitSecret("default", "ca.crt", crt1)
	h.waitSecret("default", "ca.key", key1)
	v, _ := h.rec.last()
	require.Len(t, v.Secrets, 2, "..data and the timestamped directory are not secrets")

	crt2, key2 := pemData(t), pemData(t)
	update(map[string][]byte{"ca.crt": crt2, "ca.key": key2})
	h.waitSecret("default", "ca.crt", crt2)
	h.waitSecret("default", "ca.key", key2)

	crt3, key3 := pemData(t), pemData(t)
	update(map[string][]byte{"ca.crt": crt3, "ca.key": key3})
	h.waitSecret("default", "ca.crt", crt3)
	h.waitSecret("default", "ca.key", key3)
	v, _ = h.rec.last()
	require.Len(t, v.Secrets, 2)
	require.Zero(t, h.syncErrors())
}

func TestBadContentKeepsLastGood(t *testing.T) {
	good, fixedPEM := pemData(t), pemData(t)
	tests := []struct {
		name      string
		path      string // below the source directory
		mesh      string // of the resource the file holds
		secret    string
		good      []byte // file content
		data      []byte // the secret's data for good
		bad       []byte
		inPlace   bool   // truncate and write bad in place
		badLogs   string // expected in the log line
		fixed     []byte // good again
		fixedData []byte // the secret's data for fixed; nil means fixed
	}{
		{
			name: "truncated PEM", path: "default/ca.crt", mesh: "default", secret: "ca.crt",
			good: good, data: good, bad: good[:len(good)/2],
			badLogs: "incomplete PEM", fixed: fixedPEM,
		},
		{
			name: "second PEM block truncated", path: "default/chain.pem", mesh: "default", secret: "chain.pem",
			good: good, data: good, bad: append(append([]byte{}, good...), good[:40]...),
			badLogs: "incomplete PEM", fixed: fixedPEM,
		},
		{
			name: "empty raw file", path: "default/token", mesh: "default", secret: "token",
			good: []byte("t0k3n"), data: []byte("t0k3n"), bad: nil, inPlace: true,
			badLogs: "empty file", fixed: []byte("fixed"),
		},
		{
			name: "empty manifest", path: "m.yaml", mesh: "default", secret: "s",
			good: []byte(universalSecret("default", "s", []byte("v1"))), data: []byte("v1"), bad: nil, inPlace: true,
			badLogs:   "empty file",
			fixed:     []byte(universalSecret("default", "s", []byte("v3"))),
			fixedData: []byte("v3"),
		},
		{
			name: "manifest with a bad document", path: "m.yaml", mesh: "default", secret: "s",
			good: []byte(universalSecret("default", "s", []byte("v1"))), data: []byte("v1"),
			bad:       docs(universalSecret("default", "s", []byte("v2")), "type: Secret\nname: other\ndata: '%%%'\n"),
			badLogs:   "document 2",
			fixed:     []byte(universalSecret("default", "s", []byte("v3"))),
			fixedData: []byte("v3"),
		},
		{
			name: "manifest truncated mid-write", path: "m.yaml", mesh: "default", secret: "s",
			good: []byte(universalSecret("default", "s", []byte("v1"))), data: []byte("v1"),
			bad:       []byte("type: Secret\nmesh: default\nname: s\ndata: \"dj"),
			badLogs:   "invalid YAML",
			fixed:     []byte(universalSecret("default", "s", []byte("v3"))),
			fixedData: []byte("v3"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := setup(t)
			h.write(tt.path, tt.good)
			h.start(file.Config{})
			h.waitSecret(tt.mesh, tt.secret, tt.data)

			if tt.inPlace {
				h.writeInPlace(tt.path, tt.bad)
			} else {
				h.write(tt.path, tt.bad)
			}
			h.waitSyncErrors(1)
			// A marker written after the bad content is published by a
			// scan that also read the bad content.
			h.write("marker.yaml", []byte(universalSecret("default", "marker", []byte("1"))))
			h.waitSecret("default", "marker", []byte("1"))
			got, ok := h.secret(tt.mesh, tt.secret)
			require.True(t, ok)
			require.Equal(t, tt.data, got, "the last good content stays")
			require.Equal(t, float64(1), h.syncErrors(), "a failure is counted once")

			logs := h.logs.String()
			require.Contains(t, logs, tt.badLogs)
			require.Contains(t, logs, "path="+filepath.Join(h.dir, tt.path))
			require.Equal(t, 1, strings.Count(logs, "file rejected"), "a failure is logged once")
			require.NotContains(t, logs, base64.StdEncoding.EncodeToString(tt.data))
			if len(tt.data) > 20 {
				require.NotContains(t, logs, string(tt.data[30:60]), "secret bytes never reach the log")
			}

			// Once good again, the new content is used.
			fixed, want := tt.fixed, tt.fixed
			if tt.fixedData != nil {
				want = tt.fixedData
			}
			h.write(tt.path, fixed)
			h.waitSecret(tt.mesh, tt.secret, want)
			require.Contains(t, h.logs.String(), "file is valid again")
		})
	}
}

func TestNeverGoodContributesNothing(t *testing.T) {
	h := setup(t)
	h.write("bad.yaml", docs(
		universalSecret("default", "would-be", []byte("x")),
		"type: Mesh\nname: Not_Valid\n",
	))
	h.write("default/empty", nil)
	h.write("default/half.pem", pemData(t)[:100])
	h.write("good.yaml", []byte(universalSecret("default", "good", []byte("g"))))
	h.start(file.Config{})
	h.waitSecret("default", "good", []byte("g"))

	v, _ := h.rec.last()
	require.Len(t, v.Secrets, 1)
	require.Empty(t, v.Meshes)
	require.Equal(t, float64(3), h.syncErrors())
}

func TestDuplicates(t *testing.T) {
	h := setup(t)
	h.write("a.yaml", []byte(universalSecret("default", "dup", []byte("from-a"))))
	h.write("b.yaml", docs(universalSecret("default", "dup", []byte("from-b")), "type: Mesh\nname: default\n"))
	h.write("default/dup", []byte("from-raw"))
	h.start(file.Config{})
	h.waitSecret("default", "dup", []byte("from-a"))
	h.eventually("b.yaml's mesh is still used", func(v meshconfig.Resources) bool {
		_, ok := v.Meshes["default"]
		return ok
	})
	// b.yaml and default/dup each lose against a.yaml.
	require.Equal(t, float64(2), h.syncErrors())
	logs := h.logs.String()
	require.Contains(t, logs, "duplicate resource ignored")
	require.Contains(t, logs, "path="+filepath.Join(h.dir, "b.yaml"))
	require.Contains(t, logs, "path="+filepath.Join(h.dir, "default", "dup"))

	// The winner goes: the next path in order wins.
	h.remove("a.yaml")
	h.waitSecret("default", "dup", []byte("from-b"))
	h.remove("b.yaml")
	h.waitSecret("default", "dup", []byte("from-raw"))
}

func TestIgnoredFiles(t *testing.T) {
	h := setup(t)
	ignored := []string{
		".hidden.yaml",
		"root-raw-file",   // non-manifest directly in dir
		"default/.hidden", // hidden raw file
		"default/cert~",   // editor backups and temp files
		"default/cert.swp",
		"default/cert.swx",
		"default/#cert#",
		"default/.#cert",
		"default/cert.tmp",
		"secrets.yaml.tmp",
		"secrets.yaml~",
		"default/deeper/raw", // non-manifest below a mesh directory
		".git/secrets.yaml",  // manifests in hidden directories
		"default/..data/x.yaml",
	}
	for _, p := range ignored {
		h.write(p, []byte(universalSecret("default", "ignored", []byte("nope"))))
	}
	h.write("default/kept", []byte("kept"))
	h.start(file.Config{})
	h.waitSecret("default", "kept", []byte("kept"))
	v, _ := h.rec.last()
	require.Len(t, v.Secrets, 1)

	// Churn in ignored files changes nothing.
	for _, p := range ignored {
		h.write(p, []byte(universalSecret("default", "ignored2", []byte("nope"))))
	}
	h.write("default/kept", []byte("kept2"))
	h.waitSecret("default", "kept", []byte("kept2"))
	v, _ = h.rec.last()
	require.Len(t, v.Secrets, 1)
	require.Zero(t, h.syncErrors())
}

func TestInvalidRawNames(t *testing.T) {
	h := setup(t)
	h.write("Bad_Mesh/cert", []byte("x"))
	h.write("default/Bad_Name", []byte("x"))
	h.write("default/good", []byte("x"))
	h.start(file.Config{})
	h.waitSecret("default", "good", []byte("x"))
	v, _ := h.rec.last()
	require.Len(t, v.Secrets, 1)
	require.Equal(t, float64(2), h.syncErrors())
	logs := h.logs.String()
	require.Contains(t, logs, "invalid raw secret path: mesh:")
	require.Contains(t, logs, "invalid raw secret path: name:")
	require.Contains(t, logs, filepath.Join(h.dir, "Bad_Mesh", "cert"))
	require.Contains(t, logs, filepath.Join(h.dir, "default", "Bad_Name"))
}

func TestMaxSecretSize(t *testing.T) {
	h := setup(t)
	h.write("default/big", bytes.Repeat([]byte("x"), 101))
	h.write("default/small", bytes.Repeat([]byte("x"), 100))
	h.write("big.yaml", []byte(universalSecret("default", "big-manifest", bytes.Repeat([]byte("x"), 101))))
	h.start(file.Config{MaxSecretSize: 100})
	h.waitSecret("default", "small", bytes.Repeat([]byte("x"), 100))
	v, _ := h.rec.last()
	require.Len(t, v.Secrets, 1)
	require.Equal(t, float64(2), h.syncErrors())
}

// TestPeriodicRescan changes a file in a way no watch can see: the content
// of a Kubernetes-style mount is rewritten inside the hidden versioned
// directory, which is deliberately not watched. Only the periodic rescan
// picks it up.
func TestPeriodicRescan(t *testing.T) {
	h := setup(t)
	crt1 := pemData(t)
	kubeMount(t, filepath.Join(h.dir, "default"), map[string][]byte{"ca.crt": crt1})
	h.start(file.Config{RescanInterval: 50 * time.Millisecond})
	h.waitSecret("default", "ca.crt", crt1)

	entries, err := filepath.Glob(filepath.Join(h.dir, "default", "..2026_*", "ca.crt"))
	require.NoError(t, err)
	require.Len(t, entries, 1)
	crt2 := pemData(t)
	tmp := filepath.Join(filepath.Dir(entries[0]), "ca.crt.new")
	require.NoError(t, os.WriteFile(tmp, crt2, 0o644))
	require.NoError(t, os.Rename(tmp, entries[0]))

	h.waitSecret("default", "ca.crt", crt2)
	require.Positive(t, h.metric("meshsds_source_rescans_total", "reason", "periodic"))
}

// TestOverflow makes the kernel's inotify queue overflow for real: the
// first publish blocks, so the event loop reads no events while the test
// produces more events than the queue holds. The overflow must trigger a
// full rescan that finds a change made during the flood.
func TestOverflow(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skip("not an inotify system")
	}
	queue, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	require.NoError(t, err)
	if queue > 1<<20 {
		t.Skipf("inotify queue too large to overflow in a test: %d", queue)
	}

	h := setup(t)
	h.write("default/before", []byte("before"))
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h.rec.publish = func(meshconfig.Resources) {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	h.start(file.Config{RescanInterval: time.Hour})
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("no first publish")
	}

	// Alternate between two files so that the kernel cannot merge
	// consecutive identical events. The watcher's reader holds one read
	// buffer of events besides the queue.
	var files [2]*os.File
	for i := range files {
		files[i], err = os.Create(filepath.Join(h.dir, "flood"+strconv.Itoa(i)))
		require.NoError(t, err)
		defer files[i].Close()
	}
	for i := 0; i < 2*queue+10000; i++ {
		_, err := files[i%2].Write([]byte{'x'})
		require.NoError(t, err)
	}
	h.write("default/during", []byte("during"))
	close(release)

	h.waitSecret("default", "during", []byte("during"))
	require.Eventually(t, func() bool {
		return h.metric("meshsds_source_rescans_total", "reason", "overflow") >= 1
	}, waitFor, 5*time.Millisecond)
	require.GreaterOrEqual(t, h.syncErrors(), float64(1), "the overflow is counted")
}

func TestManyFilesDebounced(t *testing.T) {
	const n = 1000
	h := setup(t)
	h.start(file.Config{Debounce: 100 * time.Millisecond})
	h.eventually("first view", func(meshconfig.Resources) bool { return true })

	for i := range n {
		name := fmt.Sprintf("s%04d", i)
		if i%2 == 0 {
			h.write(filepath.Join("default", name), []byte(name))
		} else {
			h.write(filepath.Join("manifests", name+".yaml"), []byte(universalSecret("default", name, []byte(name))))
		}
	}
	h.eventually("all files", func(v meshconfig.Resources) bool { return len(v.Secrets) == n })
	v, publishes := h.rec.last()
	for i := range n {
		name := fmt.Sprintf("s%04d", i)
		s, ok := v.Secrets[meshconfig.SecretKey{Mesh: "default", Name: name}]
		require.True(t, ok, name)
		require.Equal(t, name, string(s.Data))
	}
	// Not a timing assertion: without debouncing there would be about one
	// publish per file.
	require.Less(t, publishes, n/10, "bursts are debounced")
}

// TestNoPublishWithoutChange checks that rescans that find the same content
// publish nothing, even when files were rewritten with identical bytes.
func TestNoPublishWithoutChange(t *testing.T) {
	h := setup(t)
	h.write("default/a", []byte("a"))
	h.write("s.yaml", []byte(universalSecret("default", "s", []byte("s"))))
	h.start(file.Config{RescanInterval: 20 * time.Millisecond})
	h.waitSecret("default", "a", []byte("a"))

	// Same bytes through a new inode, and an equivalent manifest.
	h.write("default/a", []byte("a"))
	h.write("s.yaml", []byte("# reformatted\n"+universalSecret("default", "s", []byte("s"))))
	before := h.metric("meshsds_source_rescans_total", "reason", "periodic")
	require.Eventually(t, func() bool {
		return h.metric("meshsds_source_rescans_total", "reason", "periodic") >= before+3
	}, waitFor, 5*time.Millisecond)
	_, n := h.rec.last()
	require.Equal(t, 1, n)
}

// TestDirectoryRename moves a mesh directory: its raw secrets move to the
// new mesh, and the directory is watched under its new name.
func TestDirectoryRename(t *testing.T) {
	h := setup(t)
	h.write("one/cert", []byte("c"))
	h.start(file.Config{RescanInterval: time.Hour})
	h.waitSecret("one", "cert", []byte("c"))

	require.NoError(t, os.Rename(filepath.Join(h.dir, "one"), filepath.Join(h.dir, "two")))
	h.waitSecret("two", "cert", []byte("c"))
	h.waitNoSecret("one", "cert")

	h.write("two/key", []byte("k"))
	h.waitSecret("two", "key", []byte("k"))
	h.writeInPlace("two/key", []byte("k2"))
	h.waitSecret("two", "key", []byte("k2"))
}

// TestRootRemoved removes the watched directory itself: the last view
// stays, the failure is reported once, and the directory is read again once
// it is back (found by the periodic rescan, as nothing watches it any more).
func TestRootRemoved(t *testing.T) {
	h := setup(t)
	h.write("default/cert", []byte("c"))
	h.start(file.Config{RescanInterval: 20 * time.Millisecond})
	h.waitSecret("default", "cert", []byte("c"))

	require.NoError(t, os.RemoveAll(h.dir))
	h.waitSyncErrors(1)
	before := h.metric("meshsds_source_rescans_total", "reason", "periodic")
	require.Eventually(t, func() bool {
		return h.metric("meshsds_source_rescans_total", "reason", "periodic") >= before+3
	}, waitFor, 5*time.Millisecond)
	require.Equal(t, float64(1), h.syncErrors(), "reported once")
	got, ok := h.secret("default", "cert")
	require.True(t, ok, "the last view stays")
	require.Equal(t, []byte("c"), got)

	require.NoError(t, os.Mkdir(h.dir, 0o755))
	h.write("default/cert", []byte("c2"))
	h.waitSecret("default", "cert", []byte("c2"))
	h.write("demo/key", []byte("k"))
	h.waitSecret("demo", "key", []byte("k"))
}

// TestMetaSaysWhereAndWhen: every resource carries the file it was read
// from and that file's modification time; content that did not change
// keeps its times when its file is rewritten.
func TestMetaSaysWhereAndWhen(t *testing.T) {
	h := setup(t)
	h.write("default/raw", []byte("raw"))
	h.write("m.yaml", []byte(universalSecret("default", "s", []byte("s"))+"---\ntype: Mesh\nname: m\n"))
	old := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	require.NoError(t, os.Chtimes(filepath.Join(h.dir, "m.yaml"), old, old))
	h.start(file.Config{})
	h.waitSecret("default", "raw", []byte("raw"))

	v, _ := h.rec.last()
	raw := v.Secrets[meshconfig.SecretKey{Mesh: "default", Name: "raw"}]
	require.Equal(t, filepath.Join(h.dir, "default", "raw"), raw.Meta.Path)
	require.WithinDuration(t, time.Now(), raw.Meta.ModifiedAt, time.Minute)
	s := v.Secrets[meshconfig.SecretKey{Mesh: "default", Name: "s"}]
	require.Equal(t, filepath.Join(h.dir, "m.yaml"), s.Meta.Path)
	require.True(t, old.Equal(s.Meta.ModifiedAt), "the file's modification time: %v", s.Meta.ModifiedAt)
	require.Equal(t, filepath.Join(h.dir, "m.yaml"), v.Meshes["m"].Meta.Path)

	// The Secret changes, the Mesh of the same file does not.
	h.write("m.yaml", []byte(universalSecret("default", "s", []byte("s2"))+"---\ntype: Mesh\nname: m\n"))
	h.waitSecret("default", "s", []byte("s2"))
	v, _ = h.rec.last()
	s = v.Secrets[meshconfig.SecretKey{Mesh: "default", Name: "s"}]
	require.True(t, s.Meta.ModifiedAt.After(old), "a changed resource gets its file's new time")
	require.True(t, old.Equal(s.Meta.CreatedAt), "and keeps its creation time")
	require.True(t, old.Equal(v.Meshes["m"].Meta.ModifiedAt), "an unchanged resource keeps its time")
}

// TestProblemsListWhatCannotBeUsed: a file that fails to decode and a
// resource two files define are the source's problems until fixed.
func TestProblemsListWhatCannotBeUsed(t *testing.T) {
	h := setup(t)
	h.write("a.yaml", []byte(universalSecret("default", "s", []byte("a"))))
	h.write("b.yaml", []byte(universalSecret("default", "s", []byte("b"))))
	h.write("bad.yaml", []byte("type: Secret\nname: x\ndata: '!!'\n"))
	h.start(file.Config{})
	h.waitSecret("default", "s", []byte("a"))

	problems := h.src.Problems()
	require.Len(t, problems, 2, "%+v", problems)
	require.Equal(t, filepath.Join(h.dir, "b.yaml"), problems[0].Subject)
	require.Contains(t, problems[0].Message, "is also defined in "+filepath.Join(h.dir, "a.yaml"))
	require.Equal(t, filepath.Join(h.dir, "bad.yaml"), problems[1].Subject)
	require.Contains(t, problems[1].Message, "data: has to be valid base64 string")
	for _, p := range problems {
		require.Equal(t, h.src.Name(), p.Source)
		require.False(t, p.Since.IsZero())
	}

	h.remove("b.yaml")
	h.write("bad.yaml", []byte(universalSecret("default", "x", []byte("x"))))
	h.waitSecret("default", "x", []byte("x"))
	require.Empty(t, h.src.Problems())
}
