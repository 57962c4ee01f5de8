package grpclite

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the transport's Prometheus metrics, for the SDS port.
type Metrics struct {
	conns  prometheus.Gauge
	closed *prometheus.CounterVec
	limits *prometheus.CounterVec
}

// Limits that trip, the values of the limit label.
const (
	// LimitConnections: a connection beyond MaxConnections was closed.
	LimitConnections = "connections"
	// LimitUnauthenticatedStreams: a stream beyond maxUnauthStreams on a
	// connection not yet authenticated was refused.
	LimitUnauthenticatedStreams = "unauthenticated_streams"
	// LimitUnauthenticatedMessage: a message larger than maxUnauthMessage
	// on a connection not yet authenticated was refused.
	LimitUnauthenticatedMessage = "unauthenticated_message"
	// LimitConnBuffered: a stream's flow-control window was held back
	// because its connection held MaxConnBuffered of incomplete or unread
	// messages (counted once per stream and stall).
	LimitConnBuffered = "connection_buffer"
	// LimitUnauthorized: Authorize refused a stream.
	LimitUnauthorized = "unauthorized_stream"
)

// Reasons a connection closed, the values of the reason label.
const (
	// ReasonClient: the client closed it or it broke.
	ReasonClient = "client"
	// ReasonHandshake: TLS or the HTTP/2 preface failed or timed out.
	ReasonHandshake = "handshake"
	// ReasonProtocol: the client broke the HTTP/2 protocol.
	ReasonProtocol = "protocol"
	// ReasonFlood: the client sent more resets, pings or settings than its
	// budget.
	ReasonFlood = "flood"
	// ReasonKeepalive: a keepalive ping went unanswered.
	ReasonKeepalive = "keepalive"
	// ReasonWriteTimeout: a write timed out: the client stopped reading.
	ReasonWriteTimeout = "write_timeout"
	// ReasonServer: the server stopped.
	ReasonServer = "server"
	// ReasonUnauthenticated: no stream authenticated the connection within
	// UnauthenticatedTimeout.
	ReasonUnauthenticated = "unauthenticated"
)

// NewMetrics creates the metrics and registers them with reg, which may be
// nil (kept but not exported). It fails when reg holds metrics of the
// same names.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshsds_sds_connections", Help: "Open HTTP/2 connections on the SDS port.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_connections_closed_total",
			Help: "Connections on the SDS port that ended, by reason (client, handshake, protocol, flood, keepalive, write_timeout, server, unauthenticated).",
		}, []string{"reason"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshsds_sds_limits_exceeded_total",
			Help: "Limits of the SDS port that tripped: connections, unauthenticated_streams, unauthenticated_message, connection_buffer, unauthorized_stream.",
		}, []string{"limit"}),
	}
	// Every reason and limit is exported from the start, at 0, so that a
	// rate or an alert over it has a series before the first trip.
	for _, r := range []string{
		ReasonClient, ReasonHandshake, ReasonProtocol, ReasonFlood,
		ReasonKeepalive, ReasonWriteTimeout, ReasonServer, ReasonUnauthenticated,
	} {
		m.closed.WithLabelValues(r)
	}
	for _, l := range []string{
		LimitConnections, LimitUnauthenticatedStreams, LimitUnauthenticatedMessage,
		LimitConnBuffered, LimitUnauthorized,
	} {
		m.limits.WithLabelValues(l)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.closed, m.limits} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering transport metrics: %w", err)
			}
		}
	}
	return m, nil
}

// closeReason classifies why a connection ended: err is the first reason
// recorded, started whether the handshake and preface were done.
func closeReason(err error, started bool) string {
	var ce *connError
	switch {
	case errors.As(err, &ce) && ce.code == errCodeEnhanceYourCalm:
		return ReasonFlood
	case errors.As(err, &ce):
		return ReasonProtocol
	case errors.Is(err, errKeepaliveTimeout):
		return ReasonKeepalive
	case errors.Is(err, errWriteTimeout):
		return ReasonWriteTimeout
	case errors.Is(err, errServerStopped):
		return ReasonServer
	case errors.Is(err, errUnauthenticated):
		return ReasonUnauthenticated
	case !started:
		return ReasonHandshake
	}
	return ReasonClient
}
