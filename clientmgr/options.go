package clientmgr

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults used by New.
const (
	DefaultHistory        = 256             // messages kept per topic
	DefaultMaxMessageSize = 64 << 10        // bytes of one message
	DefaultMaxTopics      = 100_000         // topics alive at once
	DefaultIdleTimeout    = 5 * time.Minute // before a topic without subscribers or messages is reclaimed
	DefaultMaxBatch       = 1024            // messages held for one continuation between two dispatches
)

// MaxTopicLen is the longest topic name, in bytes.
const MaxTopicLen = 256

// An Option configures a Manager.
type Option func(*config)

type config struct {
	history     int
	maxMessage  int
	maxTopics   int
	idleTimeout time.Duration
	maxBatch    int
	broker      Broker
	registerer  prometheus.Registerer
	shards      int
}

func newConfig(opts []Option) config {
	cfg := config{
		history:     DefaultHistory,
		maxMessage:  DefaultMaxMessageSize,
		maxTopics:   DefaultMaxTopics,
		idleTimeout: DefaultIdleTimeout,
		maxBatch:    DefaultMaxBatch,
		shards:      defaultShards,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// WithHistory sets how many messages each topic keeps for Since and for
// Register's cursor (default DefaultHistory; n < 1 keeps the default).
func WithHistory(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.history = n
		}
	}
}

// WithMaxMessageSize sets the largest message Broadcast accepts, in bytes;
// beyond it Broadcast returns ErrMessageTooLarge (default
// DefaultMaxMessageSize; n < 1 keeps the default).
func WithMaxMessageSize(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxMessage = n
		}
	}
}

// WithMaxTopics caps the topics alive at once; creating one more returns
// ErrTooManyTopics (default DefaultMaxTopics; n < 1 keeps the default).
// Client-chosen topic names therefore cannot grow memory without bound.
func WithMaxTopics(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxTopics = n
		}
	}
}

// WithIdleTimeout sets how long a topic with no subscriber and no new
// message lives before it is reclaimed with its history (default
// DefaultIdleTimeout; d <= 0 keeps the default). A reclaimed topic starts
// again at Seq 1, as after a restart: a client's cursor from before is
// larger than the new last Seq, and Register and Since treat it so.
func WithIdleTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.idleTimeout = d
		}
	}
}

// WithMaxBatch bounds the messages held for one continuation between its
// registration and its next dispatch, so that a slow consumer cannot make
// the Manager hold a topic's whole traffic. Beyond it the oldest are
// dropped; the handler sees the gap as a Seq jump, and a client that
// re-polls with its cursor gets them again from the history (default
// DefaultMaxBatch; n < 1 keeps the default).
func WithMaxBatch(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxBatch = n
		}
	}
}

// WithBroker sets the broker that carries messages between nodes (default:
// NewInProcessBroker, a single node).
func WithBroker(b Broker) Option {
	return func(c *config) { c.broker = b }
}

// WithMetrics registers the Manager's metrics on reg (and on no other
// registry). Managers sharing a registry share its collectors.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(c *config) { c.registerer = reg }
}
