// Package kubetest runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver, built from the Go module proxy into .tools/kube/bin by
// `make kube-tools` (see DEVELOPERS.md), started on free loopback ports
// with a temporary data directory and generated certificates.
//
// Clients reach the API server through a TCP proxy owned by the test, so
// that a test can cut every connection (Partition), restore them (Heal) and
// stop, start or restart the API server (its address stays the same for
// clients), while its own direct client keeps working to change state
// behind the back of the system under test.
//
// When the binaries are missing a test is skipped with a pointer to `make
// kube-tools`, except in CI (CI is set in the environment), where it fails.
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshsds/meshsds/internal/testing/testenv"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
)

// BinDirEnv names the environment variable that overrides where the
// kube-apiserver and etcd binaries are looked for.
const BinDirEnv = "MESHSDS_KUBE_BIN"

// Options tune the control plane.
type Options struct {
	// DisableWatchCache makes the API server serve watches from etcd, so
	// that a watch from a compacted resource version gets 410 Gone.
	DisableWatchCache bool
	// CompactionInterval is how often the API server compacts etcd; zero
	// keeps the API server's default (5m).
	CompactionInterval time.Duration
}

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	t                 testing.TB
	dir               string
	opts              Options
	apiserverBin      string
	etcdBin           string
	etcdURL           string
	apiserverPort     int
	caPEM             []byte
	clientCert, clKey []byte
	proxy             *proxy

	mu        sync.Mutex
	apiserver *process
	etcd      *process
}

// Start starts etcd and kube-apiserver and waits until the API server is
// ready. Everything is stopped and removed when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	apiserverBin, etcdBin := binaries(t)
	dir, err := os.MkdirTemp("", "kubetest-")
	require.NoError(t, err)
	c := &Cluster{t: t, dir: dir, opts: opts, apiserverBin: apiserverBin, etcdBin: etcdBin}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.proxy != nil {
			c.proxy.close()
		}
		for _, p := range []*process{c.apiserver, c.etcd} {
			if p != nil {
				p.stop(10 * time.Second)
			}
		}
		if t.Failed() {
			for _, name := range []string{"etcd.log", "kube-apiserver.log"} {
				t.Logf("last lines of %s:\n%s", name, tail(filepath.Join(dir, name), 40))
			}
		}
		_ = os.RemoveAll(dir)
	})
	c.writeCerts()
	c.startEtcd()
	c.apiserverPort = freePort(t)
	c.proxy = newProxy(t, "127.0.0.1:"+strconv.Itoa(c.apiserverPort))
	c.StartAPIServer()
	return c
}

// binaries returns the paths of kube-apiserver and etcd, skipping (or, in
// CI, failing) the test when they have not been built.
func binaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	dir := os.Getenv(BinDirEnv)
	if dir == "" {
		dir = filepath.Join(testenv.ModuleRoot(t), ".tools", "kube", "bin")
	}
	apiserver, etcd = filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "etcd")
	for _, p := range []string{apiserver, etcd} {
		if _, err := os.Stat(p); err != nil {
			testenv.Missing(t, fmt.Sprintf("%s is missing: run `make kube-tools` to build kube-apiserver and etcd (see DEVELOPERS.md)", p))
		}
	}
	return apiserver, etcd
}

func (c *Cluster) path(name string) string { return filepath.Join(c.dir, name) }

// writeCerts generates the cluster CA, the API server's serving
// certificate, the admin client certificate and the service account key.
func (c *Cluster) writeCerts() {
	ca := NewCA(c.t, "kubetest CA")
	c.caPEM = ca.CertPEM
	servingCert, servingKey := ca.Issue(c.t, "kube-apiserver", true, []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}, nil)
	c.clientCert, c.clKey = ca.Issue(c.t, "kubetest-admin", false, nil, nil, []string{"system:masters"})
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(c.t, err)
	saDER, err := x509.MarshalECPrivateKey(saKey)
	require.NoError(c.t, err)
	for name, data := range map[string][]byte{
		"ca.crt":      ca.CertPEM,
		"serving.crt": servingCert,
		"serving.key": servingKey,
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER}),
	} {
		require.NoError(c.t, os.WriteFile(c.path(name), data, 0o600))
	}
}

func (c *Cluster) startEtcd() {
	clientPort, peerPort := freePort(c.t), freePort(c.t)
	c.etcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	p := startProcess(c.t, c.path("etcd.log"), c.etcdBin,
		"--name", "kubetest",
		"--data-dir", c.path("etcd-data"),
		"--listen-client-urls", c.etcdURL,
		"--advertise-client-urls", c.etcdURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kubetest="+peerURL,
		"--unsafe-no-fsync",
		"--log-level", "warn",
	)
	c.mu.Lock()
	c.etcd = p
	c.mu.Unlock()
	waitUntil(c.t, p, 60*time.Second, "etcd health", func() bool {
		resp, err := http.Get(c.etcdURL + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"health":"true"`))
	})
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) on the
// cluster's port and waits until /readyz answers ok.
func (c *Cluster) StartAPIServer() {
	c.t.Helper()
	args := []string{
		"--etcd-servers", c.etcdURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(c.apiserverPort),
		"--tls-cert-file", c.path("serving.crt"),
		"--tls-private-key-file", c.path("serving.key"),
		"--client-ca-file", c.path("ca.crt"),
		"--cert-dir", c.path("apiserver-certs"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", c.path("sa.key"),
		"--service-account-signing-key-file", c.path("sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--authorization-mode", "RBAC",
		// Advertising 127.0.0.1 makes the default reconciler refuse to
		// manage the kubernetes Service's endpoints.
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=1",
	}
	if c.opts.DisableWatchCache {
		args = append(args, "--watch-cache=false")
	}
	if c.opts.CompactionInterval > 0 {
		args = append(args, "--etcd-compaction-interval", c.opts.CompactionInterval.String())
	}
	p := startProcess(c.t, c.path("kube-apiserver.log"), c.apiserverBin, args...)
	c.mu.Lock()
	c.apiserver = p
	c.mu.Unlock()
	client := c.directHTTPClient()
	url := "https://127.0.0.1:" + strconv.Itoa(c.apiserverPort) + "/readyz"
	waitUntil(c.t, p, 120*time.Second, "kube-apiserver /readyz", func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	client.CloseIdleConnections()
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after 10s).
// etcd keeps running, so a later StartAPIServer finds the same state.
func (c *Cluster) StopAPIServer() {
	c.t.Helper()
	c.mu.Lock()
	p := c.apiserver
	c.apiserver = nil
	c.mu.Unlock()
	if p != nil {
		p.stop(10 * time.Second)
	}
}

// RestartAPIServer stops and starts kube-apiserver.
func (c *Cluster) RestartAPIServer() {
	c.t.Helper()
	c.StopAPIServer()
	c.StartAPIServer()
}

// Partition closes every connection through the proxy and refuses new ones
// until Heal; the API server itself keeps running.
func (c *Cluster) Partition() { c.proxy.setPartitioned(true) }

// Heal lets connections through the proxy again.
func (c *Cluster) Heal() { c.proxy.setPartitioned(false) }

// CAPEM returns the cluster CA, which signed the API server's certificate.
func (c *Cluster) CAPEM() []byte { return c.caPEM }

// Config returns an admin client configuration that goes through the
// proxy: give it to the system under test.
func (c *Cluster) Config() *rest.Config { return c.config(c.proxy.addr()) }

// DirectConfig returns an admin client configuration that bypasses the
// proxy: the test's own view of the cluster, unaffected by Partition.
func (c *Cluster) DirectConfig() *rest.Config {
	return c.config("127.0.0.1:" + strconv.Itoa(c.apiserverPort))
}

func (c *Cluster) config(hostPort string) *rest.Config {
	return &rest.Config{
		Host: "https://" + hostPort,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.caPEM, CertData: c.clientCert, KeyData: c.clKey,
		},
		QPS: 200, Burst: 400,
		Timeout: 30 * time.Second,
	}
}

func (c *Cluster) directHTTPClient() *http.Client {
	cert, err := tls.X509KeyPair(c.clientCert, c.clKey)
	require.NoError(c.t, err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(c.caPEM)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12,
		}},
	}
}

// Client returns a typed client that bypasses the proxy.
func (c *Cluster) Client() kubernetes.Interface {
	cs, err := kubernetes.NewForConfig(c.DirectConfig())
	require.NoError(c.t, err)
	return cs
}

// Dynamic returns a dynamic client that bypasses the proxy.
func (c *Cluster) Dynamic() dynamic.Interface {
	d, err := dynamic.NewForConfig(c.DirectConfig())
	require.NoError(c.t, err)
	return d
}

// WriteKubeconfig writes a kubeconfig for the admin user, through the
// proxy, to path. With impersonate set (e.g.
// "system:serviceaccount:kuma-system:meshsds") every request is made as
// that user, so that its RBAC permissions are what counts.
func (c *Cluster) WriteKubeconfig(path, impersonate string) {
	c.t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: "https://" + c.proxy.addr(), CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.clientCert, ClientKeyData: c.clKey, Impersonate: impersonate}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest"}
	cfg.CurrentContext = "kubetest"
	require.NoError(c.t, clientcmd.WriteToFile(*cfg, path))
}

// Apply server-side applies every document of a YAML or JSON manifest
// file and returns the applied objects.
func (c *Cluster) Apply(path string) []*unstructured.Unstructured {
	c.t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(c.t, err)
	return c.ApplyManifest(data)
}

// ApplyManifest server-side applies every document of a YAML or JSON
// manifest and returns the applied objects.
func (c *Cluster) ApplyManifest(data []byte) []*unstructured.Unstructured {
	c.t.Helper()
	var out []*unstructured.Unstructured
	for _, obj := range DecodeManifest(c.t, data) {
		out = append(out, c.ApplyObject(obj))
	}
	return out
}

// ApplyObject server-side applies one object.
func (c *Cluster) ApplyObject(obj *unstructured.Unstructured) *unstructured.Unstructured {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, err := discovery.NewDiscoveryClientForConfig(c.DirectConfig())
	require.NoError(c.t, err)
	groups, err := restmapper.GetAPIGroupResources(dc)
	require.NoError(c.t, err)
	gvk := obj.GroupVersionKind()
	mapping, err := restmapper.NewDiscoveryRESTMapper(groups).RESTMapping(gvk.GroupKind(), gvk.Version)
	require.NoError(c.t, err, "mapping %s", gvk)
	var ri dynamic.ResourceInterface = c.Dynamic().Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := obj.GetNamespace()
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		ri = c.Dynamic().Resource(mapping.Resource).Namespace(ns)
	}
	applied, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "kubetest", Force: true})
	require.NoError(c.t, err, "applying %s %s", gvk.Kind, obj.GetName())
	if gvk.Kind == "CustomResourceDefinition" {
		c.waitEstablished(applied.GetName())
	}
	return applied
}

// waitEstablished waits until a CRD is established and its resource is
// discoverable.
func (c *Cluster) waitEstablished(name string) {
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	require.Eventually(c.t, func() bool {
		u, err := c.Dynamic().Resource(crds).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "CRD %s not established", name)
}

// CreateNamespace creates a namespace (an existing one is fine).
func (c *Cluster) CreateNamespace(name string) {
	c.t.Helper()
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}}
	_, err := c.Dynamic().Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		require.NoError(c.t, err)
	}
}

// DecodeManifest splits a YAML or JSON manifest into objects, skipping
// empty documents.
func DecodeManifest(t testing.TB, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// CA is a test certificate authority for TLS certificates (the API
// server's, a webhook's).
type CA struct{ *pki.KeyPair }

// NewCA makes a self-signed CA valid for a day.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	return &CA{pkitest.New(t, pkitest.Spec{CN: cn, NotAfter: time.Now().Add(24 * time.Hour)})}
}

// Issue returns a PEM certificate and PKCS#8 key signed by ca: a server
// certificate for ips and dnsNames, or a client certificate with
// organizations (Kubernetes groups).
func (ca *CA) Issue(t testing.TB, cn string, server bool, ips []net.IP, dnsNames, organizations []string) (certPEM, keyPEM []byte) {
	t.Helper()
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	kp, err := pki.Create(pki.Template{
		Subject:     pkix.Name{CommonName: cn, Organization: organizations},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: ips,
		DNSNames:    dnsNames,
	}, nil, ca.KeyPair)
	require.NoError(t, err)
	return kp.CertPEM, kp.KeyPEM
}

// freePort returns a loopback TCP port for a process the test starts.
func freePort(t testing.TB) int {
	t.Helper()
	port, err := testenv.FreePort()
	require.NoError(t, err)
	return port
}

// process is a started binary whose output goes to a log file.
type process struct {
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{}
	err    error
}

func startProcess(t testing.TB, logPath, bin string, args ...string) *process {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	_, _ = fmt.Fprintf(f, "\n=== %s %s\n", time.Now().Format(time.RFC3339), strings.Join(append([]string{filepath.Base(bin)}, args...), " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	setDeathSignal(cmd)
	require.NoError(t, cmd.Start(), "starting %s", bin)
	p := &process{cmd: cmd, log: f, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (p *process) stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	_ = p.log.Close()
}

// waitUntil polls ok until it holds, failing the test when p exits or the
// timeout passes.
func waitUntil(t testing.TB, p *process, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		select {
		case <-p.exited:
			t.Fatalf("%s exited while waiting for %s: %v\n%s", filepath.Base(p.cmd.Path), what, p.err, tail(p.log.Name(), 40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s\n%s", timeout, what, tail(p.log.Name(), 40))
		}
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
