package clientmgr_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
)

// engine stands in for a shared engine (Redis): it owns each topic's
// sequence and log, and hands every message to every node's broker in
// order. Tests make it misbehave the ways real engines do: drop a
// delivery to one node, lose its data, roll back to an older snapshot.
type engine struct {
	mu      sync.Mutex
	topics  map[string]*engineTopic
	brokers []*engineBroker
	history int
}

type engineTopic struct {
	epoch uint64
	log   []clientmgr.Message // the newest history messages
	last  uint64
}

func newEngine(history int) *engine {
	return &engine{topics: map[string]*engineTopic{}, history: history}
}

// node returns a Manager on the engine; closed at the end of the test.
func (e *engine) node(t *testing.T, opts ...clientmgr.Option) (*clientmgr.Manager, *engineBroker) {
	b := &engineBroker{e: e}
	m, err := clientmgr.Open(t.Context(), append([]clientmgr.Option{clientmgr.WithBroker(b), clientmgr.WithHistory(e.history)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, b
}

// twoNodes starts two Managers on one engine that keeps 16 messages: a,
// with its broker, so that a test can lose deliveries to it, and b.
func twoNodes(t *testing.T) (a *clientmgr.Manager, onA *engineBroker, b *clientmgr.Manager) {
	e := newEngine(16)
	a, onA = e.node(t)
	b, _ = e.node(t)
	return a, onA, b
}

// engineBroker is one node's connection to the engine.
type engineBroker struct {
	e      *engine
	node   clientmgr.Node
	deaf   bool // deliveries to this node are lost, as on a dropped connection
	closed bool
	// duringHistory, if set, is called by History with the read itself,
	// so that a test can publish before or after it.
	duringHistory func(read func())
	// rewound counts ErrSequenceRewound from the node, upon which the
	// broker starts a new epoch, as redisbroker does.
	rewound int
}

// miss broadcasts data on topic from m, lost on its way to this broker's
// node, as over a dropped connection.
func (b *engineBroker) miss(t *testing.T, m *clientmgr.Manager, topic, data string) {
	t.Helper()
	b.deaf = true
	defer func() { b.deaf = false }()
	broadcast(t, m, topic, data)
}

func (b *engineBroker) Start(_ context.Context, n clientmgr.Node, cfg clientmgr.BrokerConfig) error {
	b.e.mu.Lock()
	defer b.e.mu.Unlock()
	b.node = n
	b.e.brokers = append(b.e.brokers, b)
	return nil
}

func (b *engineBroker) Publish(_ context.Context, topic string, data []byte, seen clientmgr.Cursor) (clientmgr.Message, error) {
	e := b.e
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.topics[topic]
	if t == nil || (seen.Epoch == t.epoch && seen.Seq > t.last) {
		t = &engineTopic{epoch: clientmgr.NewEpoch()}
		e.topics[topic] = t
	}
	t.last++
	msg := clientmgr.Message{Topic: topic, Epoch: t.epoch, Seq: t.last, Data: data, Time: time.Now()}
	t.log = append(t.log, msg)
	if len(t.log) > e.history {
		t.log = t.log[1:]
	}
	for _, nb := range e.brokers {
		if nb.deaf || nb.closed {
			continue
		}
		if errors.Is(nb.node.Deliver(msg), clientmgr.ErrSequenceRewound) {
			nb.rewound++
			e.topics[topic] = &engineTopic{epoch: clientmgr.NewEpoch()}
		}
	}
	return msg, nil
}

func (b *engineBroker) History(_ context.Context, topic string, after, _ clientmgr.Cursor) (msgs []clientmgr.Message, head clientmgr.Cursor, err error) {
	read := func() { msgs, head = b.e.read(topic, after) }
	if hook := b.duringHistory; hook != nil {
		b.duringHistory = nil
		hook(read)
	} else {
		read()
	}
	return msgs, head, nil
}

func (e *engine) read(topic string, after clientmgr.Cursor) ([]clientmgr.Message, clientmgr.Cursor) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.topics[topic]
	if t == nil {
		return nil, clientmgr.Cursor{}
	}
	var out []clientmgr.Message
	for _, m := range t.log {
		if m.Seq > after.Seq || (after.Epoch != 0 && after.Epoch != t.epoch) || after.Seq > t.last {
			out = append(out, m)
		}
	}
	return out, clientmgr.Cursor{Epoch: t.epoch, Seq: t.last}
}

func (b *engineBroker) Head(ctx context.Context, topic string) (clientmgr.Cursor, error) {
	_, head, err := b.History(ctx, topic, clientmgr.Cursor{Seq: ^uint64(0) >> 1}, clientmgr.Cursor{})
	return head, err
}

func (b *engineBroker) Close() error {
	b.e.mu.Lock()
	defer b.e.mu.Unlock()
	b.closed = true
	return nil
}

// rollBack makes the engine forget a topic's newest n messages, keeping
// its epoch: a Redis restored from an older snapshot.
func (e *engine) rollBack(topic string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.topics[topic]
	t.last -= uint64(n)
	t.log = t.log[:len(t.log)-n]
}

// Two Managers on one engine behave as one: a message published on either
// reaches subscribers on both, with the same epoch and Seq, and a cursor
// from one node works on the other.
func TestTwoNodesShareTopics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _, b := twoNodes(t)
		onA, onB := start(longPoll(t, a, nil), "/?topic=room"), start(longPoll(t, b, nil), "/?topic=room")
		synctest.Wait()

		first := broadcast(t, b, "room", "from b")
		assert.Equal(t, "room/1:from b\n", onA.Wait().Body.String())
		assert.Equal(t, "room/1:from b\n", onB.Wait().Body.String())
		broadcast(t, a, "room", "from a")
		// A client that saw the first message on node b polls node a.
		assert.Equal(t, "room/2:from a\n", start(longPoll(t, a, nil), "/?topic=room&cursor="+first.Cursor().String()).Wait().Body.String())
		msgs, complete := b.Since("room", 0)
		assert.True(t, complete)
		assert.Len(t, msgs, 2)
	})
}

// A delivery a node never got (a lost Pub/Sub message): the next one does
// not follow, so the batch waiting there ends before it, and the client's
// next poll reads the missing message from the history. In order, none
// lost, none twice, and no one told of a loss that did not happen.
func TestLostDeliveryRecoveredFromHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, onA, b := twoNodes(t)
		h := longPoll(t, a, nil)
		one := broadcast(t, b, "room", "one")
		p := start(h, "/?topic=room&cursor="+one.Cursor().String())
		synctest.Wait()
		onA.miss(t, b, "room", "two")
		broadcast(t, b, "room", "three")
		assert.Empty(t, p.Wait().Body.String(), "the batch ends at the gap: nothing yet, complete")
		assert.Equal(t, "room/2:two\nroom/3:three\n", start(h, "/?topic=room&cursor="+one.Cursor().String()).Wait().Body.String())
	})
}

// The engine restored from an older snapshot: node a had Seq 5, the engine
// hands out Seq 3 again in the same epoch. Node a refuses to take the new
// Seq 3 for one it has seen: its waiting client is told it may have missed
// messages, the broker starts a new epoch, and cursors of the broken one
// (from a or from a node that saw the new Seq 3) all get incomplete
// batches from then on. Never an old message under a new Seq, never a
// cursor taken at face value in the broken epoch.
func TestRolledBackEngine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEngine(16)
		a, onA := e.node(t)
		h := longPoll(t, a, nil)
		var last clientmgr.Message
		for _, d := range []string{"1", "2", "3", "4", "5"} {
			last = broadcast(t, a, "room", d)
		}
		p := start(h, "/?topic=room&cursor="+last.Cursor().String())
		synctest.Wait()
		e.rollBack("room", 3)

		// Node c, new, publishes first: Seq 3 of the old epoch again.
		c, _ := e.node(t)
		again := broadcast(t, c, "room", "new 3")
		require.Equal(t, last.Epoch, again.Epoch)
		require.Equal(t, uint64(3), again.Seq)
		assert.Equal(t, "room incomplete, next "+last.Cursor().String()+"\n", p.Wait().Body.String(),
			"a's client is told at once, and not given the new Seq 3")
		assert.Equal(t, 1, onA.rewound, "a told its broker")

		after := broadcast(t, c, "room", "after")
		assert.NotEqual(t, last.Epoch, after.Epoch, "the broker started a new epoch")
		assert.Equal(t, uint64(1), after.Seq)
		want := "room/1:after\nroom incomplete, next " + after.Cursor().String() + "\n"
		assert.Equal(t, want, start(h, "/?topic=room&cursor="+last.Cursor().String()).Wait().Body.String(), "a's old cursor")
		assert.Equal(t, want, start(h, "/?topic=room&cursor="+again.Cursor().String()).Wait().Body.String(), "c's cursor of the broken epoch")
	})
}

// Interrupted (the broker lost its engine and has it back): every waiting
// client is woken, with a complete empty batch, and its next poll reads
// what was published meanwhile.
func TestInterruptedWakesEveryone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, onA, b := twoNodes(t)
		h := longPoll(t, a, nil)
		x, y := start(h, "/?topic=x"), start(h, "/?topic=y")
		synctest.Wait()
		onA.miss(t, b, "x", "while away")
		onA.node.Interrupted()
		assert.Empty(t, x.Wait().Body.String())
		assert.Empty(t, y.Wait().Body.String())
		assert.Equal(t, "x/1:while away\n", start(h, "/?topic=x").Wait().Body.String())
	})
}

// A broker that cannot start: Open returns its error and closes the
// broker, New panics saying so, and nothing is left running.
type brokenBroker struct {
	engineBroker
	closed bool
}

var errNoEngine = errors.New("engine unreachable")

func (*brokenBroker) Start(context.Context, clientmgr.Node, clientmgr.BrokerConfig) error {
	return errNoEngine
}

func (b *brokenBroker) Close() error {
	b.closed = true
	return nil
}

func TestBrokerStartFailure(t *testing.T) {
	b := &brokenBroker{}
	m, err := clientmgr.Open(t.Context(), clientmgr.WithBroker(b))
	assert.Nil(t, m)
	assert.ErrorIs(t, err, errNoEngine)
	assert.True(t, b.closed, "the Manager closed the broker that failed to start")
	assert.PanicsWithValue(t, "clientmgr: starting the broker: engine unreachable (use clientmgr.Open to handle a broker's error)",
		func() { clientmgr.New(clientmgr.WithBroker(&brokenBroker{})) })
}

// Close closes the broker the Manager owns and returns its error.
type closeErrBroker struct{ engineBroker }

func (b *closeErrBroker) Close() error {
	b.engineBroker.Close()
	return errNoEngine
}

func TestCloseClosesTheBroker(t *testing.T) {
	b := &closeErrBroker{engineBroker{e: newEngine(4)}}
	m, err := clientmgr.Open(t.Context(), clientmgr.WithBroker(b))
	require.NoError(t, err)
	assert.ErrorIs(t, m.Close(), errNoEngine)
	assert.True(t, b.closed)
	assert.ErrorIs(t, m.Close(), errNoEngine, "Close again returns the same")
}

// EpochStarted: the broker's engine started a new epoch with no message
// yet. The clients waiting on the topic are woken, and their next poll is
// told; the node stands at the new epoch, so a client given its cursor
// waits for the epoch's first message.
func TestEpochStartedWakesWaitingClients(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEngine(16)
		a, onA := e.node(t)
		h := longPoll(t, a, nil)
		old := broadcast(t, a, "room", "old")
		p := start(h, "/?topic=room&cursor="+old.Cursor().String())
		synctest.Wait()
		epoch := clientmgr.NewEpoch()
		e.mu.Lock()
		e.topics["room"] = &engineTopic{epoch: epoch}
		e.mu.Unlock()
		onA.node.EpochStarted("room", epoch)
		assert.Empty(t, p.Wait().Body.String(), "woken")
		fresh := clientmgr.Cursor{Epoch: epoch}
		assert.Equal(t, "room incomplete, next "+fresh.String()+"\n",
			start(h, "/?topic=room&cursor="+old.Cursor().String()).Wait().Body.String())
		q := start(h, "/?topic=room&cursor="+fresh.String())
		synctest.Wait()
		assert.Equal(t, 1, a.Count("room"), "waiting at the new epoch's start, without reading the history")
		broadcast(t, a, "room", "new")
		assert.Equal(t, "room/1:new\n", q.Wait().Body.String())
	})
}
