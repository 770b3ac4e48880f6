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
	batchFull    prometheus.Counter
	historyReads prometheus.Counter
	incomplete   prometheus.Counter
	rewound      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "cometkit_clientmgr_" + name, Help: help})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "cometkit_clientmgr_" + name, Help: help})
	}
	m := &metrics{
		topics:       gauge("topics", "Topics this node holds."),
		registered:   gauge("registered", "Registrations of continuations on topics."),
		messages:     counter("messages_total", "Messages broadcast through this node."),
		deliveries:   counter("deliveries_total", "Messages added to a registered continuation's batch."),
		batchFull:    counter("batch_full_total", "Batches that reached WithMaxBatch; the client gets the rest from the history."),
		historyReads: counter("history_reads_total", "Registrations that read the broker's history (the cursor was not where this node stood)."),
		incomplete:   counter("incomplete_total", "Registrations whose cursor could not be honoured (another epoch, older than the history, ahead of the topic): the client was told it may have missed messages."),
		rewound:      counter("sequence_rewound_total", "Messages that went back in their topic's sequence: the broker's engine lost acknowledged messages."),
	}
	if reg != nil {
		m.topics = promreg.Register(reg, m.topics)
		m.registered = promreg.Register(reg, m.registered)
		m.messages = promreg.Register(reg, m.messages)
		m.deliveries = promreg.Register(reg, m.deliveries)
		m.batchFull = promreg.Register(reg, m.batchFull)
		m.historyReads = promreg.Register(reg, m.historyReads)
		m.incomplete = promreg.Register(reg, m.incomplete)
		m.rewound = promreg.Register(reg, m.rewound)
	}
	return m
}
