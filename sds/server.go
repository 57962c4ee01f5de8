// Package sds serves data planes their workload certificates and their
// mesh's trust bundle over Envoy's Secret Discovery Service. It is the
// server around the protocol: it authenticates each stream (Authenticator),
// checks revocation, closes streams whose credential expires, keeps every
// stream's status for /dataplanes, counts and logs what streams do, and
// serves it all on either transport of the SDS port.
//
// The discovery protocol itself is sds/xds; the serving state (meshes,
// workload certificates, CA changes) is sds/cache, which the server reads
// through the Secrets interface. Dataplane tokens are sds/token.
package sds

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/sds/xds"
)

// Secrets is the serving state as the server reads it; sds/cache
// implements it. All methods may be called concurrently.
type Secrets interface {
	// Ready is closed once the state holds the first complete view of
	// every source; streams are answered nothing before.
	Ready() <-chan struct{}
	// Watch registers a stream of id. wake is called, never blocking and
	// from any goroutine, when a secret the stream subscribes to may have
	// changed; it may be nil for a one-off read. The caller must Close the
	// Watch.
	Watch(id *Identity, wake func()) Watch
	// WhyNotServed says why mesh cannot be served now, or nil.
	WhyNotServed(mesh string) error
	// Revoked reports whether id's token is on its mesh's revocation
	// list.
	Revoked(id *Identity) bool
}

// Watch is one stream's registration with the serving state. Its methods
// are called by the stream that owns it, one at a time.
type Watch interface {
	// Resource returns the current secret called name (see xds.Resourcer).
	xds.Resourcer
	// Subscribe records the names the stream subscribes to; it is woken
	// only for changes of those. names is not kept.
	Subscribe(names []string)
	// Held records what the data plane holds now (see xds.Handler).
	Held(t xds.Tag)
	// Revoked reports whether the stream's token is revoked.
	Revoked() bool
	// TakeChangedAt returns when the earliest change not yet served to the
	// stream happened, and forgets it.
	TakeChangedAt() (time.Time, bool)
	// Cert returns the serial and expiry of the workload certificate last
	// served to the stream.
	Cert() (serial string, notAfter time.Time, ok bool)
	// Close unregisters the stream.
	Close()
}

// ServerConfig configures a Server.
type ServerConfig struct {
	Secrets Secrets
	Auth    Authenticator
	Logger  *slog.Logger
	// Metrics are the server's; nil keeps them unexported.
	Metrics *Metrics
	Now     func() time.Time
}

// Server implements the SDS and ADS gRPC services: it opens every stream of
// the protocol (xds.Opener) and answers FetchSecrets.
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer

	secrets Secrets
	auth    Authenticator
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time

	shutdown chan struct{} // closed by CloseStreams

	mu      sync.Mutex
	closing error // what CloseStreams ended the streams with
	streams map[*stream]struct{}
	nodes   map[string]int // open streams per node id
}

var _ xds.Opener = (*Server)(nil)

// NewServer returns a Server; Secrets and Auth are required.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Secrets == nil || cfg.Auth == nil {
		return nil, errors.New("sds server needs secrets and an authenticator")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics, _ = NewMetrics(nil) // nothing to register: cannot fail
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{
		secrets: cfg.Secrets, auth: cfg.Auth, log: cfg.Logger, metrics: cfg.Metrics, now: cfg.Now,
		streams: map[*stream]struct{}{}, nodes: map[string]int{}, shutdown: make(chan struct{}),
	}, nil
}

// Open implements xds.Opener: it authenticates the stream by its first
// request's node, waits until the secrets are ready, refuses a revoked
// token, and registers the stream.
func (s *Server) Open(ctx context.Context, api xds.API, node *corev3.Node, ctl xds.Control) (xds.Handler, error) {
	s.metrics.requests.WithLabelValues(api.String()).Inc()
	id, err := s.authenticate(ctx, node, api)
	if err != nil {
		return nil, err
	}
	select {
	case <-s.secrets.Ready():
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.shutdown:
		return nil, s.closingErr()
	}
	w := s.secrets.Watch(id, ctl.Wake)
	if w.Revoked() {
		w.Close()
		s.metrics.authFailures.WithLabelValues(errRevoked.Reason).Inc()
		return nil, errRevoked
	}
	st := &stream{
		s: s, id: id, api: api, ctl: ctl, w: w, connected: s.now(),
		// Looked up once, counted per request, ACK and push.
		requests:     s.metrics.requests.WithLabelValues(api.String()),
		acks:         s.metrics.acks.WithLabelValues(api.String(), id.Mesh),
		identitySent: s.metrics.responses.WithLabelValues(NameIdentityCert, id.Mesh),
		bundleSent:   s.metrics.responses.WithLabelValues(NameMeshCA, id.Mesh),
	}
	if err := s.track(st); err != nil {
		w.Close()
		return nil, err
	}
	s.metrics.activeStreams.WithLabelValues(api.String()).Inc()
	// An expired token must not keep a stream, which would otherwise be
	// handed renewed certificates for ever.
	if !id.Expires.IsZero() {
		st.expiry = time.AfterFunc(id.Expires.Sub(s.now()), st.expire)
	}
	return st, nil
}

// FetchSecrets answers one request with the current secrets. It fails with
// Unavailable while the secrets cannot be served yet.
func (s *Server) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	s.metrics.requests.WithLabelValues(xds.Fetch.String()).Inc()
	id, err := s.authenticate(ctx, req.GetNode(), xds.Fetch)
	if err != nil {
		return nil, err
	}
	if err := xds.CheckType(xds.Fetch, req.GetTypeUrl()); err != nil {
		return nil, err
	}
	select {
	case <-s.secrets.Ready():
	default:
		return nil, status.Error(codes.Unavailable, "meshsds is starting: sources not synced yet")
	}
	w := s.secrets.Watch(id, nil)
	defer w.Close()
	if w.Revoked() {
		s.metrics.authFailures.WithLabelValues(errRevoked.Reason).Inc()
		return nil, errRevoked
	}
	names := xds.CanonNames(req.GetResourceNames())
	s.countUnknown(names)
	resp, ready, err := xds.Collect(w, names)
	if err != nil {
		s.log.Error("building response", LogMesh, id.Mesh, LogDataplane, id.Name, LogErr, err)
		return nil, status.Error(codes.Internal, "issuing workload certificate failed")
	}
	if !ready {
		return nil, status.Errorf(codes.Unavailable, "secrets not available: %v", s.secrets.WhyNotServed(id.Mesh))
	}
	resources, err := resp.Build()
	if err != nil {
		s.log.Error("building response", LogMesh, id.Mesh, LogDataplane, id.Name, LogErr, err)
		return nil, status.Error(codes.Internal, "serializing secrets failed")
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: resp.Version(), Resources: resources, TypeUrl: xds.TypeSecret}, nil
}

// PublicMethods are the methods of the SDS port served without a
// credential: health checks and reflection. They authenticate nothing.
var PublicMethods = []string{
	"/grpc.health.v1.Health/Check",
	"/grpc.health.v1.Health/Watch",
	"/grpc.health.v1.Health/List",
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

// Authorize refuses, when its headers arrive and before any of its body is
// read, a stream of an SDS or ADS method that carries no valid credential
// or a revoked one (when the Authenticator is a Prechecker): it is the
// transports' header hook (grpclite's Authorize, grpc-go's tap handle), and
// what it admits marks the connection authenticated. The refusal is counted
// by reason; it is logged at debug level only, as anyone can cause it.
func (s *Server) Authorize(ctx context.Context, _ string) error {
	pc, ok := s.auth.(Prechecker)
	if !ok {
		return nil
	}
	id, err := pc.Precheck(ctx)
	if err == nil {
		if !s.secrets.Revoked(id) {
			return nil
		}
		// Before the sources are synced no list is known: Open checks
		// again once they are.
		err = errRevoked
	}
	var ae *AuthError
	if !errors.As(err, &ae) {
		ae = &AuthError{Code: codes.Unauthenticated, Reason: "other", Msg: "authentication failed"}
	}
	s.metrics.authFailures.WithLabelValues(ae.Reason).Inc()
	s.log.Debug("refused a stream at its headers", "reason", ae.Reason, LogErr, err)
	return ae
}

// authenticate runs the Authenticator and counts and logs a refusal.
func (s *Server) authenticate(ctx context.Context, node *corev3.Node, api xds.API) (*Identity, error) {
	id, err := s.auth.Authenticate(ctx, node)
	if err == nil {
		return id, nil
	}
	var ae *AuthError
	if !errors.As(err, &ae) {
		ae = &AuthError{Code: codes.Unauthenticated, Reason: "other", Msg: "authentication failed"}
	}
	s.metrics.authFailures.WithLabelValues(ae.Reason).Inc()
	s.log.Warn("refused data plane", LogAPI, api.String(), LogDataplane, node.GetId(), "reason", ae.Reason, LogErr, err)
	return nil, ae
}

// countUnknown counts the names meshsds does not serve and returns them.
func (s *Server) countUnknown(names []string) []string {
	var unknown []string
	for _, n := range names {
		if KindOf(n) == KindUnknown {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		s.metrics.unknownNames.Add(float64(len(unknown)))
	}
	return unknown
}

// closingErr is what CloseStreams ended the streams with.
func (s *Server) closingErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// track registers an open stream.
func (s *Server) track(st *stream) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		return s.closing // shutting down: CloseStreams has passed
	}
	s.streams[st] = struct{}{}
	s.nodes[st.id.NodeID()]++
	s.metrics.dataplanes.Set(float64(len(s.nodes)))
	return nil
}

// untrack forgets a closed stream.
func (s *Server) untrack(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, st)
	node := st.id.NodeID()
	if s.nodes[node]--; s.nodes[node] <= 0 {
		delete(s.nodes, node)
	}
	s.metrics.dataplanes.Set(float64(len(s.nodes)))
}

// CloseStreams ends every open stream with err, such as Unavailable on
// shutdown, and refuses streams opened from now on with it. It does not wait
// for them to end.
func (s *Server) CloseStreams(err error) {
	s.mu.Lock()
	if s.closing == nil {
		s.closing = err
		close(s.shutdown)
	}
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	for _, st := range streams {
		st.ctl.Close(err)
	}
}
