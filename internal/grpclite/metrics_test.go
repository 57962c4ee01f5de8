package grpclite_test

import (
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/meshsds/meshsds/internal/grpclite"
)

func TestConnectionMetrics(t *testing.T) {
	tests := []struct {
		name   string
		cfg    grpclite.Config
		end    func(c *rawConn)
		reason string
	}{
		{"client closes", grpclite.Config{}, func(c *rawConn) { c.start(); c.nc.Close() }, grpclite.ReasonClient},
		{"not HTTP/2", grpclite.Config{}, func(c *rawConn) {
			_, _ = io.WriteString(c.nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		}, grpclite.ReasonHandshake},
		{"protocol error", grpclite.Config{}, func(c *rawConn) {
			c.start()
			_ = c.fr.WriteData(0, false, []byte("x"))
		}, grpclite.ReasonProtocol},
		{"ping flood", grpclite.Config{}, func(c *rawConn) {
			c.start()
			go func() { _, _ = io.Copy(io.Discard, c.nc) }()
			for i := 0; i < 3000; i++ {
				if c.fr.WritePing(false, [8]byte{}) != nil {
					return
				}
			}
		}, grpclite.ReasonFlood},
		{"keepalive unanswered", grpclite.Config{KeepaliveTime: 50 * time.Millisecond, KeepaliveTimeout: 50 * time.Millisecond}, func(c *rawConn) {
			c.start() // and never reads, so never answers a ping
		}, grpclite.ReasonKeepalive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := grpclite.NewMetrics(reg)
			require.NoError(t, err)
			tc.cfg.Metrics = m
			ts := startServer(t, serverSetup{cfg: tc.cfg})
			c := dialRaw(t, ts.addr)
			require.Eventually(t, func() bool { return openConns(t, reg) == 1 },
				waitTime, 5*time.Millisecond, "the open connection is counted")
			tc.end(c)
			require.Eventually(t, func() bool { return closedTotal(t, reg, tc.reason) == 1 }, waitTime, 5*time.Millisecond,
				"closed for %s", tc.reason)
			require.Eventually(t, func() bool { return openConns(t, reg) == 0 },
				waitTime, 5*time.Millisecond)
		})
	}

	t.Run("server stops", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m, err := grpclite.NewMetrics(reg)
		require.NoError(t, err)
		ts := startServer(t, serverSetup{cfg: grpclite.Config{Metrics: m}})
		c := dialRaw(t, ts.addr)
		c.start()
		await[*http2.SettingsFrame](c)
		ts.Stop()
		require.Equal(t, 1.0, closedTotal(t, reg, grpclite.ReasonServer))
	})
}

// openConns is the value of meshsds_sds_connections.
func openConns(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == "meshsds_sds_connections" {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

func closedTotal(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	total := 0.0
	for _, f := range families {
		if f.GetName() != "meshsds_sds_connections_closed_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}
