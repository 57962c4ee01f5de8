package kubetest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshsds/meshsds/internal/testing/kubetest"
)

// TestClusterSurvivesPartitionAndRestart checks the harness itself: state
// written before an API server restart is still there after it, and a
// partition cuts the proxied client but not the direct one.
func TestClusterSurvivesPartitionAndRestart(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	direct := c.Client()
	cfg := c.Config()
	cfg.Timeout = 2 * time.Second
	proxied, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	c.CreateNamespace("kubetest")
	_, err = direct.CoreV1().ConfigMaps("kubetest").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "before"}, Data: map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = proxied.CoreV1().ConfigMaps("kubetest").Get(ctx, "before", metav1.GetOptions{})
	require.NoError(t, err)

	c.Partition()
	_, err = proxied.CoreV1().ConfigMaps("kubetest").Get(ctx, "before", metav1.GetOptions{})
	require.Error(t, err, "the partition must cut the proxied client")
	_, err = direct.CoreV1().ConfigMaps("kubetest").Get(ctx, "before", metav1.GetOptions{})
	require.NoError(t, err, "the direct client is not partitioned")
	c.Heal()

	c.RestartAPIServer()
	require.Eventually(t, func() bool {
		cm, err := proxied.CoreV1().ConfigMaps("kubetest").Get(ctx, "before", metav1.GetOptions{})
		return err == nil && cm.Data["k"] == "v"
	}, 30*time.Second, 100*time.Millisecond)
}
