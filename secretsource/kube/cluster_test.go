package kube

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshsds/meshsds/cluster"
	"github.com/meshsds/meshsds/cluster/clustertest"
	"github.com/meshsds/meshsds/internal/testing/kubetest"
)

// TestCluster runs the backend and the election against a real API
// server, each replica with a client of its own.
func TestCluster(t *testing.T) {
	c := startCluster(t, kubetest.Options{}, true)
	n := 0
	newClient := func(t *testing.T) kubernetes.Interface {
		client, err := kubernetes.NewForConfig(c.Config())
		require.NoError(t, err)
		return client
	}
	// Each subtest gets a namespace of its own: a fresh shared state.
	namespace := func(t *testing.T) string {
		n++
		ns := fmt.Sprintf("cluster-%d", n)
		c.CreateNamespace(ns)
		return ns
	}
	start := func(t *testing.T, ns string) *Cluster {
		b := NewCluster(newClient(t), ns, nil)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		b.Start(ctx)
		return b
	}
	t.Run("Backend", func(t *testing.T) {
		clustertest.Run(t, func(t *testing.T) (a, b cluster.Backend) {
			ns := namespace(t)
			return start(t, ns), start(t, ns)
		})
	})
	t.Run("Elector", func(t *testing.T) {
		clustertest.RunElector(t, func(t *testing.T) (a, b cluster.Elector) {
			ns := namespace(t)
			return start(t, ns).Elector(3 * time.Second), start(t, ns).Elector(3 * time.Second)
		}, 15*time.Second)
	})
	t.Run("PruneReplicas", func(t *testing.T) {
		ns := namespace(t)
		b := start(t, ns)
		ctx := t.Context()
		require.NoError(t, b.Publish(ctx, "old", []byte(`{}`), time.Second))
		require.NoError(t, b.Publish(ctx, "live", []byte(`{}`), time.Minute))
		time.Sleep(2 * time.Second)
		require.NoError(t, b.PruneReplicas(ctx, 500*time.Millisecond))
		leases, err := c.client.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		var names []string
		for _, l := range leases.Items {
			names = append(names, l.Name)
		}
		require.Equal(t, []string{ReplicaLeasePrefix + "live"}, names)
	})
}
