// Package sdstest holds what tests need to play the data plane side of SDS:
// a gRPC client that reads secrets like Envoy does, and real
// crypto/tls handshakes between two simulated data planes using only what
// they were served.
package sdstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/meshsds/meshsds/meshconfig/pki"
)

// SecretTypeURL is the xDS type of SDS secrets.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Dial connects to an SDS server on addr in plain text, sending token (if
// any) as "authorization: Bearer <token>" on every call, as Envoy does with
// initial_metadata.
func Dial(t testing.TB, addr, token string) *grpc.ClientConn {
	t.Helper()
	return DialWith(t, addr, token, insecure.NewCredentials())
}

// DialWith is Dial with other transport credentials, e.g. TLS.
func DialWith(t testing.TB, addr, token string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if token != "" {
		md := metadata.Pairs("authorization", "Bearer "+token)
		opts = append(opts,
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
				return invoker(metadata.NewOutgoingContext(ctx, md), method, req, reply, cc, o...)
			}),
			grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(metadata.NewOutgoingContext(ctx, md), desc, cc, method, o...)
			}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Stream is a state-of-the-world SDS stream driven like Envoy drives one:
// it requests names, and ACKs every response it accepts.
type Stream struct {
	t      testing.TB
	NodeID string
	Cancel context.CancelFunc
	s      grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	names  []string
	recv   chan recvResult
}

type recvResult struct {
	resp *discoveryv3.DiscoveryResponse
	err  error
}

// OpenStream opens StreamSecrets (or ADS when ads is set) for nodeID and
// requests names.
func OpenStream(t testing.TB, conn *grpc.ClientConn, nodeID string, ads bool, names ...string) *Stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var (
		s   grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
		err error
	)
	if ads {
		s, err = discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	} else {
		s, err = secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	}
	require.NoError(t, err)
	st := &Stream{t: t, NodeID: nodeID, Cancel: cancel, s: s, names: names, recv: make(chan recvResult, 16)}
	go func() {
		for {
			resp, err := s.Recv()
			st.recv <- recvResult{resp, err}
			if err != nil {
				return
			}
		}
	}()
	err = s.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: nodeID, Cluster: "test"}, TypeUrl: SecretTypeURL, ResourceNames: names,
	})
	// A stream the server refused at its headers may have ended before
	// its first request went out: Send says io.EOF, and Recv has the
	// status.
	if !errors.Is(err, io.EOF) {
		require.NoError(t, err)
	}
	return st
}

// Send sends a raw request on the stream.
func (s *Stream) Send(req *discoveryv3.DiscoveryRequest) error { return s.s.Send(req) }

// Recv waits up to timeout for the next response or stream error.
func (s *Stream) Recv(timeout time.Duration) (*discoveryv3.DiscoveryResponse, error) {
	select {
	case r := <-s.recv:
		return r.resp, r.err
	case <-time.After(timeout):
		return nil, errTimeout
	}
}

var errTimeout = errors.New("no response within the timeout")

// IsTimeout reports whether err is Recv's timeout.
func IsTimeout(err error) bool { return errors.Is(err, errTimeout) }

// Expect receives the next response (failing the test after 10s), checks
// that it carries exactly the requested names and that every secret passes
// Envoy's validation rules, ACKs it, and returns the secrets by name.
func (s *Stream) Expect() (map[string]*tlsv3.Secret, *discoveryv3.DiscoveryResponse) {
	s.t.Helper()
	resp, err := s.Recv(10 * time.Second)
	require.NoError(s.t, err, "waiting for secrets on %s", s.NodeID)
	secrets := Decode(s.t, resp)
	s.ACK(resp)
	return secrets, resp
}

// ACK acknowledges resp.
func (s *Stream) ACK(resp *discoveryv3.DiscoveryResponse) {
	s.t.Helper()
	require.NoError(s.t, s.s.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: s.NodeID}, TypeUrl: SecretTypeURL, ResourceNames: s.names,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
	}))
}

// ExpectNothing fails if a response arrives within d.
func (s *Stream) ExpectNothing(d time.Duration) {
	s.t.Helper()
	resp, err := s.Recv(d)
	if IsTimeout(err) {
		return
	}
	require.Failf(s.t, "unexpected message", "stream %s got %v (err %v)", s.NodeID, resp, err)
}

// Decode unpacks and validates every secret of resp.
func Decode(t testing.TB, resp *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	require.Equal(t, SecretTypeURL, resp.GetTypeUrl())
	out := map[string]*tlsv3.Secret{}
	for _, a := range resp.GetResources() {
		sec := &tlsv3.Secret{}
		require.NoError(t, a.UnmarshalTo(sec))
		require.NoError(t, sec.ValidateAll(), "secret %q fails Envoy's validation", sec.GetName())
		_, dup := out[sec.GetName()]
		require.False(t, dup, "secret %q twice in one response", sec.GetName())
		out[sec.GetName()] = sec
	}
	return out
}

// Workload is what one data plane holds: its certificate and the trust
// bundle it validates peers with.
type Workload struct {
	Cert  tls.Certificate
	Leaf  *x509.Certificate
	Roots *x509.CertPool
	// BundlePEM is the trust bundle as served.
	BundlePEM []byte
}

// WorkloadFrom builds a Workload from an identity secret and a bundle secret.
func WorkloadFrom(t testing.TB, identity, bundle *tlsv3.Secret) *Workload {
	t.Helper()
	tc := identity.GetTlsCertificate()
	require.NotNil(t, tc, "identity secret %q has no tls_certificate", identity.GetName())
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	cert.Leaf = leaf
	vc := bundle.GetValidationContext()
	require.NotNil(t, vc, "bundle secret %q has no validation_context", bundle.GetName())
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(vc.GetTrustedCa().GetInlineBytes()), "trust bundle holds no certificate")
	return &Workload{Cert: cert, Leaf: leaf, Roots: roots, BundlePEM: vc.GetTrustedCa().GetInlineBytes()}
}

// config is a TLS config that presents w's certificate, trusts only w's
// bundle and requires the peer's certificate to carry wantPeer as URI SAN.
func (w *Workload) config(wantPeer string) *tls.Config {
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("peer sent no certificate")
		}
		for _, u := range cs.PeerCertificates[0].URIs {
			if u.String() == wantPeer {
				return nil
			}
		}
		return fmt.Errorf("peer certificate lacks URI SAN %s (has %v)", wantPeer, cs.PeerCertificates[0].URIs)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{w.Cert},
		RootCAs:      w.Roots,
		ClientCAs:    w.Roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   "unused", // identity is checked by SAN below, as Envoy's SAN matchers do
		MinVersion:   tls.VersionTLS12,
		// Hostname verification is replaced by the SPIFFE check, so the
		// chain is verified by hand in VerifyConnection on the client.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyChain(cs, w.Roots); err != nil {
				return err
			}
			return verify(cs)
		},
	}
}

func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

// Handshake runs a real mutual TLS handshake over loopback TCP between
// server and client, each checking the other's URI SAN, and exchanges a byte.
func Handshake(server, client *Workload, serverID, clientID string) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer lis.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server.config(clientID))
		if err := tc.Handshake(); err != nil {
			srvErr <- fmt.Errorf("server side: %w", err)
			return
		}
		b := make([]byte, 1)
		if _, err := tc.Read(b); err != nil {
			srvErr <- fmt.Errorf("server read: %w", err)
			return
		}
		_, err = tc.Write(b)
		srvErr <- err
	}()
	c, err := net.DialTimeout("tcp", lis.Addr().String(), 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client.config(serverID))
	cliErr := tc.Handshake()
	if cliErr == nil {
		if _, cliErr = tc.Write([]byte{42}); cliErr == nil {
			_, cliErr = tc.Read(make([]byte, 1))
		}
	}
	tc.Close()
	sErr := <-srvErr
	return errors.Join(cliErr, sErr)
}

// SPIFFE returns the SPIFFE id of service in mesh.
func SPIFFE(mesh, service string) string {
	return (&url.URL{Scheme: "spiffe", Host: mesh, Path: "/" + service}).String()
}

// Live is a data plane that follows its secrets as Envoy does: one stream
// per secret, every push applied as it arrives and (unless told otherwise)
// ACKed. Tests read what it currently holds at any moment.
type Live struct {
	t      testing.TB
	mu     sync.Mutex
	id     *tlsv3.Secret
	bundle *tlsv3.Secret
	pushes int
	err    error
}

// Follow opens identity and bundle streams for nodeID on conn and applies
// their pushes in the background until the test ends. With ack false the
// data plane never acknowledges anything, like a stuck Envoy.
func Follow(t testing.TB, conn *grpc.ClientConn, nodeID, identityName, bundleName string, ack bool) *Live {
	t.Helper()
	l := &Live{t: t}
	for _, name := range []string{identityName, bundleName} {
		s := OpenStream(t, conn, nodeID, false, name)
		go func() {
			for {
				resp, err := s.Recv(time.Hour)
				if err != nil {
					l.mu.Lock()
					if !IsTimeout(err) && l.err == nil {
						l.err = err
					}
					l.mu.Unlock()
					return
				}
				var sec tlsv3.Secret
				if len(resp.GetResources()) != 1 || resp.GetResources()[0].UnmarshalTo(&sec) != nil {
					l.mu.Lock()
					l.err = fmt.Errorf("unexpected response for %s: %v", name, resp)
					l.mu.Unlock()
					return
				}
				l.mu.Lock()
				if sec.GetName() == identityName {
					l.id = &sec
				} else {
					l.bundle = &sec
				}
				l.pushes++
				l.mu.Unlock()
				if ack {
					_ = s.Send(&discoveryv3.DiscoveryRequest{
						Node: &corev3.Node{Id: nodeID}, TypeUrl: SecretTypeURL, ResourceNames: []string{name},
						VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
					})
				}
			}
		}()
	}
	return l
}

// Current returns what the data plane holds now, or nil before it has both
// secrets.
func (l *Live) Current() (*Workload, error) {
	l.mu.Lock()
	id, b, err := l.id, l.bundle, l.err
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if id == nil || b == nil {
		return nil, nil
	}
	return workloadFrom(id, b)
}

// WaitFor waits (up to 30 s) until what the data plane holds satisfies ok.
func (l *Live) WaitFor(what string, ok func(*Workload) bool) *Workload {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		w, err := l.Current()
		require.NoError(l.t, err)
		if w != nil && ok(w) {
			return w
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.Failf(l.t, "data plane never got there", "waiting for %s", what)
	return nil
}

// workloadFrom is WorkloadFrom without a test to fail.
func workloadFrom(identity, bundle *tlsv3.Secret) (*Workload, error) {
	tc := identity.GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	cert.Leaf = leaf
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle.GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		return nil, errors.New("trust bundle holds no certificate")
	}
	return &Workload{Cert: cert, Leaf: leaf, Roots: roots, BundlePEM: bundle.GetValidationContext().GetTrustedCa().GetInlineBytes()}, nil
}

// HandshakeLoop runs mutual TLS handshakes between two live data planes, in
// both directions, with whatever each holds at that moment, until stop is
// closed. It returns how many handshakes ran and every failure.
func HandshakeLoop(a, b *Live, aID, bID string, stop <-chan struct{}) (int, []error) {
	n := 0
	var failures []error
	for {
		select {
		case <-stop:
			return n, failures
		default:
		}
		wa, errA := a.Current()
		wb, errB := b.Current()
		if errA != nil || errB != nil {
			return n, append(failures, errors.Join(errA, errB))
		}
		if wa == nil || wb == nil {
			time.Sleep(time.Millisecond)
			continue
		}
		if err := Handshake(wa, wb, aID, bID); err != nil {
			failures = append(failures, fmt.Errorf("handshake %d (%s serves, %s connects): %w", n, aID, bID, err))
		}
		if err := Handshake(wb, wa, bID, aID); err != nil {
			failures = append(failures, fmt.Errorf("handshake %d (%s serves, %s connects): %w", n, bID, aID, err))
		}
		n++
	}
}

// Pushes counts the responses the data plane received so far.
func (l *Live) Pushes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pushes
}

// SignedBy is a WaitFor condition: the certificate is signed by ca and the
// trust bundle is ca alone, as at the end of a CA change to ca.
func SignedBy(ca *pki.KeyPair) func(*Workload) bool {
	return func(w *Workload) bool {
		return w.Leaf.CheckSignatureFrom(ca.Cert) == nil && string(w.BundlePEM) == string(ca.CertPEM)
	}
}
