package continuation

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/internal/promreg"
)

// metrics are always built, so the hot path never checks for their absence;
// they are registered only on the Registerer passed to WithMetrics.
type metrics struct {
	suspended       prometheus.Gauge
	queueLength     prometheus.Gauge
	rejected        prometheus.Counter
	suspendDuration prometheus.Observer
	dispatches      [dispatchKinds]prometheus.Counter
	detached        prometheus.Gauge
	attachedWaits   [attachReasons]prometheus.Counter // by reason; none for detachedOK
}

func newMetrics(reg prometheus.Registerer) *metrics {
	suspended := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cometkit_continuations_suspended",
		Help: "Requests suspended now.",
	})
	queueLength := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cometkit_dispatch_queue_length",
		Help: "Dispatches (new requests and redispatches) waiting for a worker.",
	})
	rejected := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cometkit_requests_rejected_total",
		Help: "New requests answered 503 because the pool and its queue were full or the dispatcher was shutting down.",
	})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cometkit_suspend_duration_seconds",
		Help: "Time from Suspend until the suspension was resumed, completed, expired or abandoned by the client.",
		// Long-polls wait up to minutes; the default buckets stop at 10 s.
		Buckets: prometheus.ExponentialBucketsRange(0.001, 600, 16),
	})
	dispatches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cometkit_dispatches_total",
		Help: "Dispatches of the handler, by cause.",
	}, []string{"kind"})
	detached := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cometkit_requests_detached",
		Help: "Requests detached from net/http now: waiting with no goroutine, or dispatched on one the pool started.",
	})
	attachedWaits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cometkit_attached_waits_total",
		Help: "Waits of suspended requests that kept their net/http goroutine, by why they could not detach.",
	}, []string{"reason"})

	if reg != nil {
		suspended = promreg.Register(reg, suspended)
		queueLength = promreg.Register(reg, queueLength)
		rejected = promreg.Register(reg, rejected)
		duration = promreg.Register(reg, duration)
		dispatches = promreg.Register(reg, dispatches)
		detached = promreg.Register(reg, detached)
		attachedWaits = promreg.Register(reg, attachedWaits)
	}
	m := &metrics{
		suspended:       suspended,
		queueLength:     queueLength,
		rejected:        rejected,
		suspendDuration: duration,
		detached:        detached,
	}
	for k := range dispatchKind(dispatchKinds) {
		m.dispatches[k] = dispatches.WithLabelValues(k.String())
	}
	// Every reason from the start, so that a zero shows as zero.
	for r := detachedOK + 1; r < attachReasons; r++ {
		m.attachedWaits[r] = attachedWaits.WithLabelValues(attachReasonNames[r])
	}
	return m
}
