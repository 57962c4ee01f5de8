package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
	"github.com/meshsds/meshsds/sds/token"
	"github.com/meshsds/meshsds/secretsource"
	"github.com/meshsds/meshsds/secretsource/file"
	"github.com/meshsds/meshsds/secretsource/reconcile"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is meshsds in-process: a file source on a directory laid out by
// WriteSecretsDir, the reconciler, the SDS cache and a real gRPC server on
// 127.0.0.1:0.
type server struct {
	addr, secretsDir, keyFile string
	cache                     *cache.Cache
	stop                      func() // closes its connections; idempotent
}

func startInProcess(t *testing.T, withTokens, withSource bool) *server {
	t.Helper()
	dir := t.TempDir()
	s := &server{secretsDir: filepath.Join(dir, "secrets")}
	ca, err := NewMeshCA("test", time.Now())
	require.NoError(t, err)
	require.NoError(t, WriteSecretsDir(s.secretsDir, "default", ca))

	s.cache = cache.New(cache.Config{})
	var auth sds.Authenticator = sds.NoAuth{}
	if withTokens {
		key, err := token.LoadOrCreateSigningKey(filepath.Join(dir, "data"))
		require.NoError(t, err)
		s.keyFile = filepath.Join(dir, "data", token.SigningKeyFile)
		auth = &sds.TokenAuthenticator{Verifier: token.NewVerifier(&key.PublicKey), Now: time.Now}
	}
	srv, err := sds.NewServer(sds.ServerConfig{Secrets: s.cache, Auth: auth})
	require.NoError(t, err)
	gs := grpclite.NewServer(grpclite.Config{})
	srv.RegisterGRPCLite(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.addr = lis.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = gs.Serve(lis); done <- struct{}{} }()
	if withSource {
		src, err := file.New(file.Config{Dir: s.secretsDir, Debounce: 20 * time.Millisecond})
		require.NoError(t, err)
		rec, err := reconcile.New(reconcile.Config{Sources: []secretsource.Source{src}, Sink: s.cache})
		require.NoError(t, err)
		go func() { _ = rec.Run(ctx); done <- struct{}{} }()
	} else {
		done <- struct{}{}
	}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			gs.Stop()
			<-done
			<-done
		})
	}
	t.Cleanup(s.stop)
	return s
}

func TestRunMeasuresStormAndBothChanges(t *testing.T) {
	for _, tc := range []struct {
		api    API
		client string
	}{
		{APISotW, ClientH2},
		{APIDelta, ClientH2},
		{APIADS, ClientH2},
		{APIADSDelta, ClientH2},
		{APISotW, ClientGRPCGo},
		{APIADSDelta, ClientGRPCGo},
	} {
		api := tc.api
		t.Run(string(api)+" "+tc.client, func(t *testing.T) {
			s := startInProcess(t, api == APISotW, true)
			r, err := Run(context.Background(), RunConfig{
				Fleet:      Config{Addr: s.addr, DataPlanes: 8, API: api, Concurrency: 3, Client: tc.client},
				SigningKey: s.keyFile,
				MeshDir:    filepath.Join(s.secretsDir, "default"),
				Rotations:  1,
				Timeout:    20 * time.Second,
			})
			require.NoError(t, err)
			require.Equal(t, 8, r.DataPlanes)
			wantStreams := 16
			if api == APIADS || api == APIADSDelta {
				wantStreams = 8
			}
			require.Equal(t, wantStreams, r.Streams)
			require.Equal(t, 16, r.Storm.All.Count)
			require.Nil(t, r.Storm.Elsewhere, "one address: nothing is elsewhere")
			require.Positive(t, r.StormSeconds)
			require.Zero(t, r.Errors, r.FirstError)
			require.Zero(t, r.NACKs)
			require.Zero(t, r.CheckFailures, r.FirstCheckFailure)

			ca, ok := r.Change(ChangeCA)
			require.True(t, ok)
			require.Equal(t, 8, ca.Identity.Count)
			require.Equal(t, 8, ca.Bundle.Count)
			require.Zero(t, ca.Missing)
			require.LessOrEqual(t, ca.Identity.P50, ca.Identity.P99)
			require.LessOrEqual(t, ca.Identity.P99, ca.Identity.Max)

			bundle, ok := r.Change(ChangeBundle)
			require.True(t, ok)
			require.Equal(t, 8, bundle.Bundle.Count)
			require.Zero(t, bundle.Identity.Count)
			// A re-issued root changes the trust bundle only.
			require.Zero(t, bundle.Unexpected)
		})
	}
}

func TestRunReportsWhatIsNeverServed(t *testing.T) {
	// No source: the cache never gets ready, so nothing is answered.
	s := startInProcess(t, false, false)
	r, err := Run(context.Background(), RunConfig{
		Fleet:   Config{Addr: s.addr, DataPlanes: 3},
		Timeout: 300 * time.Millisecond,
	})
	require.ErrorContains(t, err, "6 of 6 secrets not served")
	require.Equal(t, 6, r.Storm.Missing)
}

func TestRunRefusedTokensAreErrors(t *testing.T) {
	for _, client := range []string{ClientH2, ClientGRPCGo} {
		t.Run(client, func(t *testing.T) { testRefusedTokens(t, client) })
	}
}

func testRefusedTokens(t *testing.T, client string) {
	s := startInProcess(t, true, true)
	other := filepath.Join(t.TempDir(), "other.pem")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pemKey, err := token.MarshalSigningKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(other, pemKey, 0o600))
	r, err := Run(context.Background(), RunConfig{
		Fleet:      Config{Addr: s.addr, DataPlanes: 2, Client: client},
		SigningKey: other,
		Timeout:    2 * time.Second,
	})
	require.Error(t, err)
	require.Equal(t, 4, r.Errors)
	require.Contains(t, r.FirstError, "Unauthenticated")
}

// TestReconnectFailsOverToTheOtherReplica: with Reconnect, the data planes
// of a server that goes away reconnect to the next address and are served
// there, which Failover measures; none is counted as an error.
func TestReconnectFailsOverToTheOtherReplica(t *testing.T) {
	for _, tc := range []struct {
		api    API
		client string
	}{
		{APISotW, ClientH2},
		{APIADSDelta, ClientH2},
		{APISotW, ClientGRPCGo},
	} {
		t.Run(string(tc.api)+" "+tc.client, func(t *testing.T) {
			a, b := startInProcess(t, false, true), startInProcess(t, false, true)
			caB, err := LoadMeshCA(filepath.Join(b.secretsDir, "default"))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			fleet, start, err := Start(ctx, Config{Addr: a.addr + "," + b.addr, DataPlanes: 10, API: tc.api, Client: tc.client, Reconnect: true})
			require.NoError(t, err)
			defer fleet.Close()
			storm := fleet.Wait(ctx, start)
			require.Zero(t, storm.Missing)
			require.NotNil(t, storm.Elsewhere)
			require.Equal(t, 5, storm.Elsewhere.Count, "the bundles of the data planes on b, the second address")
			bad, _ := fleet.Check(HeldBy(caB))
			require.Equal(t, 10, bad, "half of the data planes, on a, hold a's secrets")

			a.stop()
			require.Eventually(t, func() bool {
				f := fleet.Failover()
				return f.Served.Count == 5 && f.Down == 0
			}, 15*time.Second, 20*time.Millisecond, "a's data planes were not served again: %+v", fleet.Failover())
			got := fleet.Failover()
			t.Logf("failover: %+v", got)
			require.GreaterOrEqual(t, got.Reconnects, 5)
			require.LessOrEqual(t, got.Served.Max, 15.0)
			bad, first := fleet.Check(HeldBy(caB))
			require.Zero(t, bad, "every data plane holds b's secrets: %v", first)
			n, firstErr := fleet.Errors()
			require.Zero(t, n, "a lost connection is not an error with Reconnect: %v", firstErr)
		})
	}
}

// TestRunMeasuresFailover: with Reconnect, Run's last pause lets the caller
// stop a server, and the report has the failover of its data planes.
func TestRunMeasuresFailover(t *testing.T) {
	a, b := startInProcess(t, false, true), startInProcess(t, false, true)
	var stages []string
	r, err := Run(context.Background(), RunConfig{
		Fleet:   Config{Addr: a.addr + "," + b.addr, DataPlanes: 6, Reconnect: true},
		Timeout: 15 * time.Second,
		Pause: func(stage string, _ *Report) error {
			stages = append(stages, stage)
			if stage == StageFailover {
				a.stop()
			}
			return nil
		},
	})
	require.NoError(t, err)
	require.Equal(t, []string{StageFailover}, stages)
	require.NotNil(t, r.Failover)
	require.Equal(t, 3, r.Failover.Served.Count, "a's three data planes")
	require.Zero(t, r.Failover.Down)
	require.Zero(t, r.Errors, r.FirstError)

	// Servers of different CAs (no shared store): the check after the
	// failover finds data planes holding the other trust.
	d, e := startInProcess(t, false, true), startInProcess(t, false, true)
	r, err = Run(context.Background(), RunConfig{
		Fleet:   Config{Addr: d.addr + "," + e.addr, DataPlanes: 2, Reconnect: true},
		MeshDir: filepath.Join(d.secretsDir, "default"),
		Timeout: 15 * time.Second,
		Pause: func(stage string, _ *Report) error {
			if stage == StageFailover {
				d.stop()
			}
			return nil
		},
	})
	require.ErrorContains(t, err, "not from the current CA")
	require.Positive(t, r.CheckFailures)

	// Nothing stopped: the wait ends at the timeout, with an error.
	c := startInProcess(t, false, true)
	_, err = Run(context.Background(), RunConfig{
		Fleet:   Config{Addr: c.addr, DataPlanes: 1, Reconnect: true},
		Timeout: 300 * time.Millisecond,
		Pause:   func(string, *Report) error { return nil },
	})
	require.ErrorContains(t, err, "no connection was lost")
}

func TestDecodeRefusesWhatEnvoyRefuses(t *testing.T) {
	slots := []*slot{{kind: KindIdentity, name: NameIdentity}, {kind: KindBundle, name: NameBundle}}
	pack := func(s *tlsv3.Secret) *anypb.Any {
		a, err := anypb.New(s)
		require.NoError(t, err)
		return a
	}
	bundle := &tlsv3.Secret{Name: NameBundle, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{}}}
	_, err := decode([]*anypb.Any{pack(bundle)}, slots)
	require.ErrorContains(t, err, "no trusted CA")

	identity := &tlsv3.Secret{Name: NameIdentity, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{}}}
	_, err = decode([]*anypb.Any{pack(identity)}, slots)
	require.ErrorContains(t, err, "no certificate chain")

	_, err = decode([]*anypb.Any{pack(&tlsv3.Secret{Name: "other"})}, slots)
	require.ErrorContains(t, err, "was not requested")
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := summarize(ds)
	require.Equal(t, 100, l.Count)
	require.InDelta(t, 0.050, l.P50, 1e-9)
	require.InDelta(t, 0.099, l.P99, 1e-9)
	require.InDelta(t, 0.100, l.Max, 1e-9)
	require.InDelta(t, 0.001, l.Min, 1e-9)
	require.Equal(t, Latencies{}, summarize(nil))
}

func TestProcStats(t *testing.T) {
	rss, err := readRSS(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, rss, int64(1<<20))
	cpu, err := readCPU(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, cpu, 0.0)
	_, err = readRSS(-1)
	require.Error(t, err)
}
