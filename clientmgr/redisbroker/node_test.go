package redisbroker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
	"github.com/cometkit/cometkit/internal/testredis"
)

// The tests in this file drive a Broker directly, with a recorder for the
// node it delivers to.

// recorder is a clientmgr.Node that keeps what it is given; refuse, if
// set, picks the messages it answers with ErrSequenceRewound.
type recorder struct {
	mu          sync.Mutex
	msgs        []clientmgr.Message
	epochs      []uint64 // EpochStarted's
	interrupted int
	refuse      func(clientmgr.Message) bool
}

func (r *recorder) Deliver(msg clientmgr.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msg)
	if r.refuse != nil && r.refuse(msg) {
		return fmt.Errorf("%w: %v", clientmgr.ErrSequenceRewound, msg.Cursor())
	}
	return nil
}

func (r *recorder) EpochStarted(topic string, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epochs = append(r.epochs, epoch)
}

func (r *recorder) started() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.epochs...)
}

func (r *recorder) Interrupted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.interrupted++
}

func (r *recorder) delivered() []clientmgr.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]clientmgr.Message(nil), r.msgs...)
}

func (r *recorder) interruptions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.interrupted
}

// startBroker starts a Broker on the Redis at addr, delivering to n.
func startBroker(t *testing.T, addr string, cfg clientmgr.BrokerConfig, n clientmgr.Node) (*redisbroker.Broker, *prometheus.Registry) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	reg := prometheus.NewRegistry()
	b := redisbroker.New(rdb, redisbroker.WithMetrics(reg), redisbroker.WithLogger(quiet))
	require.NoError(t, b.Start(t.Context(), n, cfg))
	t.Cleanup(func() {
		b.Close()
		rdb.Close()
	})
	return b, reg
}

func metricOf(reg *prometheus.Registry, name string) float64 {
	return (&node{reg: reg}).metric(name)
}

func publish(t *testing.T, b clientmgr.Broker, topic, data string, seen clientmgr.Cursor) clientmgr.Message {
	t.Helper()
	msg, err := b.Publish(t.Context(), topic, []byte(data), seen)
	require.NoError(t, err)
	return msg
}

// History answers as the in-process broker does, for every kind of
// cursor: within the epoch, plain, from another epoch, ahead of the topic,
// older than the history (by count, and by bytes); and the channel
// delivers what was published, in order, to the publishing node too.
func TestHistoryAsInProcess(t *testing.T) {
	for _, cfg := range []clientmgr.BrokerConfig{{History: 4}, {History: 8, HistoryBytes: 10}} {
		t.Run(fmt.Sprintf("%+v", cfg), func(t *testing.T) { historyAsInProcess(t, cfg) })
	}
}

func historyAsInProcess(t *testing.T, cfg clientmgr.BrokerConfig) {
	r := testredis.Start(t)
	rec := &recorder{}
	rb, _ := startBroker(t, r.Addr, cfg, rec)
	mb := clientmgr.NewInProcessBroker()
	require.NoError(t, mb.Start(t.Context(), &recorder{}, cfg))
	defer mb.Close()

	for _, b := range []clientmgr.Broker{rb, mb} {
		msgs, head, err := b.History(t.Context(), "room", clientmgr.Cursor{Seq: 3}, clientmgr.Cursor{})
		require.NoError(t, err)
		assert.Empty(t, msgs)
		assert.Zero(t, head, "no sequence yet")
		head, err = b.Head(t.Context(), "room")
		require.NoError(t, err)
		assert.Zero(t, head)
	}
	var fromRedis []clientmgr.Message
	var redisEpoch, memoryEpoch uint64
	for i := 1; i <= 6; i++ {
		fromRedis = append(fromRedis, publish(t, rb, "room", fmt.Sprint("m ", i), clientmgr.Cursor{}))
		redisEpoch, memoryEpoch = fromRedis[0].Epoch, publish(t, mb, "room", fmt.Sprint("m ", i), clientmgr.Cursor{}).Epoch
	}
	require.Eventually(t, func() bool { return len(rec.delivered()) == 6 }, 10*time.Second, 2*time.Millisecond)
	assert.Equal(t, texts(fromRedis...), texts(rec.delivered()...), "delivered as published, in order, to the publisher's node too")

	type answer struct {
		Seqs  []uint64
		Data  []string
		Head  uint64
		Epoch bool // the head and every message are of the topic's epoch
	}
	read := func(b clientmgr.Broker, epoch uint64, after clientmgr.Cursor) answer {
		msgs, head, err := b.History(t.Context(), "room", after, clientmgr.Cursor{})
		require.NoError(t, err)
		a := answer{Seqs: seqs(msgs), Head: head.Seq, Epoch: head.Epoch == epoch}
		for _, m := range msgs {
			a.Data = append(a.Data, string(m.Data))
			a.Epoch = a.Epoch && m.Epoch == epoch
		}
		return a
	}
	cursors := func(epoch uint64) []clientmgr.Cursor {
		return []clientmgr.Cursor{
			{}, {Seq: 1}, {Seq: 3}, {Seq: 6}, {Seq: 7},
			{Epoch: epoch, Seq: 1}, {Epoch: epoch, Seq: 3}, {Epoch: epoch, Seq: 6}, {Epoch: epoch, Seq: 7},
			{Epoch: 1, Seq: 3},
		}
	}
	for i, after := range cursors(memoryEpoch) {
		want := read(mb, memoryEpoch, after)
		assert.Equal(t, want, read(rb, redisEpoch, cursors(redisEpoch)[i]), "cursor %v", after)
	}
	head, err := rb.Head(t.Context(), "room")
	require.NoError(t, err)
	assert.Equal(t, fromRedis[5].Cursor(), head)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err = rb.History(ctx, "room", clientmgr.Cursor{}, clientmgr.Cursor{})
	assert.ErrorIs(t, err, context.Canceled)
	_, err = rb.Head(ctx, "room")
	assert.ErrorIs(t, err, context.Canceled)
	_, err = rb.Publish(ctx, "room", []byte("x"), clientmgr.Cursor{})
	assert.ErrorIs(t, err, context.Canceled)
}

// Publish with the node's position: a node that saw, in the current
// epoch, more than Redis has means Redis lost data, and the message starts
// a new epoch at Seq 1 with a fresh stream; a node merely behind (in this
// epoch or an older one) does not. A new epoch is later than the one the
// node saw, whatever the clock, to the exact 64-bit integer.
func TestPublishWhenRedisIsBehind(t *testing.T) {
	r := testredis.Start(t)
	b, reg := startBroker(t, r.Addr, clientmgr.BrokerConfig{History: 16}, &recorder{})
	first := publish(t, b, "room", "1", clientmgr.Cursor{})
	second := publish(t, b, "room", "2", first.Cursor())
	assert.Equal(t, clientmgr.Cursor{Epoch: first.Epoch, Seq: 2}, second.Cursor())

	renewed := publish(t, b, "room", "after a loss", clientmgr.Cursor{Epoch: first.Epoch, Seq: 5})
	assert.Greater(t, renewed.Epoch, first.Epoch)
	assert.Equal(t, uint64(1), renewed.Seq)
	assert.Equal(t, 1.0, metricOf(reg, "cometkit_redis_loss_epochs_total"))

	behind := publish(t, b, "room", "from a node behind", clientmgr.Cursor{Epoch: first.Epoch, Seq: 9})
	assert.Equal(t, clientmgr.Cursor{Epoch: renewed.Epoch, Seq: 2}, behind.Cursor())
	behind = publish(t, b, "room", "from a node behind", renewed.Cursor())
	assert.Equal(t, clientmgr.Cursor{Epoch: renewed.Epoch, Seq: 3}, behind.Cursor())
	assert.Equal(t, 1.0, metricOf(reg, "cometkit_redis_loss_epochs_total"))
	msgs, _, err := b.History(t.Context(), "room", clientmgr.Cursor{}, clientmgr.Cursor{})
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 3}, seqs(msgs), "the old epoch's stream is gone")

	// Redis lost the topic's keys; the node saw an epoch later than this
	// machine's clock.
	_, err = r.Do("DEL", "cometkit:{room}:seq", "cometkit:{room}:log", "cometkit:{room}:epoch")
	require.NoError(t, err)
	future := renewed.Epoch + 1_000_000_000_000_000_001
	again := publish(t, b, "room", "from the future", clientmgr.Cursor{Epoch: future, Seq: 3})
	assert.Equal(t, clientmgr.Cursor{Epoch: future + 1, Seq: 1}, again.Cursor())
	assert.Equal(t, 2.0, metricOf(reg, "cometkit_redis_loss_epochs_total"))

	fresh := publish(t, b, "new topic", "x", clientmgr.Cursor{})
	assert.Equal(t, uint64(1), fresh.Seq)
	assert.Equal(t, 2.0, metricOf(reg, "cometkit_redis_loss_epochs_total"), "a new topic is no loss")
}

// Two nodes refuse the same message as a rewind: the topic starts one new
// epoch (the second report finds it started), its stream goes, and the
// next message is Seq 1 of it.
func TestRewindStartsOneNewEpoch(t *testing.T) {
	r := testredis.Start(t)
	refuse := func(m clientmgr.Message) bool { return m.Seq == 2 }
	n1, n2 := &recorder{refuse: refuse}, &recorder{refuse: refuse}
	b1, reg1 := startBroker(t, r.Addr, clientmgr.BrokerConfig{History: 16}, n1)
	b2, reg2 := startBroker(t, r.Addr, clientmgr.BrokerConfig{History: 16}, n2)
	first := publish(t, b1, "room", "1", clientmgr.Cursor{})
	publish(t, b1, "room", "2", clientmgr.Cursor{})

	var head clientmgr.Cursor
	require.Eventually(t, func() bool {
		head, _ = b2.Head(t.Context(), "room")
		return head.Epoch > first.Epoch
	}, 10*time.Second, 2*time.Millisecond)
	assert.Equal(t, uint64(0), head.Seq, "a new sequence, nothing in it yet")
	for _, n := range []*recorder{n1, n2} {
		require.Eventually(t, func() bool { return len(n.started()) == 1 }, 10*time.Second, 2*time.Millisecond)
		assert.Equal(t, []uint64{head.Epoch}, n.started(), "every node is told of the new epoch before any message of it")
	}
	next := publish(t, b2, "room", "3", clientmgr.Cursor{})
	assert.Equal(t, clientmgr.Cursor{Epoch: head.Epoch, Seq: 1}, next.Cursor())
	// Each node handles its deliveries in order: once both have the next
	// message, both reports are done.
	for _, n := range []*recorder{n1, n2} {
		require.Eventually(t, func() bool { return len(n.delivered()) == 3 }, 10*time.Second, 2*time.Millisecond)
	}
	assert.Equal(t, 1.0, metricOf(reg1, "cometkit_redis_rewinds_total"))
	assert.Equal(t, 1.0, metricOf(reg2, "cometkit_redis_rewinds_total"))
	assert.Equal(t, 1.0, metricOf(reg1, "cometkit_redis_loss_epochs_total")+metricOf(reg2, "cometkit_redis_loss_epochs_total"))

	msgs, h, err := b1.History(t.Context(), "room", first.Cursor(), clientmgr.Cursor{})
	require.NoError(t, err)
	assert.Equal(t, next.Cursor(), h)
	assert.Equal(t, texts(next), texts(msgs...), "a cursor of the broken epoch gets the new one's messages")
}

// go-redis subscribes again by itself after the connection drops; the
// broker tells its node each time, and not at the first subscription.
func TestResubscriptionInterrupts(t *testing.T) {
	r := testredis.Start(t)
	rec := &recorder{}
	b, reg := startBroker(t, r.Addr, clientmgr.BrokerConfig{History: 16}, rec)
	publish(t, b, "room", "1", clientmgr.Cursor{})
	require.Eventually(t, func() bool { return len(rec.delivered()) == 1 }, 10*time.Second, 2*time.Millisecond)
	assert.Zero(t, rec.interruptions())

	for i := 1; i <= 2; i++ {
		_, err := r.Do("CLIENT", "KILL", "TYPE", "pubsub")
		require.NoError(t, err)
		require.Eventually(t, func() bool { return rec.interruptions() == i }, 10*time.Second, 2*time.Millisecond)
		assert.Equal(t, float64(i), metricOf(reg, "cometkit_redis_resubscriptions_total"))
	}
	publish(t, b, "room", "2", clientmgr.Cursor{})
	require.Eventually(t, func() bool { return len(rec.delivered()) == 2 }, 10*time.Second, 2*time.Millisecond,
		"delivering again")
}

// Close ends a Start that waits for Redis, and a closed broker does not
// start.
func TestCloseEndsAWaitingStart(t *testing.T) {
	r := testredis.Start(t)
	r.Kill()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	b := redisbroker.New(rdb, redisbroker.WithLogger(quiet))
	started := make(chan error, 1)
	go func() { started <- b.Start(context.Background(), &recorder{}, clientmgr.BrokerConfig{History: 1}) }()
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, b.Close())
	assert.ErrorIs(t, <-started, redisbroker.ErrClosed)
	assert.ErrorIs(t, b.Start(t.Context(), &recorder{}, clientmgr.BrokerConfig{History: 1}), redisbroker.ErrClosed)
	assert.NoError(t, b.Close(), "Close again")
}

// An option's value that cannot be meant panics in New and Open, naming
// the option.
func TestOptionsSayNo(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{})
	defer rdb.Close()
	for want, opt := range map[string]redisbroker.Option{
		`redisbroker: WithPrefix(""): a prefix is not empty and has no '{' or '}'`:            redisbroker.WithPrefix(""),
		`redisbroker: WithPrefix("a{b"): a prefix is not empty and has no '{' or '}'`:         redisbroker.WithPrefix("a{b"),
		"redisbroker: WithPublishTimeout(0s): must be more than 0":                            redisbroker.WithPublishTimeout(0),
		"redisbroker: WithPublishTimeout(-1s): must be more than 0":                           redisbroker.WithPublishTimeout(-time.Second),
		"redisbroker: WithMetrics(nil): leave the option out to register nothing":             redisbroker.WithMetrics(nil),
		"redisbroker: WithLogger(nil): pass a logger; slog.New(slog.DiscardHandler) discards": redisbroker.WithLogger(nil),
	} {
		assert.PanicsWithValue(t, want, func() { redisbroker.New(rdb, opt) })
		assert.PanicsWithValue(t, want, func() { redisbroker.Open("redis://127.0.0.1:6379/0", opt) })
	}
	assert.PanicsWithValue(t, "redisbroker: New(nil): a Broker needs a Redis client", func() { redisbroker.New(nil) })
}
