package redisbroker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/internal/testredis"
)

// Redis restarted from an older snapshot (RDB, Redis's default
// persistence): nodes a and b published up to Seq 300, the snapshot holds
// 200. After the restart a new node c publishes and Redis gives it Seq 201
// of the old epoch again. a and b, which had Seq 300, refuse it as a
// rewind: their waiting clients are told, and the topic starts a new
// epoch, once. From then on every cursor of the old epoch, wherever its
// client polls, gets an incomplete batch; no client gets c's message as
// the continuation of the old 200s without being told, and nothing is
// ever given under a position that held another message.
func TestSnapshotRollback(t *testing.T) {
	r := testredis.Start(t, "--appendonly", "no") // snapshots only, none unless asked
	pub := newPublished()
	a, b := newNode(t, r.Addr, 256), newNode(t, r.Addr, 256)
	var old []clientmgr.Message
	for i := 1; i <= 300; i++ {
		old = append(old, pub.broadcast(t, []*node{a, b}[i%2], "room", fmt.Sprintf("old %d", i)))
		if i == 200 {
			_, err := r.Do("SAVE")
			require.NoError(t, err)
		}
	}
	epoch, at := old[0].Epoch, func(seq uint64) clientmgr.Cursor { return clientmgr.Cursor{Epoch: old[0].Epoch, Seq: seq} }
	awaitLast(t, a, "room", at(300))
	awaitLast(t, b, "room", at(300))

	// Clients wait at Seq 300 on a and b (which hold the topic there: no
	// read) when Redis restarts.
	onA, onB := newClient("room", pub, at(300)), newClient("room", pub, at(300))
	waitA, waitB := onA.waitOn(t, a), onB.waitOn(t, b)

	r.Kill()
	r.Restart() // Redis at Seq 200 of the same epoch
	head, err := a.mgr.Head(t.Context(), "room")
	require.NoError(t, err)
	require.Equal(t, at(200), head, "Redis rolled back")
	// Subscribed again, the nodes wake their clients, who ask again with
	// Seq 300. The node has seen 300 of this epoch and Redis has 200: the
	// history read starts a new epoch at once, and both clients are told.
	for _, w := range []struct {
		c    *client
		n    *node
		wait <-chan polled
	}{{onA, a, waitA}, {onB, b, waitB}} {
		assert.Empty(t, w.c.answer(t, <-w.wait).Messages, "woken")
		batch := w.c.poll(t, w.n)
		assert.False(t, batch.Complete)
		assert.Greater(t, batch.Next.Epoch, epoch, "the new epoch")
		assert.Zero(t, batch.Next.Seq)
	}
	assert.Equal(t, 1.0, a.metric("cometkit_redis_loss_epochs_total")+b.metric("cometkit_redis_loss_epochs_total"),
		"one new epoch, whichever node read first")

	// A client of the old epoch on c, a node that never saw the topic, and
	// a publish there: nothing of the old epoch is handed out again.
	c := newNode(t, r.Addr, 256)
	onC := newClient("room", pub, at(200))
	fromC := pub.broadcast(t, c, "room", "c 1")
	require.Greater(t, fromC.Epoch, epoch)
	require.Equal(t, uint64(1), fromC.Seq)
	for i, cl := range []*client{onA, onB, onC} {
		told := cl.told
		require.True(t, cl.pollUntil(t, on(a), fromC.Cursor()))
		assert.Equal(t, fromC.Cursor(), cl.got[len(cl.got)-1].Cursor(), "client %d", i)
		if i == 2 {
			assert.Greater(t, cl.told, told, "c's client, at the old Seq 200, is told it may have missed messages")
		}
	}
	assert.Zero(t, a.metric("cometkit_redis_rewinds_total")+b.metric("cometkit_redis_rewinds_total"),
		"no message went back: the epoch changed before any was published")

	// Every cursor of the old epoch, on every node: incomplete, with what
	// the new epoch has.
	for _, seq := range []uint64{1, 150, 200, 201, 250, 300} {
		for _, n := range []*node{a, b, c} {
			cl := newClient("room", pub, at(seq))
			batch := cl.poll(t, n)
			assert.False(t, batch.Complete, "cursor %v", at(seq))
			assert.Equal(t, texts(fromC), texts(batch.Messages...), "cursor %v", at(seq))
		}
	}
}

// The rollback seen from the other side: no client of a node that saw
// Seq 10 asks again before a node that never saw the topic publishes.
// Redis hands out Seq 6 of the old epoch again; the node that had Seq 10
// refuses it as a rewind and starts a new epoch, so that every cursor of
// the broken one is answered incomplete from then on.
func TestSnapshotRollbackRewind(t *testing.T) {
	r := testredis.Start(t, "--appendonly", "no")
	pub := newPublished()
	a := newNode(t, r.Addr, 256)
	var last clientmgr.Message
	for i := 1; i <= 10; i++ {
		last = pub.broadcast(t, a, "room", fmt.Sprintf("old %d", i))
		if i == 5 {
			_, err := r.Do("SAVE")
			require.NoError(t, err)
		}
	}
	awaitLast(t, a, "room", last.Cursor())
	r.Kill()
	r.Restart() // Seq 5 of the same epoch
	require.Eventually(t, func() bool { return a.metric("cometkit_redis_resubscriptions_total") >= 1 }, 10*time.Second, 5*time.Millisecond)
	c := newNode(t, r.Addr, 256)
	again := pub.broadcast(t, c, "room", "new 6")
	require.Equal(t, clientmgr.Cursor{Epoch: last.Epoch, Seq: 6}, again.Cursor(), "Redis handed out Seq 6 again")
	require.Eventually(t, func() bool { return a.metric("cometkit_redis_rewinds_total") == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		head, err := a.mgr.Head(t.Context(), "room")
		return err == nil && head.Epoch > last.Epoch
	}, 10*time.Second, 5*time.Millisecond, "the topic starts a new epoch")
	for _, cur := range []clientmgr.Cursor{last.Cursor(), again.Cursor()} {
		for _, n := range []*node{a, c} {
			assert.False(t, newClient("room", pub, cur).poll(t, n).Complete, "cursor %v", cur)
		}
	}
}

// Two nodes with different history sizes share a topic: the small one's
// publishes trim the shared stream. A node whose history reaches further
// serves what the stream still has, and tells a client whose cursor is
// older; never a made-up message, never an old one under a new Seq.
func TestMixedHistorySizes(t *testing.T) {
	r := testredis.Start(t)
	pub := newPublished()
	big, small := newNode(t, r.Addr, 256), newNode(t, r.Addr, 8)
	var msgs []clientmgr.Message
	for i := 1; i <= 300; i++ {
		msgs = append(msgs, pub.broadcast(t, small, "room", fmt.Sprintf("m %d", i)))
	}
	last := msgs[299]

	// Cursor 10: long trimmed. What the stream has, up to the newest, told.
	old := newClient("room", pub, msgs[9].Cursor())
	batch := old.poll(t, big)
	assert.False(t, batch.Complete)
	require.NotEmpty(t, batch.Messages)
	assert.Greater(t, batch.Messages[0].Seq, uint64(11))
	assert.Equal(t, last.Cursor(), batch.Next)

	// Cursor 200 on a node new to the topic: every message after it, or
	// what there is and told (the stream keeps at least 8).
	fresh := newNode(t, r.Addr, 256)
	mid := newClient("room", pub, msgs[199].Cursor())
	batch = mid.poll(t, fresh)
	assert.Equal(t, last.Cursor(), batch.Next)
	if batch.Complete {
		assert.Equal(t, span(201, 300), seqs(batch.Messages))
	}
	got, complete := fresh.mgr.Since("room", 200)
	for _, m := range got {
		assert.True(t, pub.has(m), "%v %q", m.Cursor(), m.Data)
	}
	if complete {
		assert.Equal(t, span(201, 300), seqs(got))
	}

	// A recent cursor: complete on both nodes; the small node's history
	// of 8 covers 5.
	for _, n := range []*node{big, small} {
		recent := newClient("room", pub, msgs[294].Cursor())
		batch := recent.poll(t, n)
		assert.True(t, batch.Complete)
		assert.Equal(t, span(296, 300), seqs(batch.Messages))
	}
	// From the start on the small node: its 8 newest, told.
	start := newClient("room", pub, clientmgr.Cursor{})
	batch = start.poll(t, small)
	assert.False(t, batch.Complete)
	assert.Equal(t, span(293, 300), seqs(batch.Messages))
}

// A node cut off from Redis (its connections killed, and its user kept
// out) while another publishes 200 messages: its waiting client is
// answered when it subscribes again, and reads from the stream what it
// missed, as far as its history of 64 reaches, and is told about the
// rest. A client whose cursor is within reach gets everything.
func TestCutOffNode(t *testing.T) {
	r := testredis.Start(t)
	_, err := r.Do("ACL", "SETUSER", "node-a", "on", ">secret", "~*", "&*", "+@all")
	require.NoError(t, err)
	rdbA := redis.NewClient(&redis.Options{Addr: r.Addr, Username: "node-a", Password: "secret", ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { rdbA.Close() })
	pub := newPublished()
	a, b := startNode(t, rdbA, 64), newNode(t, r.Addr, 256)
	waiting := newClient("room", pub, clientmgr.Cursor{})
	wait := waiting.waitOn(t, a)
	first := pub.broadcast(t, b, "room", "m 1")
	waiting.answer(t, <-wait)
	wait = waiting.waitOn(t, a) // a holds the topic at m 1: no read

	_, err = r.Do("ACL", "SETUSER", "node-a", "off")
	require.NoError(t, err)
	_, err = r.Do("CLIENT", "KILL", "USER", "node-a")
	require.NoError(t, err)
	var last clientmgr.Message
	for i := 2; i <= 201; i++ {
		last = pub.broadcast(t, b, "room", fmt.Sprintf("m %d", i))
	}
	assert.Equal(t, first.Cursor(), a.last("room"), "a heard nothing")
	assert.Equal(t, 1, a.mgr.Count("room"), "its client still waits")

	_, err = r.Do("ACL", "SETUSER", "node-a", "on")
	require.NoError(t, err)
	assert.Empty(t, waiting.answer(t, <-wait).Messages, "woken by the new subscription")
	require.True(t, waiting.pollUntil(t, on(a), last.Cursor()))
	assert.Equal(t, 1, waiting.told, "the history of 64 does not reach back to Seq 1")
	assert.Equal(t, span(1, 1), seqs(waiting.got[:1]))
	assert.Equal(t, span(138, 201), seqs(waiting.got[1:]))
	assert.Positive(t, a.metric("cometkit_redis_resubscriptions_total"))

	near := newClient("room", pub, clientmgr.Cursor{Epoch: first.Epoch, Seq: 190})
	batch := near.poll(t, a)
	assert.True(t, batch.Complete)
	assert.Equal(t, span(191, 201), seqs(batch.Messages))
}

// A topic whose name starts with '}' (or holds braces or percent signs)
// on a Redis Cluster: its keys share one hash tag, so the scripts work
// (no CROSSSLOT), and topics that differ only in their escaping keep apart.
func TestBracesOnCluster(t *testing.T) {
	r := testredis.StartCluster(t)
	_, err := r.Do("EVAL", "return redis.call('MGET', KEYS[1], KEYS[2])", "2", "cometkit:{}room}:seq", "cometkit:{}room}:log")
	require.ErrorContains(t, err, "CROSSSLOT", "the keys a bare '}' topic once had")

	clusterNode := func() *node {
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{r.Addr}, ContextTimeoutEnabled: true, MaxRetries: -1})
		t.Cleanup(func() { rdb.Close() })
		return startNode(t, rdb, 16)
	}
	a, b := clusterNode(), clusterNode()
	pub := newPublished()
	for _, topic := range []string{"}room", "{room}", "}", "%7D", "a{b}c%", "plain"} {
		cl := newClient(topic, pub, clientmgr.Cursor{})
		wait := cl.waitOn(t, b)
		msg := pub.broadcast(t, a, topic, "on "+topic)
		assert.Equal(t, uint64(1), msg.Seq, "%q has its own sequence", topic)
		cl.answer(t, <-wait)
		assert.Equal(t, texts(msg), texts(cl.got...), topic)
		h, err := b.mgr.History(t.Context(), topic, clientmgr.Cursor{})
		require.NoError(t, err)
		assert.True(t, h.Complete)
		assert.Equal(t, texts(msg), texts(h.Messages...), topic)
	}
}

// Redis loses its data (FLUSHALL stands in for a restart without
// persistence): the next publish starts a new epoch, counted as a loss
// since the node had seen the topic; clients waiting with cursors of the
// old epoch are told, and get the new message.
func TestFlushAll(t *testing.T) {
	r := testredis.Start(t)
	pub := newPublished()
	a, b := newNode(t, r.Addr, 64), newNode(t, r.Addr, 64)
	var last clientmgr.Message
	for _, d := range []string{"one", "two", "three"} {
		last = pub.broadcast(t, a, "room", d)
	}
	awaitLast(t, a, "room", last.Cursor())
	onA, onB := newClient("room", pub, last.Cursor()), newClient("room", pub, last.Cursor())
	waitA, waitB := onA.waitOn(t, a), onB.waitOn(t, b)

	_, err := r.Do("FLUSHALL")
	require.NoError(t, err)
	after := pub.broadcast(t, a, "room", "after the loss")
	assert.Equal(t, uint64(1), after.Seq)
	assert.Greater(t, after.Epoch, last.Epoch)
	assert.Equal(t, 1.0, a.metric("cometkit_redis_loss_epochs_total"))

	onA.answer(t, <-waitA)
	onB.answer(t, <-waitB)
	for _, c := range []*client{onA, onB} {
		require.True(t, c.pollUntil(t, on(a), after.Cursor()))
		assert.Equal(t, 1, c.told)
		assert.Equal(t, texts(after), texts(c.got...))
	}
}

// Redis loses its last writes (fsync once a second, and a crash that
// drops the unsynced tail of the AOF): it restarts behind the nodes, in
// the same epoch. The next publish from a node that saw more starts a new
// epoch instead of handing out Seqs the nodes have seen; the clients are
// told; and every message acknowledged after the restart reaches every
// client, in order.
func TestLostLastWrites(t *testing.T) {
	r := testredis.Start(t, "--appendfsync", "everysec")
	pub := newPublished()
	a, b := newNode(t, r.Addr, 64), newNode(t, r.Addr, 64)
	var msgs []clientmgr.Message
	for i := 1; i <= 8; i++ {
		msgs = append(msgs, pub.broadcast(t, a, "room", fmt.Sprintf("m %d", i)))
	}
	synced := r.AOFSize() // Redis writes the AOF before it answers: m 8 is in
	msgs = append(msgs, pub.broadcast(t, a, "room", "m 9"))
	last := msgs[8]
	awaitLast(t, a, "room", last.Cursor())
	onA, onB := newClient("room", pub, last.Cursor()), newClient("room", pub, last.Cursor())
	waitA, waitB := onA.waitOn(t, a), onB.waitOn(t, b)

	r.Kill()
	r.TruncateAOF(synced)
	r.Restart()
	head, err := b.mgr.Head(t.Context(), "room")
	require.NoError(t, err)
	require.Equal(t, msgs[7].Cursor(), head, "Redis lost m 9")
	awaitMetric(t, a, "cometkit_redis_resubscriptions_total", 1)

	var acked []clientmgr.Message
	for i, n := range []*node{a, b, a, b} {
		acked = append(acked, pub.broadcast(t, n, "room", fmt.Sprintf("after %d", i)))
	}
	assert.Greater(t, acked[0].Epoch, last.Epoch, "a had seen m 9: a new epoch")
	assert.Equal(t, uint64(1), acked[0].Seq)
	assert.Equal(t, 1.0, a.metric("cometkit_redis_loss_epochs_total"))

	onA.answerOr503(t, <-waitA)
	onB.answerOr503(t, <-waitB)
	behind := newClient("room", pub, msgs[7].Cursor()) // saw m 8, which Redis kept
	for i, c := range []*client{onA, onB, behind} {
		require.True(t, c.pollUntil(t, func(poll int) *node { return []*node{a, b}[(i+poll)%2] }, acked[3].Cursor()))
		assert.Positive(t, c.told, "client %d is told", i)
		assert.Equal(t, texts(acked...), texts(c.got...), "client %d has everything acknowledged after the restart", i)
	}
}
