package redisbroker

import (
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/internal/argcheck"
)

// Defaults used by New and Open.
const (
	DefaultPrefix         = "cometkit"
	DefaultPublishTimeout = 2 * time.Second
)

// An Option configures a Broker. An option's argument means what it says,
// and a default is what you get by not passing the option: a value that
// cannot be meant (an empty prefix, a duration of 0 or less, a nil
// registry or logger) makes New and Open panic, naming the option.
type Option func(*config)

// check rejects an argument that cannot be meant, naming the option.
const check = argcheck.Package("redisbroker")

type config struct {
	prefix         string
	publishTimeout time.Duration
	registerer     prometheus.Registerer
	logger         *slog.Logger
}

func newConfig(opts []Option) config {
	cfg := config{
		prefix:         DefaultPrefix,
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
// different prefixes keep applications apart on one Redis. The prefix may
// not contain '{' or '}', which would move the keys' hash tag.
func WithPrefix(p string) Option {
	return func(c *config) {
		check.That(p != "" && !strings.ContainsAny(p, "{}"), "WithPrefix", p, "a prefix is not empty and has no '{' or '}'")
		c.prefix = p
	}
}

// WithPublishTimeout bounds a Publish whose context has no deadline
// (default DefaultPublishTimeout), and each try of the broker's own
// writes, such as starting a topic's new epoch.
func WithPublishTimeout(d time.Duration) Option {
	return func(c *config) { c.publishTimeout = check.Positive("WithPublishTimeout", d) }
}

// WithMetrics registers the broker's metrics on reg (and on no other
// registry). Brokers sharing a registry share its collectors.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(c *config) {
		check.That(reg != nil, "WithMetrics", reg, "leave the option out to register nothing")
		c.registerer = reg
	}
}

// WithLogger sets where the broker reports what it cannot return as an
// error: a subscription lost and made again, a topic that starts a new
// epoch because Redis lost messages (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		check.That(l != nil, "WithLogger", l, "pass a logger; slog.New(slog.DiscardHandler) discards")
		c.logger = l
	}
}
