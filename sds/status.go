package sds

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// streamInfo is the live status of one stream, shown in /dataplanes.
type streamInfo struct {
	id        *Identity
	api       string
	connected time.Time
	acks      prometheus.Counter // of api
	close     func(error)        // ends the stream

	mu              sync.Mutex
	names           []string
	unknown         []string
	lastACK         time.Time
	lastACKVersion  string
	lastNACK        time.Time
	lastNACKMessage string
	certSerial      string
	certExpiry      time.Time
}

func (i *streamInfo) setNames(names []string) {
	i.mu.Lock()
	i.names = names
	i.mu.Unlock()
}

func (i *streamInfo) setCert(serial string, notAfter time.Time) {
	i.mu.Lock()
	i.certSerial, i.certExpiry = serial, notAfter
	i.mu.Unlock()
}

// track registers an open stream of id.
func (s *Server) track(id *Identity, api string, close func(error)) (*streamInfo, error) {
	info := &streamInfo{id: id, api: api, connected: s.now(), acks: s.metrics.acks.WithLabelValues(api), close: close}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		return nil, s.closing // shutting down: CloseStreams has passed
	}
	s.streams[info] = struct{}{}
	s.nodes[id.NodeID()]++
	s.metrics.dataplanes.Set(float64(len(s.nodes)))
	return info, nil
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
	infos := make([]*streamInfo, 0, len(s.streams))
	for info := range s.streams {
		infos = append(infos, info)
	}
	s.mu.Unlock()
	for _, info := range infos {
		info.close(err)
	}
}

// untrack forgets a closed stream.
func (s *Server) untrack(info *streamInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, info)
	node := info.id.NodeID()
	if s.nodes[node]--; s.nodes[node] <= 0 {
		delete(s.nodes, node)
	}
	s.metrics.dataplanes.Set(float64(len(s.nodes)))
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
	infos := make([]*streamInfo, 0, len(s.streams))
	for i := range s.streams {
		infos = append(infos, i)
	}
	s.mu.Unlock()

	byNode := map[string]*DataplaneStatus{}
	for _, i := range infos {
		key := i.id.NodeID()
		dp := byNode[key]
		if dp == nil {
			dp = &DataplaneStatus{Mesh: i.id.Mesh, Name: i.id.Name}
			byNode[key] = dp
		}
		i.mu.Lock()
		dp.Streams = append(dp.Streams, StreamStatus{
			API: i.api, Resources: slices.Clone(i.names), UnknownNames: slices.Clone(i.unknown),
			ConnectedAt: i.connected, LastACK: i.lastACK, LastACKVersion: i.lastACKVersion,
			LastNACK: i.lastNACK, LastNACKMessage: i.lastNACKMessage,
			CertSerial: i.certSerial, CertExpiry: i.certExpiry,
		})
		i.mu.Unlock()
	}
	out := make([]DataplaneStatus, 0, len(byNode))
	for _, dp := range byNode {
		sort.Slice(dp.Streams, func(a, b int) bool {
			x, y := dp.Streams[a], dp.Streams[b]
			if x.API != y.API {
				return x.API < y.API
			}
			return x.ConnectedAt.Before(y.ConnectedAt)
		})
		out = append(out, *dp)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Mesh != out[b].Mesh {
			return out[a].Mesh < out[b].Mesh
		}
		return out[a].Name < out[b].Name
	})
	return out
}
