package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cometkit/cometkit/clientmgr"
)

// Defaults used by New.
const (
	DefaultPrefix         = "cometkit"
	DefaultPublishTimeout = 2 * time.Second
)

// ErrClosed is returned by Publish and Sync after Close.
var ErrClosed = errors.New("redisbroker: closed")

// A Broker is a clientmgr.Broker (and clientmgr.SyncBroker) backed by
// Redis. Make one per Manager; it serves the node it is attached to.
type Broker struct {
	rdb       redis.UniversalClient
	ownClient bool // made by Open: closed by Close
	cfg       config
	metrics   *metrics
	channel   string

	// turn makes delivery to the node one sequence, whether it comes from
	// the channel, a repair, a catch-up, Publish or Sync, so that each
	// topic is delivered in Seq order. A channel of one rather than a
	// mutex, so that Publish and Sync stop waiting for their turn when
	// their context ends.
	turn   chan struct{}
	node   clientmgr.Node
	epochs map[string]uint64 // per topic, the epoch of the sequence the node holds; in turn

	ctx    context.Context // ends at Close: stops retries
	cancel context.CancelFunc
	pubsub *redis.PubSub
	done   chan struct{} // closed when the receiving goroutine ends

	closeOnce sync.Once
}

// New returns a Broker on rdb, which stays the caller's to close (after the
// Manager). Give rdb ContextTimeoutEnabled so that Publish honours its
// context's deadline.
func New(rdb redis.UniversalClient, opts ...Option) *Broker {
	cfg := newConfig(opts)
	ctx, cancel := context.WithCancel(context.Background())
	return &Broker{
		rdb:     rdb,
		cfg:     cfg,
		metrics: newMetrics(cfg.registerer),
		channel: cfg.prefix + ":messages",
		turn:    make(chan struct{}, 1),
		epochs:  make(map[string]uint64),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
	}
}

// Open connects to the Redis server at url (redis://[user:password@]host:port/db,
// or rediss:// for TLS), checks that it answers, and returns a Broker that
// owns the connection.
func Open(url string, opts ...Option) (*Broker, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisbroker: %w", err)
	}
	o.ContextTimeoutEnabled = true
	rdb := redis.NewClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultPublishTimeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redisbroker: %s: %w", o.Addr, err)
	}
	b := New(rdb, opts...)
	b.ownClient = true
	return b, nil
}

// Attach subscribes to the channel and starts delivering to n. It fails if
// Redis does not confirm the subscription within the publish timeout.
func (b *Broker) Attach(n clientmgr.Node) error {
	b.node = n
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.publishTimeout)
	defer cancel()
	b.pubsub = b.rdb.Subscribe(ctx, b.channel)
	if _, err := b.pubsub.Receive(ctx); err != nil { // the subscription's confirmation
		b.pubsub.Close()
		b.metrics.errors.WithLabelValues("subscribe").Inc()
		close(b.done)
		return fmt.Errorf("redisbroker: subscribe: %w", err)
	}
	// go-redis's channel: its own goroutine reconnects and subscribes again,
	// and reports each new subscription, which is when to catch up.
	ch := b.pubsub.ChannelWithSubscriptions(redis.WithChannelSize(1024))
	go b.receive(ch)
	return nil
}

// receive delivers what the channel brings until Close.
func (b *Broker) receive(ch <-chan any) {
	defer close(b.done)
	for m := range ch {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				b.metrics.reconnects.Inc()
				b.catchUp()
			}
		case *redis.Message:
			msg, err := decode(m.Payload)
			if err != nil {
				b.metrics.errors.WithLabelValues("decode").Inc()
				b.cfg.logger.Error("redisbroker: bad message on the channel", "err", err)
				continue
			}
			b.retry("repair", func(ctx context.Context) error { return b.deliver(ctx, msg) })
		}
	}
}

// retry runs attempt in its turn until it succeeds or the broker closes,
// each try bounded by the publish timeout and with a growing pause
// between tries, during which others take their turn. It is for the
// receiving goroutine, which must not skip a message: the next ones of
// its topic would overtake it.
func (b *Broker) retry(op string, attempt func(ctx context.Context) error) {
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		err := b.inTurn(b.ctx, func() error {
			ctx, cancel := context.WithTimeout(b.ctx, b.cfg.publishTimeout)
			defer cancel()
			return attempt(ctx)
		})
		if err == nil {
			return
		}
		b.metrics.errors.WithLabelValues(op).Inc()
		if !sleep(b.ctx, backoff) {
			return
		}
	}
}

// inTurn runs f when it is this caller's turn to deliver, unless ctx ends
// first.
func (b *Broker) inTurn(ctx context.Context, f func() error) error {
	select {
	case b.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.turn }()
	return f()
}

// deliver hands msg to the node after whatever of its topic the node
// lacks before it, read from the stream. If that read fails msg is not
// delivered either: a message must not overtake a gap. It runs in turn.
func (b *Broker) deliver(ctx context.Context, msg envelope) error {
	b.checkEpoch(msg)
	last := b.node.LastSeq(msg.Topic)
	if msg.Seq <= last {
		return nil // delivered already (by Publish, a repair or a Sync)
	}
	if msg.Seq > last+1 {
		// A gap, or a topic new to this node: read what comes before.
		n, err := b.fill(ctx, msg.Topic, msg.Seq-1)
		if err != nil {
			return err
		}
		if last > 0 {
			b.metrics.gaps.Inc()
		}
		b.metrics.recovered.Add(float64(n))
	}
	b.node.Deliver(msg.Message)
	return nil
}

// checkEpoch resets the node's copy of a topic whose sequence started
// again (Redis lost its data): the new Seqs are new messages. It runs in
// turn.
func (b *Broker) checkEpoch(msg envelope) {
	if known, ok := b.epochs[msg.Topic]; ok && known != msg.epoch && b.node.LastSeq(msg.Topic) > 0 {
		b.node.Reset(msg.Topic)
		b.metrics.resets.Inc()
		b.cfg.logger.Warn("redisbroker: the topic's sequence started again in Redis; its history on this node is dropped",
			"topic", msg.Topic, "seq", msg.Seq)
	}
	b.epochs[msg.Topic] = msg.epoch
}

// fill delivers, in order, the topic's messages from the stream that the
// node lacks, up to Seq until (0: to the end), and returns how many. A
// topic the node does not hold gets at most the history size. It runs in
// turn.
func (b *Broker) fill(ctx context.Context, topic string, until uint64) (int, error) {
	last := b.node.LastSeq(topic)
	end := "+"
	if until > 0 {
		if until <= last {
			return 0, nil
		}
		end = streamID(until)
	}
	var entries []redis.XMessage
	var err error
	if last == 0 {
		// The newest history's worth, newest first.
		entries, err = b.rdb.XRevRangeN(ctx, b.logKey(topic), end, "-", int64(b.cfg.history)).Result()
		for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
			entries[i], entries[j] = entries[j], entries[i]
		}
	} else {
		entries, err = b.rdb.XRange(ctx, b.logKey(topic), "("+streamID(last), end).Result()
	}
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		msg, err := fromEntry(topic, e)
		if err != nil {
			b.metrics.errors.WithLabelValues("decode").Inc()
			continue
		}
		b.checkEpoch(msg)
		b.node.Deliver(msg.Message)
	}
	return len(entries), nil
}

// catchUp reads, for every topic the node holds, what was published while
// the subscription was down. It retries until it works or the broker
// closes: until then the node's topics may lag.
func (b *Broker) catchUp() {
	for _, topic := range b.node.Topics() {
		b.retry("catch-up", func(ctx context.Context) error {
			n, err := b.fill(ctx, topic, 0)
			b.metrics.recovered.Add(float64(n))
			return err
		})
	}
}

// Publish assigns the next Seq of topic in Redis, appends the message to
// the topic's stream and publishes it to every node, in one script. It
// delivers to this node before returning, so that a Broadcast is visible
// here when it returns. Without a deadline on ctx, the publish timeout
// applies.
func (b *Broker) Publish(ctx context.Context, topic string, data []byte) (clientmgr.Message, error) {
	if b.ctx.Err() != nil {
		return clientmgr.Message{}, ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.publishTimeout)
		defer cancel()
	}
	now := time.Now()
	reply, err := publishScript.Run(ctx, b.rdb, []string{b.seqKey(topic), b.logKey(topic), b.epochKey(topic)},
		b.channel, b.cfg.history, now.UnixNano(), topic, data, b.node.LastSeq(topic)).Slice()
	var seq, epoch uint64
	if err == nil {
		seq, epoch, err = parseReply(reply)
	}
	if err != nil {
		b.metrics.errors.WithLabelValues("publish").Inc()
		return clientmgr.Message{}, fmt.Errorf("redisbroker: publish on %q: %w", topic, err)
	}
	msg := envelope{clientmgr.Message{Topic: topic, Seq: seq, Data: data, Time: now}, epoch}
	// Published either way; if this fails, the channel brings it here.
	_ = b.inTurn(ctx, func() error { return b.deliver(ctx, msg) })
	return msg.Message, nil
}

// Sync brings the node's copy of topic up to date with its stream
// (clientmgr.SyncBroker).
func (b *Broker) Sync(ctx context.Context, topic string) error {
	if b.ctx.Err() != nil {
		return ErrClosed
	}
	var n int
	err := b.inTurn(ctx, func() error {
		var err error
		n, err = b.fill(ctx, topic, 0)
		return err
	})
	if err != nil {
		b.metrics.errors.WithLabelValues("sync").Inc()
		return fmt.Errorf("redisbroker: sync %q: %w", topic, err)
	}
	b.metrics.recovered.Add(float64(n))
	return nil
}

// Close unsubscribes, stops the receiving goroutine and waits for it; it
// closes the Redis client if Open made it.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.cancel()
		if b.pubsub != nil {
			err = b.pubsub.Close()
		}
		<-b.done
		if b.ownClient {
			err = errors.Join(err, b.rdb.Close())
		}
	})
	return err
}

// The keys of a topic share a hash tag, so that the script's keys are in
// one slot on a Redis Cluster.
func (b *Broker) seqKey(topic string) string   { return b.cfg.prefix + ":{" + topic + "}:seq" }
func (b *Broker) logKey(topic string) string   { return b.cfg.prefix + ":{" + topic + "}:log" }
func (b *Broker) epochKey(topic string) string { return b.cfg.prefix + ":{" + topic + "}:epoch" }

// parseReply reads publishScript's {seq, epoch}.
func parseReply(reply []any) (seq, epoch uint64, err error) {
	if len(reply) != 2 {
		return 0, 0, fmt.Errorf("%w: script reply %v", errBadPayload, reply)
	}
	n, ok := reply[0].(int64)
	e, errEpoch := strconv.ParseUint(fmt.Sprint(reply[1]), 10, 64)
	if !ok || n < 1 || errEpoch != nil {
		return 0, 0, fmt.Errorf("%w: script reply %v", errBadPayload, reply)
	}
	return uint64(n), e, nil
}

// streamID is the stream entry ID of a Seq: the Seq itself.
func streamID(seq uint64) string { return strconv.FormatUint(seq, 10) + "-0" }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Compile-time checks: what clientmgr expects of a multi-node broker.
var (
	_ clientmgr.Broker     = (*Broker)(nil)
	_ clientmgr.SyncBroker = (*Broker)(nil)
)
