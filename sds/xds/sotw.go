package xds

import (
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// sotwSubscription is a state-of-the-world stream: each response carries
// every subscribed resource, under one version over all of them.
type sotwSubscription struct {
	firstReq  *discoveryv3.DiscoveryRequest // until handled
	names     []string
	nonce     uint64
	lastNonce string
	// lastVersion is the version of the last response, or the one a
	// reconnecting data plane announced holding.
	lastVersion string
	sentTag     Tag // what the last response carried
}

func (s *sotwSubscription) first(raw []byte) (*corev3.Node, error) {
	req, err := decodeSotW(raw)
	if err != nil {
		return nil, err
	}
	s.firstReq, s.lastVersion = req, req.GetVersionInfo()
	return req.GetNode(), nil
}

func decodeSotW(raw []byte) (*discoveryv3.DiscoveryRequest, error) {
	req := &discoveryv3.DiscoveryRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		return nil, status.Error(codes.InvalidArgument, "malformed DiscoveryRequest")
	}
	return req, nil
}

func (s *sotwSubscription) handle(e *Events, raw []byte) error {
	req := s.firstReq
	s.firstReq = nil
	if raw != nil {
		var err error
		if req, err = decodeSotW(raw); err != nil {
			return err
		}
	}
	skip, err := e.check(req.GetNode(), req.GetTypeUrl())
	if err != nil || skip {
		return err
	}
	if n := req.GetResponseNonce(); n != "" {
		if n != s.lastNonce {
			return nil // answers an older response: superseded
		}
		e.h.Acked(req.GetVersionInfo(), req.GetErrorDetail())
		if req.GetErrorDetail() == nil {
			e.h.Held(s.sentTag)
		}
	}
	names := CanonNames(req.GetResourceNames())
	if slices.Equal(names, s.names) {
		return nil
	}
	s.names = names
	e.h.Subscribe(names, names)
	return s.push(e)
}

// Response is a state-of-the-world answer before it is encoded: the
// available resources of the names asked for, in order.
type Response struct {
	Names     []string
	Resources []Resource
	// Tag merges the resources' tags.
	Tag Tag
}

// Collect gathers the answer for names, sorted and without duplicates.
// ready is false while a name that is served cannot be served yet, so that
// a reply is never partial; unknown names are left out.
func Collect(r Resourcer, names []string) (resp Response, ready bool, err error) {
	for _, name := range names {
		res, a, err := r.Resource(name)
		switch {
		case err != nil:
			return Response{}, false, err
		case a == Pending:
			return Response{}, false, nil
		case a == Unknown:
			continue // never answered
		}
		resp.Names = append(resp.Names, name)
		resp.Resources = append(resp.Resources, res)
		resp.Tag = resp.Tag.With(res.Tag)
	}
	return resp, true, nil
}

// Version is one version over every resource of the response.
func (r *Response) Version() string {
	parts := make([][]byte, 0, 2*len(r.Names))
	for i, name := range r.Names {
		parts = append(parts, []byte(name), []byte(r.Resources[i].Version))
	}
	return ContentVersion(parts...)
}

// Build serializes the resources.
func (r *Response) Build() ([]*anypb.Any, error) {
	anys := make([]*anypb.Any, len(r.Names))
	for i := range r.Names {
		var err error
		if anys[i], err = r.Resources[i].Build(r.Names[i]); err != nil {
			return nil, err
		}
	}
	return anys, nil
}

func (s *sotwSubscription) push(e *Events) error {
	resp, ready, err := Collect(e.h, s.names)
	if err != nil {
		e.h.Failed(err) // retried on the next change; the stream stays up
		return nil
	}
	if !ready || len(resp.Names) == 0 {
		return nil
	}
	version := resp.Version()
	if version == s.lastVersion {
		if s.lastNonce == "" {
			// The data plane came with exactly this: it holds it.
			e.h.Held(resp.Tag)
		}
		return nil
	}
	anys, err := resp.Build()
	if err != nil {
		e.h.Failed(err)
		return nil
	}
	s.nonce++
	nonce := strconv.FormatUint(s.nonce, 10)
	err = e.tr.SendEncoded(func(b []byte) ([]byte, error) {
		return AppendDiscoveryResponse(b, version, anys, nonce), nil
	})
	if err != nil {
		return err
	}
	s.lastNonce, s.lastVersion, s.sentTag = nonce, version, resp.Tag
	e.h.Sent(resp.Names)
	return nil
}
