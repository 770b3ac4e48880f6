package continuation

import (
	"log/slog"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults used by NewDispatcher. The reasoning behind each number, with the
// benchmarks that support it, is in the comment on the constant.
const (
	// DefaultWorkersPerCPU sets the default pool size: this many workers per
	// GOMAXPROCS. BenchmarkWorkers (512 clients, 2 CPUs) shows why: handlers
	// that compute for 20 µs run as fast with 1 worker per CPU as with 256
	// (22.5 µs/op either way), but handlers that block for 1 ms (a database
	// read) keep gaining up to 256 per CPU (1.17 ms/op at 1, 23 µs at 64,
	// 7.2 µs at 256). A slot costs nothing while unused, so the default is
	// large; lower it to protect a downstream that cannot take that many
	// concurrent calls.
	DefaultWorkersPerCPU = 256

	// DefaultQueueSize is the default number of new requests that may wait
	// for a worker before further new requests get 503. A waiting request
	// costs about what a suspended one costs (its net/http goroutine exists
	// either way), so the queue bounds latency, not memory; it is large
	// enough to absorb the re-polls that follow a broadcast (redispatches
	// never count against it, and new requests and redispatches take turns
	// when both wait, so re-polls do not pile up behind a broadcast).
	DefaultQueueSize = 4096

	// DefaultTimeout is the suspension timeout used when neither
	// Continuation.SetTimeout nor WithDefaultTimeout says otherwise: 30 s,
	// as in Jetty.
	DefaultTimeout = 30 * time.Second
)

// An Option configures a Dispatcher.
type Option func(*config)

type config struct {
	workers        int
	queueSize      int
	defaultTimeout time.Duration
	maxSuspended   int
	registerer     prometheus.Registerer
	logger         *slog.Logger
}

func newConfig(opts []Option) config {
	cfg := config{
		workers:        DefaultWorkersPerCPU * runtime.GOMAXPROCS(0),
		queueSize:      DefaultQueueSize,
		defaultTimeout: DefaultTimeout,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// WithWorkers sets the size of the bounded pool that runs every dispatch
// (the first, and each one after Resume or expiry). A suspended request
// holds no worker. n <= 0 keeps the default, DefaultWorkersPerCPU ×
// GOMAXPROCS.
func WithWorkers(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.workers = n
		}
	}
}

// WithQueueSize sets how many new requests may wait for a worker; a new
// request beyond it is answered 503 with Retry-After. Redispatches of
// admitted requests wait too but never count against it and are never
// refused. 0 refuses a new request as soon as every worker is busy; n < 0
// keeps the default, DefaultQueueSize.
func WithQueueSize(n int) Option {
	return func(c *config) {
		if n >= 0 {
			c.queueSize = n
		}
	}
}

// WithDefaultTimeout sets the timeout of a suspension whose request did not
// call SetTimeout. d <= 0 means suspensions never expire (they still end on
// Resume, Complete, client disconnect or Shutdown). The default is
// DefaultTimeout.
func WithDefaultTimeout(d time.Duration) Option {
	return func(c *config) { c.defaultTimeout = max(d, 0) }
}

// WithMaxSuspended caps the number of requests suspended at once; Suspend
// beyond it returns ErrOverloaded. n <= 0 means no cap (the default).
func WithMaxSuspended(n int) Option {
	return func(c *config) { c.maxSuspended = max(n, 0) }
}

// WithMetrics registers the Dispatcher's metrics on reg. Without it the
// Dispatcher registers nothing, not even on the global registry. Several
// Dispatchers may share one registry: they share its collectors, so each
// metric reports their sum.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(c *config) { c.registerer = reg }
}

// WithLogger sets the logger for recovered panics and refused requests. The
// default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}
