// Package loadgen simulates a fleet of Envoy data planes against an SDS
// server: each data plane is its own gRPC connection with one stream per
// secret (what Envoy does without ADS), or one ADS stream, or delta streams.
// It measures how long it takes until every stream is served (the connection
// storm) and, after a change such as a CA rotation, how long until every
// stream holds the new secrets (the fan-out). It also carries the benchmark
// driver behind "make bench" (see Bench).
//
// The streams behave like Envoy's: they ACK what they accept and NACK what
// they cannot use, without ever resending the same request in a loop.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// SecretTypeURL is the xDS type of SDS secrets.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// The secrets every simulated data plane asks for.
const (
	NameIdentity = "identity_cert"
	NameBundle   = "mesh_ca"
)

// API is how the simulated data planes talk to the server.
type API string

// Supported APIs.
const (
	// APISotW opens one SDS StreamSecrets stream per secret, as Envoy does
	// for SDS without ADS: two streams per data plane.
	APISotW API = "sotw"
	// APIDelta opens one DeltaSecrets stream per secret.
	APIDelta API = "delta"
	// APIADS opens one ADS state-of-the-world stream asking for both.
	APIADS API = "ads"
	// APIADSDelta opens one ADS delta stream subscribing to both.
	APIADSDelta API = "ads-delta"
)

// ParseAPI checks s names a supported API.
func ParseAPI(s string) (API, error) {
	switch a := API(s); a {
	case APISotW, APIDelta, APIADS, APIADSDelta:
		return a, nil
	}
	return "", fmt.Errorf("api must be sotw, delta, ads or ads-delta, not %q", s)
}

// Kind says what a secret is.
type Kind int

// Kinds of secrets.
const (
	KindIdentity Kind = iota
	KindBundle
)

func (k Kind) String() string {
	if k == KindBundle {
		return NameBundle
	}
	return NameIdentity
}

// Config configures a Fleet.
type Config struct {
	// Addr is the SDS server's host:port, or several separated by commas
	// (replicas): data plane i connects to the (i mod n)th.
	Addr string
	// DataPlanes is how many Envoys to simulate.
	DataPlanes int
	// Mesh the data planes belong to; names are Prefix + index.
	Mesh   string
	Prefix string
	// API of the streams; default APISotW.
	API API
	// Token returns the dataplane token of data plane i (node id
	// "<mesh>.<prefix><i>"), or "" to send none (server with --auth none).
	// Nil sends none.
	Token func(i int) string
	// Concurrency bounds how many data planes are connecting at once
	// (dialed, and not yet holding both secrets); default 2000. Like a
	// fleet reconnecting with backoff, it keeps the simulated storm from
	// overflowing the kernel's accept queue, whose SYNs would otherwise be
	// retried only after a second.
	Concurrency int
	// Client is the gRPC client implementation: ClientH2 (default) or
	// ClientGRPCGo.
	Client string
	// Reconnect makes a data plane whose stream ends reconnect as Envoy
	// does: it closes its connection, waits a jittered backoff and dials
	// the next address of Addr, until it holds both secrets again. Its
	// streams' ends are then counted by Failover, not by Errors.
	Reconnect bool
}

// Reconnection backoff: Envoy's default for xDS streams starts at 500 ms
// (jittered) and grows to 30 s; this one is shorter, to measure failover
// rather than wait for it.
const (
	reconnectBase = 100 * time.Millisecond
	reconnectMax  = 2 * time.Second
)

// Clients.
const (
	// ClientH2 speaks gRPC over golang.org/x/net/http2 directly (see h2.go).
	ClientH2 = "h2"
	// ClientGRPCGo uses a grpc-go ClientConn per data plane.
	ClientGRPCGo = "grpc-go"
)

// Fleet is a running set of simulated data planes.
type Fleet struct {
	cfg   Config
	slots []*slot

	connMu sync.Mutex
	conns  []io.Closer // by data plane
	closed bool        // by Close: a connection made after is closed at once

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// connecting tracks each data plane until it holds both secrets the
	// first time; release frees its place among cfg.Concurrency.
	connecting []connecting
	release    func(dp int)
	storm      *phase

	phase    atomic.Pointer[phase]
	errs     atomic.Int64
	nacks    atomic.Int64
	errMu    sync.Mutex
	firstErr error

	// With Config.Reconnect.
	dps        []dpState
	reconnects atomic.Int64
	failMu     sync.Mutex
	failover   []time.Duration // from a connection's loss until served again
}

// dpState is a data plane's connection, as Config.Reconnect replaces it.
type dpState struct {
	mu sync.Mutex
	// gen numbers the data plane's connections; the end of a stream of an
	// older one is ignored.
	gen   int
	tries int       // dials so far: the next goes to address dp+tries
	down  time.Time // when the connection was lost, until served again
	// waiting is, by Kind, whether a secret is still to arrive on the new
	// connection.
	waiting [2]bool
}

type connecting struct {
	left atomic.Int32 // secrets not yet served
	once sync.Once
}

// slot is one secret held by one stream: its latest version and content and,
// for the current phase, when it first changed.
type slot struct {
	dp   int
	kind Kind
	name string

	mu        sync.Mutex
	version   uint64 // a hash of the content; 0 before the first
	secret    *tlsv3.Secret
	base      uint64 // version at the start of the phase
	counted   *phase
	arrivedAt time.Time // when it changed in the counted phase
}

// phase is one measurement: the storm or one change. It is done when every
// slot of the kinds it watches received a version other than its base.
type phase struct {
	watch [2]bool // by Kind
	// finalBundle, when set, is the trust bundle a bundle slot must hold to
	// count: a CA change first adds the new CA to the bundle and only at
	// its end drops the old one.
	finalBundle []byte
	pending     atomic.Int64
	done        chan struct{}
	unexpected  atomic.Int64 // changes of slots it does not watch
}

func newPhase(slots []*slot, kinds ...Kind) *phase {
	p := &phase{done: make(chan struct{})}
	for _, k := range kinds {
		p.watch[k] = true
	}
	n := 0
	for _, sl := range slots {
		if p.watch[sl.kind] {
			n++
		}
	}
	p.pending.Store(int64(n))
	if n == 0 {
		close(p.done)
	}
	return p
}

// Start connects every data plane and opens its streams, at most
// cfg.Concurrency at a time, and returns once all are opened (not yet
// served: see WaitServed). ctx bounds the whole life of the fleet; Close
// ends it.
func Start(ctx context.Context, cfg Config) (*Fleet, time.Time, error) {
	if cfg.DataPlanes <= 0 {
		return nil, time.Time{}, errors.New("dataplanes must be positive")
	}
	if cfg.API == "" {
		cfg.API = APISotW
	}
	if _, err := ParseAPI(string(cfg.API)); err != nil {
		return nil, time.Time{}, err
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 2000
	}
	switch cfg.Client {
	case "":
		cfg.Client = ClientH2
	case ClientH2, ClientGRPCGo:
	default:
		return nil, time.Time{}, fmt.Errorf("client must be %s or %s, not %q", ClientH2, ClientGRPCGo, cfg.Client)
	}
	if cfg.Mesh == "" {
		cfg.Mesh = "default"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "dp-"
	}
	fctx, cancel := context.WithCancel(ctx)
	f := &Fleet{cfg: cfg, conns: make([]io.Closer, cfg.DataPlanes), ctx: fctx, cancel: cancel}
	if cfg.Reconnect {
		f.dps = make([]dpState, cfg.DataPlanes)
	}
	for i := range cfg.DataPlanes {
		f.slots = append(f.slots, &slot{dp: i, kind: KindIdentity, name: NameIdentity}, &slot{dp: i, kind: KindBundle, name: NameBundle})
	}
	f.storm = newPhase(f.slots, KindIdentity, KindBundle)
	f.phase.Store(f.storm)

	start := time.Now()
	sem := make(chan struct{}, cfg.Concurrency)
	f.connecting = make([]connecting, cfg.DataPlanes)
	for i := range f.connecting {
		f.connecting[i].left.Store(2)
	}
	f.release = func(i int) { f.connecting[i].once.Do(func() { <-sem }) }
	var wg sync.WaitGroup
	var dialErr atomic.Pointer[error]
	for i := range cfg.DataPlanes {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.connect(i, 0, f.addr(i)); err != nil {
				dialErr.CompareAndSwap(nil, &err)
				f.release(i)
			}
		}()
	}
	wg.Wait()
	if p := dialErr.Load(); p != nil {
		f.Close()
		return nil, time.Time{}, *p
	}
	return f, start, nil
}

// tokenCreds sends a dataplane token with every call, as Envoy's
// initial_metadata does.
type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return false }

// gRPC methods the simulated data planes call.
const (
	methodSotW     = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
	methodDelta    = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"
	methodADS      = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	methodADSDelta = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

// bidiStream is a client stream of Req and Resp, as grpc-go generates it.
type bidiStream[Req, Resp any] interface {
	Send(Req) error
	Recv() (Resp, error)
}

type (
	sotwStream  = bidiStream[*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse]
	deltaStream = bidiStream[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse]
)

// streamOpen is one stream a data plane opens, and the secrets it carries.
type streamOpen struct {
	method string
	slots  []*slot
}

// streamsOf lists the streams of a data plane holding id and bundle.
func (f *Fleet) streamsOf(id, bundle *slot) []streamOpen {
	switch f.cfg.API {
	case APISotW:
		return []streamOpen{{methodSotW, []*slot{id}}, {methodSotW, []*slot{bundle}}}
	case APIADS:
		return []streamOpen{{methodADS, []*slot{id, bundle}}}
	case APIDelta:
		return []streamOpen{{methodDelta, []*slot{id}}, {methodDelta, []*slot{bundle}}}
	}
	return []streamOpen{{methodADSDelta, []*slot{id, bundle}}}
}

// connect dials data plane i at addr and opens its streams, which belong to
// its connection gen.
func (f *Fleet) connect(i, gen int, addr string) error {
	token := ""
	if f.cfg.Token != nil {
		token = f.cfg.Token(i)
	}
	node := &corev3.Node{Id: f.cfg.Mesh + "." + f.cfg.Prefix + strconv.Itoa(i), Cluster: f.cfg.Prefix + strconv.Itoa(i)}
	id, bundle := f.slots[2*i], f.slots[2*i+1]
	var (
		sotw  func(method string) (sotwStream, error)
		delta func(method string) (deltaStream, error)
	)
	if f.cfg.Client == ClientGRPCGo {
		conn, err := f.dialGRPC(addr, token)
		if err != nil {
			return err
		}
		if !f.setConn(i, conn) {
			return f.ctx.Err()
		}
		sotw = func(method string) (sotwStream, error) {
			if method == methodADS {
				return discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(f.ctx)
			}
			return secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(f.ctx)
		}
		delta = func(method string) (deltaStream, error) {
			if method == methodADSDelta {
				return discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(f.ctx)
			}
			return secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(f.ctx)
		}
	} else {
		conn, err := dialH2(f.ctx, addr, token)
		if err != nil {
			return fmt.Errorf("dialing %s: %w", addr, err)
		}
		if !f.setConn(i, conn) {
			return f.ctx.Err()
		}
		return f.openH2(conn, node, gen, id, bundle)
	}
	opens := f.streamsOf(id, bundle)
	for _, o := range opens {
		var err error
		dp := o.slots[0].dp
		if o.method == methodSotW || o.method == methodADS {
			var st sotwStream
			if st, err = sotw(o.method); err == nil {
				err = runStream(f, st, sotwFirst(node, o.slots), f.sotwAnswer(o.slots), dp, gen)
			}
		} else {
			var st deltaStream
			if st, err = delta(o.method); err == nil {
				err = runStream(f, st, deltaFirst(node, o.slots), f.deltaAnswer(o.slots), dp, gen)
			}
		}
		if err != nil {
			return fmt.Errorf("opening stream: %w", err)
		}
	}
	return nil
}

// setConn records data plane i's connection for Close, or closes it and
// returns false when the fleet is closed already.
func (f *Fleet) setConn(i int, c io.Closer) bool {
	f.connMu.Lock()
	if f.closed {
		f.connMu.Unlock()
		_ = c.Close()
		return false
	}
	f.conns[i] = c
	f.connMu.Unlock()
	return true
}

// addr is the SDS address data plane i connects to: the addresses of
// Config.Addr in turn.
func (f *Fleet) addr(i int) string {
	addrs := strings.Split(f.cfg.Addr, ",")
	return strings.TrimSpace(addrs[i%len(addrs)])
}

// dialGRPC makes a grpc-go ClientConn for one data plane.
func (f *Fleet) dialGRPC(addr, token string) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Thousands of connections in one process: keep their buffers
		// small, like a real Envoy's are per connection.
		grpc.WithReadBufferSize(4 << 10),
		grpc.WithWriteBufferSize(4 << 10),
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds(token)))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return conn, nil
}

func namesOf(slots []*slot) []string {
	names := make([]string, len(slots))
	for i, s := range slots {
		names[i] = s.name
	}
	return names
}

// runStream sends the first request of a grpc-go stream and runs its
// receive loop in a goroutine, answering each response as answer does.
func runStream[Req, Resp any](f *Fleet, s bidiStream[Req, Resp], first Req, answer func(Resp) Req, dp, gen int) error {
	// io.EOF: the server ended the stream already (refused it at its
	// headers); the receive loop gets and counts its status.
	if err := s.Send(first); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sending first request: %w", err)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			resp, err := s.Recv()
			if err == nil {
				err = s.Send(answer(resp))
			}
			if err != nil {
				f.streamEnded(dp, gen, err)
				return
			}
		}
	}()
	return nil
}

// sotwFirst and deltaFirst are the first requests of a stream of slots.
func sotwFirst(node *corev3.Node, slots []*slot) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: SecretTypeURL, ResourceNames: namesOf(slots)}
}

func deltaFirst(node *corev3.Node, slots []*slot) *discoveryv3.DeltaDiscoveryRequest {
	return &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: SecretTypeURL, ResourceNamesSubscribe: namesOf(slots)}
}

// sotwAnswer returns what a state-of-the-world stream of slots does with
// each response: check it like Envoy checks secrets, record what it now
// holds, and return the ACK or NACK to send.
func (f *Fleet) sotwAnswer(slots []*slot) func(*discoveryv3.DiscoveryResponse) *discoveryv3.DiscoveryRequest {
	names := namesOf(slots)
	acked := ""
	return func(resp *discoveryv3.DiscoveryResponse) *discoveryv3.DiscoveryRequest {
		now := time.Now()
		secrets, err := decode(resp.GetResources(), slots)
		req := &discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: names, ResponseNonce: resp.GetNonce()}
		if err != nil {
			f.nacks.Add(1)
			req.VersionInfo = acked
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			return req
		}
		acked = resp.GetVersionInfo()
		req.VersionInfo = acked
		for _, sl := range slots {
			if h, ok := secrets[sl.name]; ok {
				f.observe(sl, h, now)
			}
		}
		return req
	}
}

// deltaAnswer is sotwAnswer for incremental streams.
func (f *Fleet) deltaAnswer(slots []*slot) func(*discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	return func(resp *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
		now := time.Now()
		anys := make([]*anypb.Any, 0, len(resp.GetResources()))
		for _, r := range resp.GetResources() {
			anys = append(anys, r.GetResource())
		}
		secrets, err := decode(anys, slots)
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: SecretTypeURL, ResponseNonce: resp.GetNonce()}
		if err != nil {
			f.nacks.Add(1)
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			return req
		}
		for _, sl := range slots {
			if h, ok := secrets[sl.name]; ok {
				f.observe(sl, h, now)
			}
		}
		return req
	}
}

// openH2 opens a data plane's streams on its h2 connection. They need no
// goroutine: each response is answered on the connection's reading
// goroutine.
func (f *Fleet) openH2(conn *h2Conn, node *corev3.Node, gen int, id, bundle *slot) error {
	opens := f.streamsOf(id, bundle)
	for _, o := range opens {
		var (
			st      *h2Stream
			first   proto.Message
			respond func([]byte) (proto.Message, error)
		)
		if o.method == methodSotW || o.method == methodADS {
			first, respond = sotwFirst(node, o.slots), decodeThen(f.sotwAnswer(o.slots))
		} else {
			first, respond = deltaFirst(node, o.slots), decodeThen(f.deltaAnswer(o.slots))
		}
		onMessage := func(msg []byte) {
			req, err := respond(msg)
			if err == nil {
				err = st.send(req)
			}
			if err != nil {
				f.streamEnded(o.slots[0].dp, gen, fmt.Errorf("answering a response: %w", err))
			}
		}
		var err error
		if st, err = conn.open(o.method, onMessage, func(err error) { f.streamEnded(o.slots[0].dp, gen, err) }); err != nil {
			return fmt.Errorf("opening stream: %w", err)
		}
		if err := st.send(first); err != nil {
			return fmt.Errorf("sending first request: %w", err)
		}
	}
	return nil
}

// decodeThen unmarshals a response and answers it.
func decodeThen[Req proto.Message, Resp proto.Message](answer func(Resp) Req) func([]byte) (proto.Message, error) {
	return func(msg []byte) (proto.Message, error) {
		var zero Resp
		resp := zero.ProtoReflect().New().Interface().(Resp)
		if err := proto.Unmarshal(msg, resp); err != nil {
			return nil, err
		}
		return answer(resp), nil
	}
}

// held is a secret as received, with a hash of its content: a version
// independent of how the API versions responses.
type held struct {
	secret *tlsv3.Secret
	sum    uint64
}

var contentSeed = maphash.MakeSeed()

// decode unpacks secrets and applies the checks Envoy makes before using
// them: a known, requested name, the right type for it, and content.
func decode(anys []*anypb.Any, slots []*slot) (map[string]held, error) {
	out := make(map[string]held, len(anys))
	for _, a := range anys {
		sec := &tlsv3.Secret{}
		if err := a.UnmarshalTo(sec); err != nil {
			return nil, fmt.Errorf("decoding secret: %w", err)
		}
		var want *slot
		for _, sl := range slots {
			if sl.name == sec.GetName() {
				want = sl
			}
		}
		if want == nil {
			return nil, fmt.Errorf("secret %q was not requested", sec.GetName())
		}
		switch want.kind {
		case KindIdentity:
			tc := sec.GetTlsCertificate()
			if len(tc.GetCertificateChain().GetInlineBytes()) == 0 || len(tc.GetPrivateKey().GetInlineBytes()) == 0 {
				return nil, fmt.Errorf("secret %q has no certificate chain and key", sec.GetName())
			}
		case KindBundle:
			if len(sec.GetValidationContext().GetTrustedCa().GetInlineBytes()) == 0 {
				return nil, fmt.Errorf("secret %q has no trusted CA", sec.GetName())
			}
		}
		out[sec.GetName()] = held{secret: sec, sum: maphash.Bytes(contentSeed, a.GetValue()) | 1}
	}
	return out, nil
}

// observe records that sl now holds h, and counts it towards the current
// phase when it differs from the slot's base.
func (f *Fleet) observe(sl *slot, h held, now time.Time) {
	ph := f.phase.Load()
	sl.mu.Lock()
	changed := h.sum != sl.version
	sl.version, sl.secret = h.sum, h.secret
	count := sl.counted != ph && h.sum != sl.base && ph.watch[sl.kind] &&
		(sl.kind != KindBundle || ph.finalBundle == nil ||
			bytes.Equal(h.secret.GetValidationContext().GetTrustedCa().GetInlineBytes(), ph.finalBundle))
	if count {
		sl.counted, sl.arrivedAt = ph, now
	}
	sl.mu.Unlock()
	if changed && !ph.watch[sl.kind] {
		ph.unexpected.Add(1)
	}
	if count && ph == f.storm && f.connecting[sl.dp].left.Add(-1) == 0 {
		f.release(sl.dp)
	}
	if f.dps != nil {
		f.servedAgain(sl, now)
	}
	if count && ph.pending.Add(-1) == 0 {
		close(ph.done)
	}
}

// streamEnded counts a stream of connection gen that ended other than by
// Close: whatever the reason, even a cancellation, a stream gone in the
// middle of a run is an error, not a secret that was merely slow to change;
// with Config.Reconnect, its data plane reconnects instead.
func (f *Fleet) streamEnded(dp, gen int, err error) {
	f.release(dp) // it will not be served: let another one connect
	if f.ctx.Err() != nil {
		return
	}
	if f.dps != nil {
		f.lost(dp, gen)
		return
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = errors.New("server closed the stream")
	}
	f.errs.Add(1)
	f.errMu.Lock()
	if f.firstErr == nil {
		f.firstErr = fmt.Errorf("%w (at %s)", err, time.Now().UTC().Format("15:04:05.000"))
	}
	f.errMu.Unlock()
}

// lost starts data plane dp's reconnection, once per connection gen.
func (f *Fleet) lost(dp, gen int) {
	st := &f.dps[dp]
	st.mu.Lock()
	if gen != st.gen {
		st.mu.Unlock() // a stream of a connection replaced already
		return
	}
	st.gen++
	if st.down.IsZero() {
		st.down = time.Now()
	}
	st.waiting = [2]bool{true, true}
	st.mu.Unlock()
	f.reconnects.Add(1)
	f.wg.Add(1) // Close waits for it; lost runs on a goroutine it waits for too
	go f.reconnect(dp)
}

// reconnect replaces data plane dp's lost connection: it closes it, then
// dials the next address after a backoff until its streams are open.
func (f *Fleet) reconnect(dp int) {
	defer f.wg.Done()
	f.dropConn(dp)
	st := &f.dps[dp]
	for attempt := 0; ; attempt++ {
		backoff := min(reconnectBase<<min(attempt, 10), reconnectMax)
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(backoff/2 + rand.N(backoff/2)):
		}
		st.mu.Lock()
		st.tries++
		gen, addr := st.gen, f.addr(dp+st.tries)
		st.mu.Unlock()
		err := f.connect(dp, gen, addr)
		if err == nil || f.ctx.Err() != nil {
			return
		}
		st.mu.Lock()
		if st.gen != gen {
			// A stream of this attempt opened and ended: its lost
			// started the next reconnection.
			st.mu.Unlock()
			return
		}
		// The attempt's generation is over: a stream of it that did open
		// must not start another reconnection.
		st.gen++
		st.mu.Unlock()
		f.dropConn(dp)
	}
}

// dropConn closes data plane dp's connection, if it has one, and forgets it.
func (f *Fleet) dropConn(dp int) {
	f.connMu.Lock()
	c := f.conns[dp]
	f.conns[dp] = nil
	f.connMu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// servedAgain records that sl's data plane received sl's secret, and the
// failover delay once a reconnected data plane holds both again.
func (f *Fleet) servedAgain(sl *slot, now time.Time) {
	st := &f.dps[sl.dp]
	st.mu.Lock()
	if st.down.IsZero() || !st.waiting[sl.kind] {
		st.mu.Unlock()
		return
	}
	st.waiting[sl.kind] = false
	var d time.Duration
	done := !st.waiting[KindIdentity] && !st.waiting[KindBundle]
	if done {
		d, st.down = now.Sub(st.down), time.Time{}
	}
	st.mu.Unlock()
	if done {
		f.failMu.Lock()
		f.failover = append(f.failover, d)
		f.failMu.Unlock()
	}
}

// FailoverResult is what Config.Reconnect measured: how many connections
// were lost and replaced, how many data planes are still without one that
// served them, and the delays from a loss until both secrets were served
// again.
type FailoverResult struct {
	Reconnects int       `json:"reconnects"`
	Down       int       `json:"down"`
	Served     Latencies `json:"served"`
}

// Failover reports the reconnections so far.
func (f *Fleet) Failover() FailoverResult {
	r := FailoverResult{Reconnects: int(f.reconnects.Load())}
	for i := range f.dps {
		st := &f.dps[i]
		st.mu.Lock()
		if !st.down.IsZero() {
			r.Down++
		}
		st.mu.Unlock()
	}
	f.failMu.Lock()
	ds := slices.Clone(f.failover)
	f.failMu.Unlock()
	r.Served = summarize(ds)
	return r
}

// Mark starts a new phase: from now on Wait waits until every secret of
// kinds holds a version other than the one it holds now (and, for trust
// bundles, exactly finalBundle when it is not nil), and counts changes of
// other secrets as unexpected. Call it before the change is made.
func (f *Fleet) Mark(finalBundle []byte, kinds ...Kind) {
	ph := newPhase(f.slots, kinds...)
	ph.finalBundle = finalBundle
	for _, sl := range f.slots {
		sl.mu.Lock()
		sl.base = sl.version
		sl.mu.Unlock()
	}
	f.phase.Store(ph)
}

// Latencies are the per-secret delays of one phase, measured from its start.
type Latencies struct {
	Count int     `json:"count"`
	Min   float64 `json:"min"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// PhaseResult is the outcome of waiting for a phase.
type PhaseResult struct {
	// All covers every secret; Identity and Bundle each kind.
	All      Latencies `json:"all"`
	Identity Latencies `json:"identity"`
	Bundle   Latencies `json:"bundle"`
	// Elsewhere covers the trust bundles of the data planes whose first
	// SDS address is not the first of Config.Addr: with replicas, whose
	// changes are written through the first, the data planes a change
	// reaches only through its propagation to the other replicas. Nil
	// with one address.
	Elsewhere *Latencies `json:"elsewhere,omitempty"`
	// Missing is how many secrets had not changed when the wait ended.
	Missing int `json:"missing"`
	// Unexpected is how many secrets of other kinds changed meanwhile.
	Unexpected int `json:"unexpected"`
}

// Wait waits until every secret changed in the current phase (or served at
// all, for the storm), or ctx ends, and reports the delays measured from
// start.
func (f *Fleet) Wait(ctx context.Context, start time.Time) PhaseResult {
	ph := f.phase.Load()
	select {
	case <-ph.done:
	case <-ctx.Done():
	}
	var all, id, bundle, elsewhere []time.Duration
	missing := 0
	addrs := len(strings.Split(f.cfg.Addr, ","))
	for _, sl := range f.slots {
		if !ph.watch[sl.kind] {
			continue
		}
		sl.mu.Lock()
		counted, at := sl.counted == ph, sl.arrivedAt
		sl.mu.Unlock()
		if !counted {
			missing++
			continue
		}
		d := at.Sub(start)
		all = append(all, d)
		if sl.kind == KindBundle {
			bundle = append(bundle, d)
			if sl.dp%addrs != 0 { // not on f.addr's first address
				elsewhere = append(elsewhere, d)
			}
		} else {
			id = append(id, d)
		}
	}
	r := PhaseResult{All: summarize(all), Identity: summarize(id), Bundle: summarize(bundle), Missing: missing, Unexpected: int(ph.unexpected.Load())}
	if addrs > 1 {
		e := summarize(elsewhere)
		r.Elsewhere = &e
	}
	return r
}

// summarize computes nearest-rank percentiles.
func summarize(ds []time.Duration) Latencies {
	if len(ds) == 0 {
		return Latencies{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	rank := func(p float64) float64 {
		i := int(p*float64(len(ds)) + 0.999999)
		i = min(max(i, 1), len(ds))
		return ds[i-1].Seconds()
	}
	return Latencies{Count: len(ds), Min: ds[0].Seconds(), P50: rank(0.50), P99: rank(0.99), Max: ds[len(ds)-1].Seconds()}
}

// Check runs fn on every secret the fleet holds and returns how many it
// refused, with the first refusal.
func (f *Fleet) Check(fn func(Kind, *tlsv3.Secret) error) (int, error) {
	bad := 0
	var first error
	for _, sl := range f.slots {
		sl.mu.Lock()
		sec := sl.secret
		sl.mu.Unlock()
		var err error
		if sec == nil {
			err = fmt.Errorf("data plane %d holds no %s", sl.dp, sl.name)
		} else {
			err = fn(sl.kind, sec)
		}
		if err != nil {
			bad++
			if first == nil {
				first = fmt.Errorf("data plane %d %s: %w", sl.dp, sl.name, err)
			}
		}
	}
	return bad, first
}

// Errors is how many streams ended unexpectedly, with the first reason.
func (f *Fleet) Errors() (int, error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return int(f.errs.Load()), f.firstErr
}

// NACKs is how many responses the fleet rejected.
func (f *Fleet) NACKs() int { return int(f.nacks.Load()) }

// Streams is how many streams the fleet holds open.
func (f *Fleet) Streams() int {
	switch f.cfg.API {
	case APISotW, APIDelta:
		return 2 * f.cfg.DataPlanes
	}
	return f.cfg.DataPlanes
}

// Close ends every stream and connection and waits for the receive loops.
func (f *Fleet) Close() {
	f.cancel()
	f.connMu.Lock()
	f.closed = true
	conns := f.conns
	f.conns = make([]io.Closer, len(conns))
	f.connMu.Unlock()
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	f.wg.Wait()
}
