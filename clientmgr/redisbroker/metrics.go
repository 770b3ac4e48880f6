package redisbroker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/internal/promreg"
)

type metrics struct {
	errors     *prometheus.CounterVec
	reconnects prometheus.Counter
	gaps       prometheus.Counter
	recovered  prometheus.Counter
	resets     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cometkit_redis_errors_total",
			Help: "Redis operations that failed, by operation (publish, subscribe, repair, catch-up, sync, decode).",
		}, []string{"op"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_redis_resubscriptions_total", Help: "Times the channel was subscribed again after its connection was lost.",
		}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_redis_gaps_repaired_total", Help: "Seq jumps on the channel repaired from the stream before delivery.",
		}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_redis_messages_recovered_total", Help: "Messages read from streams rather than the channel: repairs, catch-ups and syncs.",
		}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cometkit_redis_sequence_resets_total", Help: "Topics whose Seq started again in Redis (it lost its data), so this node dropped its copy.",
		}),
	}
	if reg != nil {
		m.errors = promreg.Register(reg, m.errors)
		m.reconnects = promreg.Register(reg, m.reconnects)
		m.gaps = promreg.Register(reg, m.gaps)
		m.recovered = promreg.Register(reg, m.recovered)
		m.resets = promreg.Register(reg, m.resets)
	}
	return m
}
