package clientmgr_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/cometkit/cometkit/clientmgr"
)

// hub stands in for a shared engine (Redis): it assigns each topic's Seq
// and hands every message to every attached node, in order.
type hub struct {
	mu    sync.Mutex
	seq   map[string]uint64
	nodes []clientmgr.Node
}

// hubBroker is one node's connection to the hub.
type hubBroker struct{ h *hub }

func (b hubBroker) Attach(n clientmgr.Node) error {
	b.h.mu.Lock()
	defer b.h.mu.Unlock()
	b.h.nodes = append(b.h.nodes, n)
	return nil
}

func (b hubBroker) Publish(ctx context.Context, topic string, data []byte) (clientmgr.Message, error) {
	b.h.mu.Lock()
	defer b.h.mu.Unlock()
	b.h.seq[topic]++
	msg := clientmgr.Message{Topic: topic, Seq: b.h.seq[topic], Data: data, Time: time.Now()}
	for _, n := range b.h.nodes {
		n.Deliver(msg)
	}
	return msg, nil
}

func (b hubBroker) Close() error { return nil }

// Two Managers on one broker behave as one: a message published on either
// reaches subscribers on both, with the same Seq, and a cursor from one
// node works on the other.
func TestTwoNodesShareTopics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{seq: map[string]uint64{}}
		a := clientmgr.New(clientmgr.WithBroker(hubBroker{h}))
		b := clientmgr.New(clientmgr.WithBroker(hubBroker{h}))
		defer a.Close()
		defer b.Close()
		onA, onB := start(longPoll(t, a, nil), "/?topic=room"), start(longPoll(t, b, nil), "/?topic=room")
		synctest.Wait()

		broadcast(t, b, "room", "from b")
		assert.Equal(t, "room/1:from b\n", onA.wait().Body.String())
		assert.Equal(t, "room/1:from b\n", onB.wait().Body.String())
		broadcast(t, a, "room", "from a")
		// A client that saw Seq 1 on node b re-polls node a.
		assert.Equal(t, "room/2:from a\n", start(longPoll(t, a, nil), "/?topic=room&after=1").wait().Body.String())
		msgs, complete := b.Since("room", 0)
		assert.True(t, complete)
		assert.Len(t, msgs, 2)
	})
}

// A broker that cannot attach makes every Broadcast fail with its error.
type brokenBroker struct{ hubBroker }

var errNoEngine = errors.New("engine unreachable")

func (brokenBroker) Attach(clientmgr.Node) error { return errNoEngine }

func TestBrokerAttachFailure(t *testing.T) {
	m := clientmgr.New(clientmgr.WithBroker(brokenBroker{}))
	defer m.Close()
	_, err := m.Broadcast(context.Background(), "room", []byte("x"))
	assert.ErrorIs(t, err, errNoEngine)
}

// Deliver ignores a message the node already has, so a broker may deliver
// twice (after a reconnect) without a client seeing it twice.
func TestDeliverIgnoresDuplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &hub{seq: map[string]uint64{}}
		m := clientmgr.New(clientmgr.WithBroker(hubBroker{h}))
		defer m.Close()
		p := start(longPoll(t, m, nil), "/?topic=room")
		synctest.Wait()
		msg := broadcast(t, m, "room", "once")
		h.nodes[0].Deliver(msg)
		synctest.Wait()
		assert.Equal(t, "room/1:once\n", p.wait().Body.String())
		msgs, _ := m.Since("room", 0)
		assert.Len(t, msgs, 1)
	})
}

// logBroker stands in for an engine that keeps each topic's log (Redis
// streams) but is slow to tell the other nodes: Publish delivers only to
// the publishing node, and the others hear of it when they Sync.
type logBroker struct {
	log  *engineLog
	node clientmgr.Node
	fail bool // Sync fails, as with the engine unreachable
}

type engineLog struct {
	mu   sync.Mutex
	msgs map[string][]clientmgr.Message
}

func (b *logBroker) Attach(n clientmgr.Node) error { b.node = n; return nil }
func (b *logBroker) Close() error                  { return nil }

func (b *logBroker) Publish(ctx context.Context, topic string, data []byte) (clientmgr.Message, error) {
	b.log.mu.Lock()
	msg := clientmgr.Message{Topic: topic, Seq: uint64(len(b.log.msgs[topic]) + 1), Data: data, Time: time.Now()}
	b.log.msgs[topic] = append(b.log.msgs[topic], msg)
	b.log.mu.Unlock()
	b.node.Deliver(msg)
	return msg, nil
}

func (b *logBroker) Sync(ctx context.Context, topic string) error {
	if b.fail {
		return errNoEngine
	}
	b.log.mu.Lock()
	defer b.log.mu.Unlock()
	for _, msg := range b.log.msgs[topic][b.node.LastSeq(topic):] {
		b.node.Deliver(msg)
	}
	return nil
}

// With a SyncBroker a node answers cursors it has not caught up with from
// the shared log: a topic it has never seen, and a cursor from a node that
// heard first. Without the log (Sync failing) it answers from its own copy.
func TestSyncBrokerCatchesUpBeforeAnswering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &engineLog{msgs: map[string][]clientmgr.Message{}}
		onB := &logBroker{log: log}
		a := clientmgr.New(clientmgr.WithBroker(&logBroker{log: log}))
		b := clientmgr.New(clientmgr.WithBroker(onB))
		defer a.Close()
		defer b.Close()
		for _, m := range []string{"one", "two", "three"} {
			broadcast(t, a, "room", m)
		}
		assert.Equal(t, uint64(3), b.LastSeq("room"), "a topic new to b")
		msgs, complete := b.Since("room", 1)
		assert.True(t, complete)
		assert.Len(t, msgs, 2)

		// A client that saw Seq 4 on a re-polls b, which has not heard of
		// it: it waits for Seq 5 rather than getting the history again.
		broadcast(t, a, "room", "four")
		poll := start(longPoll(t, b, nil), "/?topic=room&after=4")
		synctest.Wait()
		select {
		case <-poll.done:
			t.Fatalf("answered at once: %q", poll.rec.Body.String())
		default:
		}
		broadcast(t, b, "room", "five")
		assert.Equal(t, "room/5:five\n", poll.wait().Body.String())

		// Without the log, b answers from its own copy.
		onB.fail = true
		broadcast(t, a, "room", "six")
		assert.Equal(t, uint64(5), b.LastSeq("room"))
	})
}
