package featuretests

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/meshsds/meshsds/internal/grpclite"
	"github.com/meshsds/meshsds/internal/testing/sdstest"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/meshconfig/pki"
	"github.com/meshsds/meshsds/meshconfig/pki/pkitest"
	"github.com/meshsds/meshsds/sds"
	"github.com/meshsds/meshsds/sds/cache"
	"github.com/meshsds/meshsds/sds/xds"
)

// benchCA is a parsed test CA for benchmarks.
func benchCA(b *testing.B) *pki.CA {
	b.Helper()
	root := pkitest.NewRootCA(b, "bench root")
	ca, err := pki.ParseCA(root.CertPEM, root.KeyPEM, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return ca
}

func benchIdentity(i int) *sds.Identity {
	name := fmt.Sprintf("web-%d", i)
	return &sds.Identity{Mesh: "default", Name: name, Tags: map[string][]string{sds.ServiceTag: {"web"}, "version": {"v1"}}}
}

// BenchmarkBuildAndMarshalResponse is what a push costs a stream once the
// secrets exist: collecting the shared resources and serializing the
// response as a push does.
func BenchmarkBuildAndMarshalResponse(b *testing.B) {
	for _, names := range [][]string{{sds.NameMeshCA}, {sds.NameIdentityCert}, {sds.NameIdentityCert, sds.NameMeshCA}} {
		b.Run(fmt.Sprint(names), func(b *testing.B) {
			c := cache.New(cache.Config{})
			c.Update(map[string]*meshconfig.ResolvedMesh{"default": {Name: "default", CA: benchCA(b), DPCertValidity: time.Hour}}, time.Now())
			c.SetReady()
			w := c.Watch(benchIdentity(0), nil)
			defer w.Close()
			if _, ready, err := xds.Collect(w, names); err != nil || !ready {
				b.Fatal(err, ready)
			}
			var buf []byte // like grpclite's pooled one
			b.ReportAllocs()
			for b.Loop() {
				resp, _, err := xds.Collect(w, names)
				if err != nil {
					b.Fatal(err)
				}
				res, err := resp.Build()
				if err != nil {
					b.Fatal(err)
				}
				buf = xds.AppendDiscoveryResponse(buf[:0], resp.Version(), res, "1")
			}
		})
	}
}

// BenchmarkPushToWatchers pushes one CA change to N data planes over real
// gRPC streams on loopback (an identity_cert and a mesh_ca stream each) and
// waits until every stream received it. It includes issuing N certificates.
func BenchmarkPushToWatchers(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("dataplanes=%d", n), func(b *testing.B) {
			benchPush(b, n)
		})
	}
}

func benchPush(b *testing.B, n int) {
	state := cache.New(cache.Config{})
	root := pkitest.NewRootCA(b, "bench root")
	mesh := func(ca *pki.KeyPair) map[string]*meshconfig.ResolvedMesh {
		c, err := pki.ParseCA(ca.CertPEM, ca.KeyPEM, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		return map[string]*meshconfig.ResolvedMesh{"default": {Name: "default", CA: c, DPCertValidity: time.Hour}}
	}
	state.Update(mesh(root), time.Now())
	state.SetReady()
	srv, err := sds.NewServer(sds.ServerConfig{Secrets: state, Auth: sds.NoAuth{}})
	if err != nil {
		b.Fatal(err)
	}
	gs := grpclite.NewServer(grpclite.Config{})
	srv.RegisterGRPCLite(gs)
	lis := listenLoopback(b)
	go func() { _ = gs.Serve(lis) }()
	b.Cleanup(gs.Stop)

	// Plain streams that ACK everything, counted on one channel.
	got := make(chan struct{}, 2*n)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	for i := range n {
		conn := sdstest.Dial(b, lis.Addr().String(), "")
		for _, name := range []string{sds.NameIdentityCert, sds.NameMeshCA} {
			s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(metadata.NewOutgoingContext(ctx, nil))
			if err != nil {
				b.Fatal(err)
			}
			node := &corev3.Node{Id: fmt.Sprintf("default.dp-%d", i)}
			if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: xds.TypeSecret, ResourceNames: []string{name}}); err != nil {
				b.Fatal(err)
			}
			go ackLoop(s, []string{name}, got)
		}
	}
	for range 2 * n {
		<-got
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		next := mesh(pkitest.NewRootCA(b, fmt.Sprint("bench root ", i)))
		b.StartTimer()
		state.Update(next, time.Now())
		for range 2 * n {
			<-got
		}
	}
}

func ackLoop(s grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], names []string, got chan<- struct{}) {
	for {
		resp, err := s.Recv()
		if err != nil {
			return
		}
		got <- struct{}{}
		if err := s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.TypeSecret, ResourceNames: names, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			return
		}
	}
}

func listenLoopback(b *testing.B) net.Listener {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return lis
}
