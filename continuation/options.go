package continuation

import (
	"log/slog"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/internal/argcheck"
)

// Defaults used by NewDispatcher: what a Dispatcher does when the option
// that sets each value is not passed.
const (
	// DefaultWorkersPerCPU sets the default pool size: this many workers per
	// GOMAXPROCS. Handlers that compute gain nothing from more workers than
	// CPUs, but handlers that block (a database read) keep gaining up to
	// hundreds per CPU, and a slot costs nothing while unused; so the
	// default is large. Lower it with [WithWorkers] to protect a downstream
	// that cannot take that many concurrent calls. Measurements:
	// docs/benchmarks.md, "Design choices in the engine".
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
	// [Continuation.SetTimeout] nor [WithDefaultTimeout] says otherwise:
	// 30 s, as in Jetty.
	DefaultTimeout = 30 * time.Second

	// DefaultBodyBuffer is how much of a request's body the Dispatcher reads
	// into memory before the request takes a worker (see [WithBodyBuffer]):
	// enough for the forms and JSON documents that long-polls and
	// publishes carry.
	DefaultBodyBuffer = 64 << 10

	// DefaultBodyTimeout is how long a request's whole body may take to
	// arrive (see [WithBodyTimeout]).
	DefaultBodyTimeout = 30 * time.Second
)

// An Option configures a Dispatcher. An option's argument means what it
// says: a value that cannot be meant (a negative size or duration, a pool
// of no workers, a nil registerer) makes NewDispatcher panic with a
// message naming the option.
type Option func(*config)

type config struct {
	workers        int
	queueSize      int
	defaultTimeout time.Duration
	maxSuspended   int // 0: no cap
	bodyBuffer     int
	bodyTimeout    time.Duration
	registerer     prometheus.Registerer
	logger         *slog.Logger
}

func newConfig(opts []Option) config {
	cfg := config{
		workers:        DefaultWorkersPerCPU * runtime.GOMAXPROCS(0),
		queueSize:      DefaultQueueSize,
		defaultTimeout: DefaultTimeout,
		bodyBuffer:     DefaultBodyBuffer,
		bodyTimeout:    DefaultBodyTimeout,
		logger:         slog.Default(),
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// check rejects an argument that cannot be meant, naming the option.
const check = argcheck.Package("continuation")

// WithWorkers sets the size of the bounded pool that runs every dispatch
// (the first, and each one after Resume or expiry); n must be at least 1.
// A suspended request holds no worker. Without this option the pool has
// DefaultWorkersPerCPU × GOMAXPROCS workers.
func WithWorkers(n int) Option {
	return func(c *config) {
		check.That(n >= 1, "WithWorkers", n, "a pool needs at least one worker")
		c.workers = n
	}
}

// WithQueueSize sets how many new requests may wait for a worker; a new
// request beyond it is answered 503 with Retry-After. Redispatches of
// admitted requests wait too but never count against it and are never
// refused. 0 means no queue: a new request is refused as soon as every
// worker is busy. Without this option the queue holds DefaultQueueSize.
func WithQueueSize(n int) Option {
	return func(c *config) {
		check.That(n >= 0, "WithQueueSize", n, "a queue cannot be shorter than empty")
		c.queueSize = n
	}
}

// WithDefaultTimeout sets the timeout of a suspension whose request did not
// call SetTimeout. 0 means suspensions never expire (they still end on
// Resume, Complete, client disconnect or Shutdown). Without this option the
// timeout is DefaultTimeout.
func WithDefaultTimeout(d time.Duration) Option {
	return func(c *config) {
		check.That(d >= 0, "WithDefaultTimeout", d, "a timeout cannot be negative; 0 means never expire")
		c.defaultTimeout = d
	}
}

// WithMaxSuspended caps the number of requests suspended at once; Suspend
// beyond it returns ErrOverloaded. n must be at least 1. Without this
// option there is no cap.
func WithMaxSuspended(n int) Option {
	return func(c *config) {
		check.That(n >= 1, "WithMaxSuspended", n, "a cap must allow at least one suspended request; for no cap, leave the option out")
		c.maxSuspended = n
	}
}

// WithBodyBuffer sets how many bytes of a request's body the Dispatcher
// reads into memory, on the request's own goroutine, before the request
// takes a worker; the handler then reads them from memory, so a client
// that sends its body slowly holds no worker while it does. The rest of a
// longer body streams to the handler as it reads, under the deadline of
// [WithBodyTimeout]. 0 means none is read ahead: every body streams to the
// handler. Without this option the buffer is DefaultBodyBuffer.
func WithBodyBuffer(n int) Option {
	return func(c *config) {
		check.That(n >= 0, "WithBodyBuffer", n, "a buffer cannot be negative; 0 means read nothing ahead")
		c.bodyBuffer = n
	}
}

// WithBodyTimeout sets how long a request's whole body may take to arrive,
// counted from when the Dispatcher first sees the request; d must be
// positive (for slow uploads, pass a long one). A body that has not
// arrived in time is answered 408 Request Timeout; a handler reading the
// rest of a body longer than [WithBodyBuffer] gets an error wrapping
// [os.ErrDeadlineExceeded]. The deadline is set with
// [http.ResponseController.SetReadDeadline], so it replaces
// [http.Server.ReadTimeout] for the body, and it applies only where the
// ResponseWriter supports read deadlines (net/http's do, for HTTP/1.x and
// HTTP/2). Without this option the timeout is DefaultBodyTimeout.
func WithBodyTimeout(d time.Duration) Option {
	return func(c *config) {
		check.That(d > 0, "WithBodyTimeout", d, "a body needs a deadline; for slow uploads pass a long one")
		c.bodyTimeout = d
	}
}

// WithMetrics registers the Dispatcher's metrics on reg, which must not be
// nil. Without it the Dispatcher registers nothing, not even on the global
// registry. Several Dispatchers may share one registry: they share its
// collectors, so each metric reports their sum.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(c *config) {
		check.That(reg != nil, "WithMetrics", reg, "pass a prometheus.Registerer, or leave the option out to register nothing")
		c.registerer = reg
	}
}

// WithLogger sets the logger for recovered panics and refused requests; l
// must not be nil. Without this option the Dispatcher logs to
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		check.That(l != nil, "WithLogger", l, "pass a logger; slog.New(slog.DiscardHandler) discards")
		c.logger = l
	}
}
