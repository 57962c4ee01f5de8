package sds

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/sds/xds"
)

// stream is the server's side of one open stream (xds.Handler): its data
// plane's identity, its registration with the secrets, the timer that
// closes it when its token expires, and the status /dataplanes shows. The
// protocol calls it from one goroutine at a time; the status fields are
// read concurrently under mu.
type stream struct {
	s         *Server
	id        *Identity
	api       xds.API
	ctl       xds.Control
	w         Watch
	connected time.Time
	requests  prometheus.Counter // of api
	acks      prometheus.Counter // of api and mesh
	// identitySent and bundleSent count responses of the mesh.
	identitySent, bundleSent prometheus.Counter
	expiry                   *time.Timer

	mu              sync.Mutex
	names           []string
	unknown         []string
	lastACK         time.Time
	lastACKVersion  string
	lastNACK        time.Time
	lastNACKMessage string
}

var _ xds.Handler = (*stream)(nil)

func (st *stream) NodeID() string { return st.id.NodeID() }

func (st *stream) Subscribe(names, added []string) {
	unknown := st.s.countUnknown(added)
	if len(added) != len(names) {
		unknown = nil
		for _, n := range names {
			if KindOf(n) == KindUnknown {
				unknown = append(unknown, n)
			}
		}
	}
	st.w.Subscribe(names)
	st.mu.Lock()
	st.names, st.unknown = names, unknown
	st.mu.Unlock()
}

func (st *stream) Resource(name string) (xds.Resource, xds.Availability, error) {
	return st.w.Resource(name)
}

func (st *stream) Failed(err error) {
	st.s.log.Error("building response", LogMesh, st.id.Mesh, LogDataplane, st.id.Name, LogErr, err)
}

// Sent counts a response carrying names and observes its push latency.
func (st *stream) Sent(names []string) {
	m := st.s.metrics
	for _, name := range names {
		switch KindOf(name) {
		case KindIdentity:
			st.identitySent.Inc()
		case KindBundle:
			st.bundleSent.Inc()
		}
	}
	if at, ok := st.w.TakeChangedAt(); ok {
		m.pushLatency.Observe(st.s.now().Sub(at).Seconds())
	}
}

func (st *stream) Held(t xds.Tag) { st.w.Held(t) }

func (st *stream) Requested() { st.requests.Inc() }

// Acked records an ACK or, with nack set, a NACK. A NACK is not answered by
// sending the same content again: the protocol waits for a change.
func (st *stream) Acked(version string, nack *rpcstatus.Status) {
	now := st.s.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	if nack != nil {
		st.s.metrics.nacks.WithLabelValues(st.api.String(), st.id.Mesh).Inc()
		st.lastNACK, st.lastNACKMessage = now, nack.GetMessage()
		st.s.log.Warn("data plane rejected secrets", LogMesh, st.id.Mesh, LogDataplane, st.id.Name, LogAPI, st.api.String(), "message", nack.GetMessage())
		return
	}
	st.acks.Inc()
	st.lastACK, st.lastACKVersion = now, version
}

// Woken closes the stream of a revoked token before it is pushed anything.
func (st *stream) Woken() error {
	if !st.w.Revoked() {
		return nil
	}
	st.s.metrics.revokedClosures.Inc()
	st.s.metrics.authFailures.WithLabelValues(errRevoked.Reason).Inc()
	st.s.log.Info("closing stream of revoked token", LogMesh, st.id.Mesh, LogDataplane, st.id.Name)
	return errRevoked
}

func (st *stream) Closed() {
	if st.expiry != nil {
		st.expiry.Stop()
	}
	st.w.Close()
	st.s.untrack(st)
	st.s.metrics.activeStreams.WithLabelValues(st.api.String()).Dec()
}

// expire closes the stream when its token expires.
func (st *stream) expire() {
	st.s.metrics.authFailures.WithLabelValues("expired").Inc()
	st.s.log.Info("closing stream: its dataplane token expired", LogMesh, st.id.Mesh, LogDataplane, st.id.Name)
	st.ctl.Close(status.Error(codes.Unauthenticated, "dataplane token expired"))
}

// StreamStatus is one open stream of a data plane.
type StreamStatus struct {
	API             string    `json:"api"`
	Resources       []string  `json:"resources"`
	UnknownNames    []string  `json:"unknownNames,omitempty"`
	ConnectedAt     time.Time `json:"connectedAt"`
	LastACK         time.Time `json:"lastAck,omitzero"`
	LastACKVersion  string    `json:"lastAckVersion,omitempty"`
	LastNACK        time.Time `json:"lastNack,omitzero"`
	LastNACKMessage string    `json:"lastNackMessage,omitempty"`
	CertSerial      string    `json:"certSerial,omitempty"`
	CertExpiry      time.Time `json:"certExpiry,omitzero"`
}

// DataplaneStatus is a connected data plane and its streams.
type DataplaneStatus struct {
	Mesh    string         `json:"mesh"`
	Name    string         `json:"name"`
	Streams []StreamStatus `json:"streams"`
}

// Dataplanes lists the connected data planes, sorted by mesh and name.
func (s *Server) Dataplanes() []DataplaneStatus {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()

	byNode := map[string]*DataplaneStatus{}
	for _, st := range streams {
		key := st.id.NodeID()
		dp := byNode[key]
		if dp == nil {
			dp = &DataplaneStatus{Mesh: st.id.Mesh, Name: st.id.Name}
			byNode[key] = dp
		}
		ss := StreamStatus{API: st.api.String(), ConnectedAt: st.connected}
		ss.CertSerial, ss.CertExpiry, _ = st.w.Cert()
		st.mu.Lock()
		ss.Resources, ss.UnknownNames = slices.Clone(st.names), slices.Clone(st.unknown)
		ss.LastACK, ss.LastACKVersion, ss.LastNACK, ss.LastNACKMessage = st.lastACK, st.lastACKVersion, st.lastNACK, st.lastNACKMessage
		st.mu.Unlock()
		dp.Streams = append(dp.Streams, ss)
	}
	out := make([]DataplaneStatus, 0, len(byNode))
	for _, dp := range byNode {
		slices.SortFunc(dp.Streams, func(a, b StreamStatus) int {
			if a.API != b.API {
				if a.API < b.API {
					return -1
				}
				return 1
			}
			return a.ConnectedAt.Compare(b.ConnectedAt)
		})
		out = append(out, *dp)
	}
	slices.SortFunc(out, func(a, b DataplaneStatus) int {
		if a.Mesh != b.Mesh {
			if a.Mesh < b.Mesh {
				return -1
			}
			return 1
		}
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// MeshStatus is what a mesh's CA looks like now, for the admin API
// (sds/cache reports it).
type MeshStatus struct {
	// Phase of a CA change: steady, trust-new-ca or reissue.
	Phase string    `json:"phase"`
	Since time.Time `json:"since,omitzero"`
	// Waiting counts the streams of this replica the current phase still
	// waits for.
	Waiting int `json:"waiting,omitempty"`
	// WaitingReplicas names the replicas the current phase still waits
	// for, when several replicas go through the change together.
	WaitingReplicas []string  `json:"waitingReplicas,omitempty"`
	SigningCA       string    `json:"signingCA,omitempty"`
	TrustedCA       []string  `json:"trustedCAs,omitempty"`
	CAExpiry        time.Time `json:"caExpiry,omitzero"`
	Warning         string    `json:"warning,omitempty"`
	Error           string    `json:"error,omitempty"`
}
