// Package sds serves data planes their workload certificates and their mesh's
// trust bundle over Envoy's Secret Discovery Service: authentication of
// streams, issuing and caching of workload certificates, the shared cache of
// resolved meshes and the gRPC services (SDS StreamSecrets, DeltaSecrets,
// FetchSecrets, and ADS for the Secret type).
package sds

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshsds/meshsds/internal/grpclite"
)

// SecretTypeURL is the xDS type of the resources meshsds serves.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Shared log keys.
const (
	keyMesh      = "mesh"
	keyDataplane = "dataplane"
	keyErr       = "err"
	keyAPI       = "api"
)

// API labels of streams.
const (
	apiSotW     = "sotw"
	apiDelta    = "delta"
	apiADS      = "ads"
	apiADSDelta = "ads_delta"
	apiFetch    = "fetch"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	Cache   *Cache
	Auth    Authenticator
	Logger  *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
}

// Server implements the SDS and ADS gRPC services over a Cache.
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer

	cache   *Cache
	auth    Authenticator
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time

	shutdown chan struct{} // closed by CloseStreams

	mu      sync.Mutex
	closing error // what CloseStreams ended the streams with
	streams map[*streamInfo]struct{}
	nodes   map[string]int // open streams per node id
}

// NewServer returns a Server; Cache and Auth are required.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Cache == nil || cfg.Auth == nil {
		return nil, errors.New("sds server needs a cache and an authenticator")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = cfg.Cache.metrics
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{
		cache: cfg.Cache, auth: cfg.Auth, log: cfg.Logger, metrics: cfg.Metrics, now: cfg.Now,
		streams: map[*streamInfo]struct{}{}, nodes: map[string]int{}, shutdown: make(chan struct{}),
	}, nil
}

// Register adds the SDS and ADS services to r: FetchSecrets and the
// service descriptions (for reflection) as generated, the four streaming
// methods as event streams (see stream.go).
func (s *Server) Register(r *grpclite.Server) {
	secretv3.RegisterSecretDiscoveryServiceServer(r, s)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(r, s)
	r.HandleStream(methodSotW, s.handler(apiSotW, beginSotW))
	r.HandleStream(methodADS, s.handler(apiADS, beginSotW))
	r.HandleStream(methodDelta, s.handler(apiDelta, beginDelta))
	r.HandleStream(methodADSDelta, s.handler(apiADSDelta, beginDelta))
}

// FetchSecrets answers one request with the current secrets. It fails with
// Unavailable while the secrets cannot be served yet.
func (s *Server) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	s.metrics.requests.WithLabelValues(apiFetch).Inc()
	id, err := s.authenticate(ctx, req.GetNode(), apiFetch)
	if err != nil {
		return nil, err
	}
	if err := checkType(req.GetTypeUrl(), apiFetch); err != nil {
		return nil, err
	}
	select {
	case <-s.cache.Ready():
	default:
		return nil, status.Error(codes.Unavailable, "meshsds is starting: sources not synced yet")
	}
	if s.cache.revoked(id) {
		s.metrics.authFailures.WithLabelValues("revoked").Inc()
		return nil, status.Error(codes.PermissionDenied, "dataplane token revoked")
	}
	w := &watcher{id: id, idKey: id.key()}
	names := canonNames(req.GetResourceNames())
	s.countUnknown(names, nil)
	items, version, _, ready, err := s.collect(w, names, nil)
	if err != nil {
		return nil, status.Error(codes.Internal, "issuing workload certificate failed")
	}
	if !ready {
		return nil, status.Errorf(codes.Unavailable, "secrets not available: %v", s.cache.whyNotServed(id.Mesh))
	}
	resources, err := build(items)
	if err != nil {
		return nil, status.Error(codes.Internal, "serializing secrets failed")
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: version, Resources: resources, TypeUrl: SecretTypeURL}, nil
}

// authenticate runs the Authenticator and counts and logs a refusal.
func (s *Server) authenticate(ctx context.Context, node *corev3.Node, api string) (*Identity, error) {
	id, err := s.auth.Authenticate(ctx, node)
	if err == nil {
		return id, nil
	}
	var ae *AuthError
	if !errors.As(err, &ae) {
		ae = &AuthError{Code: codes.Unauthenticated, Reason: "other", Msg: "authentication failed"}
	}
	s.metrics.authFailures.WithLabelValues(ae.Reason).Inc()
	s.log.Warn("refused data plane", keyAPI, api, keyDataplane, node.GetId(), "reason", ae.Reason, keyErr, err)
	return nil, ae
}

// checkType accepts the Secret type (or none, on the SDS services).
func checkType(typeURL, api string) error {
	if typeURL == SecretTypeURL || (typeURL == "" && api != apiADS && api != apiADSDelta) {
		return nil
	}
	return status.Errorf(codes.InvalidArgument, "meshsds serves only %s, not %q", SecretTypeURL, typeURL)
}

// checkNode enforces that a stream's node never changes.
func checkNode(id *Identity, node *corev3.Node) error {
	if node.GetId() != "" && node.GetId() != id.NodeID() {
		return status.Error(codes.InvalidArgument, "node id cannot change on a stream")
	}
	return nil
}

// closingErr is what CloseStreams ended the streams with.
func (s *Server) closingErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// revokedErr closes a stream whose token was revoked.
func (s *Server) revokedErr(id *Identity) error {
	s.metrics.revokedClosures.Inc()
	s.metrics.authFailures.WithLabelValues("revoked").Inc()
	s.log.Info("closing stream of revoked token", keyMesh, id.Mesh, keyDataplane, id.Name)
	return status.Error(codes.PermissionDenied, "dataplane token revoked")
}

// beginSotW starts a state-of-the-world stream: it answers each new set of
// names, records ACKs and NACKs, and pushes when the cache wakes it.
func beginSotW(s *Server, st *stream, raw []byte) (func([]byte) error, func() error, error) {
	first := &discoveryv3.DiscoveryRequest{}
	if err := proto.Unmarshal(raw, first); err != nil {
		return nil, nil, status.Error(codes.InvalidArgument, "malformed DiscoveryRequest")
	}
	if err := st.open(first.GetNode()); err != nil {
		return nil, nil, err
	}
	api, id, w, info := st.api, st.id, st.w, st.info
	var (
		names       []string
		nonce       int
		lastNonce   string
		lastVersion = first.GetVersionInfo() // a reconnecting Envoy may hold it already
		sentTag     ackTag                   // what the last response carried, for CA changes
	)
	push := func() error {
		items, version, tag, ready, err := s.collect(w, names, info)
		if err != nil {
			s.log.Error("building response", keyMesh, id.Mesh, keyDataplane, id.Name, keyErr, err)
			return nil // retried on the next change; the stream stays up
		}
		if !ready || len(items) == 0 {
			return nil
		}
		if version == lastVersion {
			if lastNonce == "" {
				// The data plane came with exactly this: it holds it.
				s.cache.acked(w, tag)
			}
			return nil
		}
		resources, err := build(items)
		if err != nil {
			s.log.Error("building response", keyMesh, id.Mesh, keyDataplane, id.Name, keyErr, err)
			return nil
		}
		nonce++
		lastNonce = strconv.Itoa(nonce)
		err = st.gs.SendEncoded(func(b []byte) ([]byte, error) {
			return appendDiscoveryResponse(b, version, resources, lastNonce), nil
		})
		if err != nil {
			return err
		}
		lastVersion, sentTag = version, tag
		s.sent(w, names)
		return nil
	}
	handle := func(req *discoveryv3.DiscoveryRequest) error {
		if err := checkNode(id, req.GetNode()); err != nil {
			return err
		}
		if api == apiADS && req.GetTypeUrl() != SecretTypeURL {
			s.log.Debug("ignoring ADS request for another type", keyDataplane, id.NodeID(), "type", req.GetTypeUrl())
			return nil
		}
		if err := checkType(req.GetTypeUrl(), api); err != nil {
			return err
		}
		if n := req.GetResponseNonce(); n != "" {
			if n != lastNonce {
				return nil // answers an older response: superseded
			}
			s.recordAck(info, api, req.GetVersionInfo(), req.GetErrorDetail())
			if req.GetErrorDetail() == nil {
				s.cache.acked(w, sentTag)
			}
		}
		newNames := canonNames(req.GetResourceNames())
		if slices.Equal(newNames, names) {
			return nil
		}
		s.countUnknown(newNames, info)
		names = newNames
		w.interest.Store(interestOf(names))
		info.setNames(names)
		return push()
	}
	if err := handle(first); err != nil {
		return nil, nil, err
	}
	return func(raw []byte) error {
		req := &discoveryv3.DiscoveryRequest{}
		if err := proto.Unmarshal(raw, req); err != nil {
			return status.Error(codes.InvalidArgument, "malformed DiscoveryRequest")
		}
		return handle(req)
	}, push, nil
}

// beginDelta starts an incremental stream: it tracks the subscribed names
// and the version of each it sent, and sends only what changed.
func beginDelta(s *Server, st *stream, raw []byte) (func([]byte) error, func() error, error) {
	first := &discoveryv3.DeltaDiscoveryRequest{}
	if err := proto.Unmarshal(raw, first); err != nil {
		return nil, nil, status.Error(codes.InvalidArgument, "malformed DeltaDiscoveryRequest")
	}
	if err := st.open(first.GetNode()); err != nil {
		return nil, nil, err
	}
	api, id, w, info := st.api, st.id, st.w, st.info
	subscribed := map[string]struct{}{}
	sent := map[string]string{}
	for name, v := range first.GetInitialResourceVersions() {
		sent[name] = v
	}
	var (
		nonce     int
		lastNonce string
		sentTag   ackTag
	)
	push := func() error {
		names := make([]string, 0, len(subscribed))
		for n := range subscribed {
			names = append(names, n)
		}
		sort.Strings(names)
		var (
			out      []*discoveryv3.Resource
			tag, had ackTag
		)
		for _, name := range names {
			it, ok, err := s.resource(w, name, info)
			if err == nil && ok && sent[name] != it.version {
				it.res, err = it.build()
			}
			if err != nil {
				s.log.Error("building response", keyMesh, id.Mesh, keyDataplane, id.Name, keyErr, err)
				return nil
			}
			if !ok {
				continue
			}
			if sent[name] == it.version {
				had = had.with(it.tag)
				continue
			}
			tag = tag.with(it.tag)
			out = append(out, &discoveryv3.Resource{Name: name, Version: it.version, Resource: it.res})
		}
		if len(out) == 0 {
			if lastNonce == "" && had != (ackTag{}) {
				s.cache.acked(w, had) // announced in initial_resource_versions
			}
			return nil
		}
		nonce++
		lastNonce = strconv.Itoa(nonce)
		resp := &discoveryv3.DeltaDiscoveryResponse{Resources: out, TypeUrl: SecretTypeURL, Nonce: lastNonce}
		if err := st.gs.Send(resp); err != nil {
			return err
		}
		sentTag = tag
		sentNames := make([]string, 0, len(out))
		for _, r := range out {
			sent[r.Name] = r.Version
			sentNames = append(sentNames, r.Name)
		}
		s.sent(w, sentNames)
		return nil
	}
	handle := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if err := checkNode(id, req.GetNode()); err != nil {
			return err
		}
		if api == apiADSDelta && req.GetTypeUrl() != SecretTypeURL {
			s.log.Debug("ignoring ADS request for another type", keyDataplane, id.NodeID(), "type", req.GetTypeUrl())
			return nil
		}
		if err := checkType(req.GetTypeUrl(), api); err != nil {
			return err
		}
		if n := req.GetResponseNonce(); n != "" && n == lastNonce {
			s.recordAck(info, api, "", req.GetErrorDetail())
			if req.GetErrorDetail() == nil {
				s.cache.acked(w, sentTag)
			}
		}
		changed := false
		for _, name := range req.GetResourceNamesUnsubscribe() {
			if _, ok := subscribed[name]; ok {
				delete(subscribed, name)
				delete(sent, name)
				changed = true
			}
		}
		var added []string
		for _, name := range req.GetResourceNamesSubscribe() {
			if name == "*" {
				continue // secrets are always named; a wildcard adds none
			}
			if _, ok := subscribed[name]; !ok {
				subscribed[name] = struct{}{}
				added = append(added, name)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		s.countUnknown(added, info)
		all := make([]string, 0, len(subscribed))
		for n := range subscribed {
			all = append(all, n)
		}
		sort.Strings(all)
		w.interest.Store(interestOf(all))
		info.setNames(all)
		return push()
	}
	if err := handle(first); err != nil {
		return nil, nil, err
	}
	return func(raw []byte) error {
		req := &discoveryv3.DeltaDiscoveryRequest{}
		if err := proto.Unmarshal(raw, req); err != nil {
			return status.Error(codes.InvalidArgument, "malformed DeltaDiscoveryRequest")
		}
		return handle(req)
	}, push, nil
}

// appendDiscoveryResponse appends the wire form of a DiscoveryResponse of
// Secrets, the one message every push sends: by hand, in field order, as
// proto.Marshal with Deterministic would, without its reflection and at a
// fraction of its stack depth on the goroutines that push (see
// TestAppendDiscoveryResponseIsProtoMarshal).
func appendDiscoveryResponse(b []byte, version string, resources []*anypb.Any, nonce string) []byte {
	const (
		fieldVersion   = 1
		fieldResources = 2
		fieldTypeURL   = 4
		fieldNonce     = 5
		anyTypeURL     = 1
		anyValue       = 2
	)
	if version != "" {
		b = protowire.AppendTag(b, fieldVersion, protowire.BytesType)
		b = protowire.AppendString(b, version)
	}
	for _, r := range resources {
		size := 0
		if r.GetTypeUrl() != "" {
			size += protowire.SizeTag(anyTypeURL) + protowire.SizeBytes(len(r.GetTypeUrl()))
		}
		if len(r.GetValue()) > 0 {
			size += protowire.SizeTag(anyValue) + protowire.SizeBytes(len(r.GetValue()))
		}
		b = protowire.AppendTag(b, fieldResources, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		if r.GetTypeUrl() != "" {
			b = protowire.AppendTag(b, anyTypeURL, protowire.BytesType)
			b = protowire.AppendString(b, r.GetTypeUrl())
		}
		if len(r.GetValue()) > 0 {
			b = protowire.AppendTag(b, anyValue, protowire.BytesType)
			b = protowire.AppendBytes(b, r.GetValue())
		}
	}
	b = protowire.AppendTag(b, fieldTypeURL, protowire.BytesType)
	b = protowire.AppendString(b, SecretTypeURL)
	if nonce != "" {
		b = protowire.AppendTag(b, fieldNonce, protowire.BytesType)
		b = protowire.AppendString(b, nonce)
	}
	return b
}

// item is a secret as it is served to one stream now: its version and
// what to build it from. A trust bundle is built already, shared by every
// stream; a workload certificate is serialized only when it is sent.
type item struct {
	name    string
	version string
	tag     ackTag
	res     *anypb.Any // the resource, once built
	cert    *certEntry
}

func (it *item) build() (*anypb.Any, error) {
	if it.res != nil {
		return it.res, nil
	}
	return it.cert.resource(it.name)
}

// build returns the resources of items.
func build(items []item) ([]*anypb.Any, error) {
	out := make([]*anypb.Any, 0, len(items))
	for i := range items {
		res, err := items[i].build()
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

// resource returns the current secret called name for w's data plane; ok
// is false for unknown names and while the mesh has no CA.
func (s *Server) resource(w *watcher, name string, info *streamInfo) (it item, ok bool, err error) {
	switch kindOf(name) {
	case kindIdentity:
		e, ok, err := s.cache.identityCert(w)
		if err != nil || !ok {
			return item{}, false, err
		}
		if info != nil {
			info.setCert(e.cert.Serial, e.cert.NotAfter)
		}
		return item{name: name, version: e.version, tag: ackTag{ca: e.caVersion}, cert: e}, true, nil
	case kindBundle:
		res, version, ok := s.cache.bundle(w.id.Mesh, name)
		return item{name: name, version: version, tag: ackTag{bundle: version}, res: res}, ok, nil
	}
	return item{}, false, nil
}

// collect gathers a state-of-the-world answer for names: the known ones, in
// order, and one version over all of them. ready is false while any known
// name cannot be served yet, so that a reply is never partial.
func (s *Server) collect(w *watcher, names []string, info *streamInfo) (items []item, version string, tag ackTag, ready bool, err error) {
	versions := make([][]byte, 0, 2*len(names))
	for _, name := range names {
		if kindOf(name) == kindUnknown {
			continue
		}
		it, ok, err := s.resource(w, name, info)
		if err != nil {
			return nil, "", ackTag{}, false, err
		}
		if !ok {
			return nil, "", ackTag{}, false, nil
		}
		items = append(items, it)
		versions = append(versions, []byte(name), []byte(it.version))
		tag = tag.with(it.tag)
	}
	if len(items) == 0 {
		return nil, "", ackTag{}, true, nil
	}
	return items, contentVersion(versions...), tag, true, nil
}

// sent counts a response carrying names and observes its push latency.
func (s *Server) sent(w *watcher, names []string) {
	for _, name := range names {
		switch kindOf(name) {
		case kindIdentity:
			s.metrics.responses.WithLabelValues(NameIdentityCert).Inc()
		case kindBundle:
			s.metrics.responses.WithLabelValues(NameMeshCA).Inc()
		}
	}
	if since := w.since.Swap(0); since != 0 {
		s.metrics.pushLatency.Observe(s.now().Sub(time.Unix(0, since)).Seconds())
	}
}

// recordAck notes an ACK or, with detail set, a NACK. A NACK is not answered
// by sending the same content again.
func (s *Server) recordAck(info *streamInfo, api, version string, detail *rpcstatus.Status) {
	now := s.now()
	info.mu.Lock()
	defer info.mu.Unlock()
	if detail != nil {
		s.metrics.nacks.WithLabelValues(api).Inc()
		info.lastNACK = now
		info.lastNACKMessage = detail.GetMessage()
		s.log.Warn("data plane rejected secrets", keyMesh, info.id.Mesh, keyDataplane, info.id.Name, keyAPI, api, "message", detail.GetMessage())
		return
	}
	if info.acks != nil {
		info.acks.Inc()
	} else {
		s.metrics.acks.WithLabelValues(api).Inc()
	}
	info.lastACK = now
	info.lastACKVersion = version
}

// countUnknown counts the names meshsds does not serve and shows them in the
// stream's status.
func (s *Server) countUnknown(names []string, info *streamInfo) {
	var unknown []string
	for _, n := range names {
		if kindOf(n) == kindUnknown {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) == 0 {
		return
	}
	s.metrics.unknownNames.Add(float64(len(unknown)))
	if info != nil {
		info.mu.Lock()
		info.unknown = unknown
		info.mu.Unlock()
	}
}

// canonNames sorts and de-duplicates requested names. Names that are
// already (every ACK repeats the names of the last request) are returned
// as they are.
func canonNames(names []string) []string {
	strict := true
	for i := 1; i < len(names) && strict; i++ {
		strict = names[i-1] < names[i]
	}
	if strict {
		return names
	}
	out := slices.Clone(names)
	sort.Strings(out)
	return slices.Compact(out)
}

func interestOf(names []string) uint32 {
	var in uint32
	for _, n := range names {
		switch kindOf(n) {
		case kindIdentity:
			in |= wantIdentity
		case kindBundle:
			in |= wantBundle
		}
	}
	return in
}
