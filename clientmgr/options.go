package clientmgr

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cometkit/cometkit/internal/argcheck"
)

// Defaults used by New and Open.
const (
	DefaultHistory        = 256             // messages kept per topic
	DefaultMaxMessageSize = 64 << 10        // bytes of one message
	DefaultMaxTopics      = 100_000         // topics a node holds at once
	DefaultIdleTimeout    = 5 * time.Minute // before a topic without subscribers or messages is reclaimed
	DefaultMaxBatch       = 1024            // messages held for one continuation between two dispatches
	DefaultReadTimeout    = 2 * time.Second // bound on the history read of Since, which takes no context
)

// MaxTopicLen is the longest topic name, in bytes.
const MaxTopicLen = 256

// An Option configures a Manager. An option's argument means what it says,
// and the defaults are what you get by not passing the option: a value
// that cannot be meant (a size below 1, a duration of 0 or less, a nil
// broker or registry) makes New and Open panic, naming the option.
type Option func(*config)

type config struct {
	history      int
	historyBytes int
	maxMessage   int
	maxTopics    int
	idleTimeout  time.Duration
	maxBatch     int
	broker       Broker
	registerer   prometheus.Registerer
	shards       int
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

// check rejects an argument that cannot be meant, naming the option.
const check = argcheck.Package("clientmgr")

// WithHistory sets how many messages each topic keeps for History, Since
// and the cursors of registrations, in whatever broker keeps them
// (default DefaultHistory). A client whose cursor is older than that is
// told its batch is incomplete.
func WithHistory(n int) Option {
	return func(c *config) { c.history = check.AtLeastOne("WithHistory", n) }
}

// WithHistoryBytes bounds the data each topic keeps in this process's
// history, in bytes, besides WithHistory's count: the oldest messages go
// first, and the newest is always kept. Without it a topic may hold
// WithHistory messages of WithMaxMessageSize each. A broker whose history
// lives elsewhere (Redis) keeps its own bound.
func WithHistoryBytes(n int) Option {
	return func(c *config) { c.historyBytes = check.AtLeastOne("WithHistoryBytes", n) }
}

// WithMaxMessageSize sets the largest message Broadcast accepts, in bytes;
// beyond it Broadcast returns ErrMessageTooLarge (default
// DefaultMaxMessageSize).
func WithMaxMessageSize(n int) Option {
	return func(c *config) { c.maxMessage = check.AtLeastOne("WithMaxMessageSize", n) }
}

// WithMaxTopics caps the topics a node holds at once; a registration or a
// Broadcast that would make one more returns ErrTooManyTopics (default
// DefaultMaxTopics). Client-chosen topic names therefore cannot grow
// memory without bound.
func WithMaxTopics(n int) Option {
	return func(c *config) { c.maxTopics = check.AtLeastOne("WithMaxTopics", n) }
}

// WithIdleTimeout sets how long a topic with no subscriber and no new
// message is kept before it is reclaimed (default DefaultIdleTimeout).
// With the in-process broker its history goes too, and the topic starts
// again at Seq 1 under a new epoch, as after a restart; a client's cursor
// from before gets an incomplete batch.
func WithIdleTimeout(d time.Duration) Option {
	return func(c *config) { c.idleTimeout = check.Positive("WithIdleTimeout", d) }
}

// WithMaxBatch bounds the messages held for one continuation between its
// registration and its next dispatch, so that a slow consumer cannot make
// the Manager hold a topic's whole traffic (default DefaultMaxBatch). A
// full batch takes no more: the client's next registration, from the
// cursor of the last message it got, reads the rest from the history.
func WithMaxBatch(n int) Option {
	return func(c *config) { c.maxBatch = check.AtLeastOne("WithMaxBatch", n) }
}

// WithBroker sets the broker that owns the topics' sequences and history
// and carries messages between nodes (default: NewInProcessBroker, a
// single node). The Manager starts it, and closes it on Close. A broker
// that does I/O is started by Open, which returns its error.
func WithBroker(b Broker) Option {
	return func(c *config) {
		check.That(b != nil, "WithBroker", b, "leave the option out for the in-process broker")
		c.broker = b
	}
}

// WithMetrics registers the Manager's metrics on reg (and on no other
// registry). Managers sharing a registry share its collectors.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(c *config) {
		check.That(reg != nil, "WithMetrics", reg, "leave the option out to register nothing")
		c.registerer = reg
	}
}
