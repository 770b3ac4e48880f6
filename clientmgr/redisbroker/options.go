package redisbroker

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/clientmgr"
)

// An Option configures a Broker.
type Option func(*config)

type config struct {
	prefix         string
	history        int
	publishTimeout time.Duration
	registerer     prometheus.Registerer
	logger         *slog.Logger
}

func newConfig(opts []Option) config {
	cfg := config{
		prefix:         DefaultPrefix,
		history:        clientmgr.DefaultHistory,
		publishTimeout: DefaultPublishTimeout,
		logger:         slog.Default(),
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// WithPrefix sets the prefix of the broker's Redis keys and channel
// (default DefaultPrefix). Nodes that share topics use the same prefix;
// different prefixes keep applications apart on one Redis.
func WithPrefix(p string) Option {
	return func(c *config) {
		if p != "" {
			c.prefix = p
		}
	}
}

// WithHistory sets how many messages each topic's stream keeps, at least
// (default clientmgr.DefaultHistory). Use the Managers' WithHistory value.
func WithHistory(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.history = n
		}
	}
}

// WithPublishTimeout bounds a Publish whose context has no deadline, and
// the subscription at Attach (default DefaultPublishTimeout).
func WithPublishTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.publishTimeout = d
		}
	}
}

// WithMetrics registers the broker's metrics with reg.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(c *config) { c.registerer = reg }
}

// WithLogger sets where the broker reports what it cannot return as an
// error (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}
