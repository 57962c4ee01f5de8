package xds

import (
	"sort"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// deltaSubscription is an incremental stream: it tracks the subscribed
// names and the version of each it sent, and sends only what changed.
type deltaSubscription struct {
	firstReq   *discoveryv3.DeltaDiscoveryRequest // until handled
	subscribed map[string]struct{}
	// sent is the version of each resource the data plane holds: sent, or
	// announced in initial_resource_versions.
	sent      map[string]string
	nonce     uint64
	lastNonce string
	sentTag   Tag // what the last response carried
}

func (s *deltaSubscription) first(raw []byte) (*corev3.Node, error) {
	req, err := decodeDelta(raw)
	if err != nil {
		return nil, err
	}
	s.firstReq = req
	s.subscribed = map[string]struct{}{}
	s.sent = map[string]string{}
	for name, v := range req.GetInitialResourceVersions() {
		s.sent[name] = v
	}
	return req.GetNode(), nil
}

func decodeDelta(raw []byte) (*discoveryv3.DeltaDiscoveryRequest, error) {
	req := &discoveryv3.DeltaDiscoveryRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		return nil, status.Error(codes.InvalidArgument, "malformed DeltaDiscoveryRequest")
	}
	return req, nil
}

func (s *deltaSubscription) handle(e *Events, raw []byte) error {
	req := s.firstReq
	s.firstReq = nil
	if raw != nil {
		var err error
		if req, err = decodeDelta(raw); err != nil {
			return err
		}
	}
	skip, err := e.check(req.GetNode(), req.GetTypeUrl())
	if err != nil || skip {
		return err
	}
	if n := req.GetResponseNonce(); n != "" && n == s.lastNonce {
		e.h.Acked("", req.GetErrorDetail())
		if req.GetErrorDetail() == nil {
			e.h.Held(s.sentTag)
		}
	}
	changed := false
	for _, name := range req.GetResourceNamesUnsubscribe() {
		if _, ok := s.subscribed[name]; ok {
			delete(s.subscribed, name)
			delete(s.sent, name)
			changed = true
		}
	}
	var added []string
	for _, name := range req.GetResourceNamesSubscribe() {
		if name == "*" {
			continue // secrets are always named; a wildcard adds none
		}
		if _, ok := s.subscribed[name]; !ok {
			s.subscribed[name] = struct{}{}
			added = append(added, name)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	e.h.Subscribe(s.names(), added)
	return s.push(e)
}

// names are the subscribed names, sorted.
func (s *deltaSubscription) names() []string {
	names := make([]string, 0, len(s.subscribed))
	for n := range s.subscribed {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *deltaSubscription) push(e *Events) error {
	var (
		out      []*discoveryv3.Resource
		tag, had Tag
	)
	for _, name := range s.names() {
		r, a, err := e.h.Resource(name)
		if err != nil {
			e.h.Failed(err) // retried on the next change; the stream stays up
			return nil
		}
		if a != Available {
			continue
		}
		if s.sent[name] == r.Version {
			had = had.With(r.Tag)
			continue
		}
		res, err := r.Build(name)
		if err != nil {
			e.h.Failed(err)
			return nil
		}
		tag = tag.With(r.Tag)
		out = append(out, &discoveryv3.Resource{Name: name, Version: r.Version, Resource: res})
	}
	if len(out) == 0 {
		if s.lastNonce == "" && had != (Tag{}) {
			e.h.Held(had) // announced in initial_resource_versions
		}
		return nil
	}
	s.nonce++
	nonce := strconv.FormatUint(s.nonce, 10)
	resp := &discoveryv3.DeltaDiscoveryResponse{Resources: out, TypeUrl: TypeSecret, Nonce: nonce}
	err := e.tr.SendEncoded(func(b []byte) ([]byte, error) {
		return proto.MarshalOptions{Deterministic: true}.MarshalAppend(b, resp)
	})
	if err != nil {
		return err
	}
	s.lastNonce, s.sentTag = nonce, tag
	names := make([]string, 0, len(out))
	for _, r := range out {
		s.sent[r.Name] = r.Version
		names = append(names, r.Name)
	}
	e.h.Sent(names)
	return nil
}
