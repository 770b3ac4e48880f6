package continuation

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are always built, so the hot path never checks for their absence;
// they are registered only on the Registerer passed to WithMetrics.
type metrics struct {
	suspended       prometheus.Gauge
	queueLength     prometheus.Gauge
	rejected        prometheus.Counter
	suspendDuration prometheus.Observer
	dispatches      [dispatchKinds]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
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

	if reg != nil {
		var err error
		suspended = register(reg, suspended, &err)
		queueLength = register(reg, queueLength, &err)
		rejected = register(reg, rejected, &err)
		duration = register(reg, duration, &err)
		dispatches = register(reg, dispatches, &err)
		if err != nil {
			return nil, err
		}
	}
	m := &metrics{
		suspended:       suspended,
		queueLength:     queueLength,
		rejected:        rejected,
		suspendDuration: duration,
	}
	for k := range dispatchKind(dispatchKinds) {
		m.dispatches[k] = dispatches.WithLabelValues(k.String())
	}
	return m, nil
}

// register registers c on reg, or returns the collector already registered
// under the same description, so that two Dispatchers on one registry share
// their metrics. The first other error is kept in *errp.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if *errp == nil {
		*errp = err
	}
	return c
}
