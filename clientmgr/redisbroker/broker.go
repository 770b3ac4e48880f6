package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/internal/sleep"
)

// ErrClosed is returned by a Broker's methods after Close.
var ErrClosed = errors.New("redisbroker: closed")

// The pauses between tries of what the broker retries by itself: the
// subscription at Start, and a new epoch after a rewind.
const (
	retryMin = 50 * time.Millisecond
	retryMax = time.Second
)

// A Broker is a [clientmgr.Broker] backed by Redis. Make one per Manager;
// it serves the node that starts it.
type Broker struct {
	rdb       redis.UniversalClient
	ownClient bool // made by Open: closed by Close
	cfg       config
	metrics   *metrics
	channel   string

	// ctx ends at Close: it stops the subscription's retries at Start and
	// the receiving goroutine's.
	ctx    context.Context
	cancel context.CancelFunc

	// Set by Start, before the receiving goroutine starts.
	node         clientmgr.Node
	history      int // messages a stream keeps, and a History read returns, at most
	historyBytes int // data a History read returns at most; 0: no bound

	mu      sync.Mutex
	started bool
	closed  bool
	pubsub  *redis.PubSub
	done    chan struct{} // closed when the receiving goroutine ends

	closeOnce sync.Once
	closeErr  error
}

// New returns a Broker on rdb, which stays the caller's to close, after
// the Manager. It does no I/O: the Manager's Open starts it. Give rdb
// ContextTimeoutEnabled, so that commands honour their context's deadline,
// and MaxRetries -1, so that a publish whose reply was lost is not run
// (and stored) twice; Open does both.
func New(rdb redis.UniversalClient, opts ...Option) *Broker {
	check.That(rdb != nil, "New", rdb, "a Broker needs a Redis client")
	return newBroker(rdb, newConfig(opts))
}

func newBroker(rdb redis.UniversalClient, cfg config) *Broker {
	ctx, cancel := context.WithCancel(context.Background())
	return &Broker{
		rdb:     rdb,
		cfg:     cfg,
		metrics: newMetrics(cfg.registerer),
		channel: cfg.prefix + ":messages",
		ctx:     ctx,
		cancel:  cancel,
	}
}

// Open returns a Broker with its own client for the Redis server at url
// (redis://[user:password@]host:port/db, or rediss:// for TLS); Close
// closes the client. It parses the URL and does no I/O: the Manager's Open
// connects. The client honours its context's deadlines and, unless the
// URL sets max_retries, does not retry a command. Close a Broker that no
// Manager started, to close its client.
func Open(rawURL string, opts ...Option) (*Broker, error) {
	cfg := newConfig(opts)
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redisbroker: %w", err)
	}
	o.ContextTimeoutEnabled = true
	if u, err := url.Parse(rawURL); err == nil && !u.Query().Has("max_retries") {
		o.MaxRetries = -1
	}
	b := newBroker(redis.NewClient(o), cfg)
	b.ownClient = true
	return b, nil
}

// Start subscribes to the channel and waits for Redis to confirm,
// trying again with growing pauses while Redis is unreachable, until ctx
// ends; then it starts the goroutine that delivers what the channel brings
// to n. The Manager's Open calls it. A Broker whose Start fails is closed,
// with the client Open made.
func (b *Broker) Start(ctx context.Context, n clientmgr.Node, cfg clientmgr.BrokerConfig) error {
	if cfg.History < 1 || cfg.HistoryBytes < 0 {
		return fmt.Errorf("redisbroker: Start with a history of %d messages and %d bytes", cfg.History, cfg.HistoryBytes)
	}
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return ErrClosed
	case b.started:
		b.mu.Unlock()
		return errors.New("redisbroker: started twice")
	}
	b.started, b.node, b.history, b.historyBytes = true, n, cfg.History, cfg.HistoryBytes
	b.mu.Unlock()

	ps, err := b.subscribe(ctx)
	if err != nil {
		b.Close()
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed { // Close ran while Start waited
		ps.Close()
		return ErrClosed
	}
	b.pubsub, b.done = ps, make(chan struct{})
	// go-redis's channel: its goroutine reconnects and subscribes again by
	// itself, and reports each new subscription.
	go b.receive(ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)))
	return nil
}

// subscribe subscribes to the channel and returns once Redis has
// confirmed, trying again until ctx ends or the broker closes.
func (b *Broker) subscribe(ctx context.Context) (*redis.PubSub, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(b.ctx, cancel)()
	var lastErr error
	for backoff := retryMin; ; backoff = min(2*backoff, retryMax) {
		ps := b.rdb.Subscribe(ctx, b.channel)
		err := confirmed(ctx, ps)
		if err == nil {
			return ps, nil
		}
		ps.Close()
		if lastErr == nil || ctx.Err() == nil {
			lastErr = err
		}
		b.metrics.errors.WithLabelValues("subscribe").Inc()
		if !sleep.For(ctx, backoff) {
			if b.ctx.Err() != nil {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("redisbroker: no subscription to %q before the start's context ended: %w (the last try: %v)",
				b.channel, context.Cause(ctx), lastErr)
		}
	}
}

// confirmed waits for Redis to confirm ps's subscription. A read that does
// not honour ctx (a client without ContextTimeoutEnabled) ends when ctx
// does, with ps's connection.
func confirmed(ctx context.Context, ps *redis.PubSub) error {
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	for {
		m, err := ps.Receive(ctx)
		if err != nil {
			stop()
			return err
		}
		if s, ok := m.(*redis.Subscription); ok && s.Kind == "subscribe" {
			if !stop() {
				return ctx.Err() // ps was closed as the confirmation came
			}
			return nil
		}
	}
}

// receive is the broker's goroutine: it delivers what the channel brings,
// in its order, until Close closes the subscription.
func (b *Broker) receive(ch <-chan any) {
	defer close(b.done)
	for m := range ch {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			// Start took the first confirmation: this is a subscription made
			// again after the connection dropped, and what was published
			// meanwhile never reached this node.
			b.metrics.resubscriptions.Inc()
			b.cfg.logger.Info("redisbroker: subscribed again after losing the connection to Redis; the waiting clients read what they missed from the history")
			b.node.Interrupted()
		case *redis.Message:
			msg, err := decode(m.Payload)
			if err != nil {
				b.metrics.errors.WithLabelValues("decode").Inc()
				b.cfg.logger.Error("redisbroker: a malformed message on the channel", "err", err)
				continue
			}
			if msg.Seq == 0 {
				b.node.EpochStarted(msg.Topic, msg.Epoch)
				continue
			}
			if errors.Is(b.node.Deliver(msg), clientmgr.ErrSequenceRewound) {
				b.metrics.rewinds.Inc()
				b.cfg.logger.Warn("redisbroker: a topic's sequence went back in Redis (restored from an older snapshot, or a failover to a lagging replica); the topic starts a new epoch",
					"topic", msg.Topic, "epoch", strconv.FormatUint(msg.Epoch, 10), "seq", msg.Seq)
				b.startNewEpoch(msg.Topic, msg.Epoch)
			}
		}
	}
}

// Close stops the receiving goroutine, unsubscribing, and waits for it; it
// closes the Redis client if Open made it. The Manager's Close calls it.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.cancel()
		b.mu.Lock()
		b.closed = true
		ps, done := b.pubsub, b.done
		b.mu.Unlock()
		var err error
		if ps != nil {
			err = ps.Close()
			<-done
		}
		if b.ownClient {
			err = errors.Join(err, b.rdb.Close())
		}
		b.closeErr = err
	})
	return b.closeErr
}

var _ clientmgr.Broker = (*Broker)(nil)
