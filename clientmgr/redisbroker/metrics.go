package redisbroker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/internal/promreg"
)

type metrics struct {
	errors          *prometheus.CounterVec
	resubscriptions prometheus.Counter
	lossEpochs      prometheus.Counter
	rewinds         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cometkit_redis_errors_total",
			Help: "Redis operations that failed, by operation (publish, history, head, subscribe, new-epoch, decode).",
		}, []string{"op"}),
		resubscriptions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_redis_resubscriptions_total",
			Help: "Times the channel was subscribed again after its connection was lost; each wakes the node's waiting clients.",
		}),
		lossEpochs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_redis_loss_epochs_total",
			Help: "Topics this node started under a new epoch because Redis had lost messages the nodes had seen.",
		}),
		rewinds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_redis_rewinds_total",
			Help: "Messages this node refused because they went back in their topic's sequence (Redis restored older data).",
		}),
	}
	if reg != nil {
		m.errors = promreg.Register(reg, m.errors)
		m.resubscriptions = promreg.Register(reg, m.resubscriptions)
		m.lossEpochs = promreg.Register(reg, m.lossEpochs)
		m.rewinds = promreg.Register(reg, m.rewinds)
	}
	return m
}
