package hub

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/internal/promreg"
)

// The transports, as metrics label them.
const (
	transportWebSocket = "websocket"
	transportSSE       = "sse"
	transportLongPoll  = "longpoll"
)

// refusalReasons is the closed set of the refusals metric's reason label:
// the error codes, and the refusals that come before any frame can be
// sent.
var refusalReasons = []string{
	codeBadRequest, codeUnsupportedVersion, codeForbidden, codeTooManyTopics, codeTooLarge,
	codeRateLimited, codeTooManyConnections, codeRejected, codeUnavailable, "origin",
}

type metrics struct {
	connections *prometheus.GaugeVec   // transport
	refusals    *prometheus.CounterVec // reason
	slow        *prometheus.CounterVec // transport
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cometkit_hub_connections",
			Help: "Connections open now, by transport: WebSockets, event streams, long-polls in progress.",
		}, []string{"transport"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cometkit_hub_refusals_total",
			Help: "Requests, connections and frames the hub refused, by reason (the error code, or origin).",
		}, []string{"reason"}),
		slow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cometkit_hub_slow_consumers_total",
			Help: "Connections closed because the client did not take what was sent to it in time, by transport.",
		}, []string{"transport"}),
	}
	if reg != nil {
		m.connections = promreg.Register(reg, m.connections)
		m.refusals = promreg.Register(reg, m.refusals)
		m.slow = promreg.Register(reg, m.slow)
	}
	// Every series of the closed label sets exists from the start, at 0.
	for _, t := range []string{transportWebSocket, transportSSE, transportLongPoll} {
		m.connections.WithLabelValues(t)
	}
	for _, t := range []string{transportWebSocket, transportSSE} {
		m.slow.WithLabelValues(t)
	}
	for _, r := range refusalReasons {
		m.refusals.WithLabelValues(r)
	}
	return m
}

func (m *metrics) refused(reason string) { m.refusals.WithLabelValues(reason).Inc() }
