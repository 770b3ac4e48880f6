package clientmgr

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/internal/promreg"
)

type metrics struct {
	topics       prometheus.Gauge
	registered   prometheus.Gauge
	messages     prometheus.Counter
	deliveries   prometheus.Counter
	batchDropped prometheus.Counter
	syncFailed   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		topics: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cometkit_clientmgr_topics", Help: "Topics alive.",
		}),
		registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cometkit_clientmgr_registered", Help: "Registrations of continuations on topics.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_clientmgr_messages_total", Help: "Messages broadcast through this node.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_clientmgr_deliveries_total", Help: "Messages added to a registered continuation's batch.",
		}),
		batchDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_clientmgr_batch_dropped_total", Help: "Messages dropped from a full batch (WithMaxBatch); the client gets them again from the history.",
		}),
		syncFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_clientmgr_sync_failed_total", Help: "Times a SyncBroker could not bring a topic up to date before a cursor was answered; the node answered from its own copy.",
		}),
	}
	if reg != nil {
		m.topics = promreg.Register(reg, m.topics)
		m.registered = promreg.Register(reg, m.registered)
		m.messages = promreg.Register(reg, m.messages)
		m.deliveries = promreg.Register(reg, m.deliveries)
		m.batchDropped = promreg.Register(reg, m.batchDropped)
		m.syncFailed = promreg.Register(reg, m.syncFailed)
	}
	return m
}
