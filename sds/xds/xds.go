// Package xds is the discovery protocol of the SDS port: Envoy's
// state-of-the-world and incremental (delta) xDS, on the Secret Discovery
// Service and on the Aggregated Discovery Service, for the Secret type.
//
// It owns what the protocol decides and nothing else: which names a stream
// subscribes to, when a response is due, versions and nonces, which request
// ACKs or NACKs which response, the ADS type filter, and that a stream's
// node never changes. It knows neither the transport nor where secrets come
// from, through two seams:
//
//   - a Stream is one gRPC stream of any transport (grpclite's event
//     streams, grpc-go): the protocol sends encoded messages on it and closes
//     it with a status;
//   - an Opener authenticates a stream by its first request and returns its
//     Handler, through which the stream reads resources from the serving
//     state and tells the server what happened (requests, responses, ACKs),
//     as go-control-plane's ConfigWatcher and Callbacks do.
//
// A stream costs no goroutine while it waits: its requests arrive as
// events, are queued, and are worked off by a goroutine that exists only
// while there is work (see Events).
package xds

import (
	"slices"
	"sort"
)

// TypeSecret is the xDS type of the resources served.
const TypeSecret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// API is the flavour of a stream.
type API uint8

// The stream flavours.
const (
	// SotW is SecretDiscoveryService.StreamSecrets: state of the world.
	SotW API = iota
	// Delta is SecretDiscoveryService.DeltaSecrets: incremental.
	Delta
	// ADS is AggregatedDiscoveryService.StreamAggregatedResources.
	ADS
	// ADSDelta is AggregatedDiscoveryService.DeltaAggregatedResources.
	ADSDelta
	// Fetch is SecretDiscoveryService.FetchSecrets, one request and one
	// answer; the protocol of this package does not serve it.
	Fetch
)

// String is the API's label in metrics and logs.
func (a API) String() string {
	switch a {
	case SotW:
		return "sotw"
	case Delta:
		return "delta"
	case ADS:
		return "ads"
	case ADSDelta:
		return "ads_delta"
	default:
		return "fetch"
	}
}

// Aggregated reports whether streams of a carry every xDS type, of which
// only Secrets are answered.
func (a API) Aggregated() bool { return a == ADS || a == ADSDelta }

// Incremental reports whether a is a delta API.
func (a API) Incremental() bool { return a == Delta || a == ADSDelta }

// The gRPC methods of the streaming APIs.
const (
	MethodSotW     = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
	MethodDelta    = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"
	MethodADS      = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	MethodADSDelta = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

// Methods maps each streaming method to its API.
var Methods = map[string]API{MethodSotW: SotW, MethodDelta: Delta, MethodADS: ADS, MethodADSDelta: ADSDelta}

// CanonNames sorts and de-duplicates requested names. Names that are
// already (every ACK repeats the names of the last request) are returned as
// they are, without copying.
func CanonNames(names []string) []string {
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
