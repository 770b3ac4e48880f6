package redisbroker_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
	"github.com/cometkit/cometkit/internal/testredis"
)

// on is a client's choice of node: always n.
func on(n *node) func(int) *node { return func(int) *node { return n } }

// Two nodes share a topic: a message published on either reaches the
// clients waiting on both, under one epoch and sequence; a node that
// starts later has the history; a cursor from one node works on the other.
func TestTwoNodesShareTopics(t *testing.T) {
	r := testredis.Start(t)
	pub := newPublished()
	a, b := newNode(t, r.Addr, 64), newNode(t, r.Addr, 64)

	onA, onB := newClient("room", pub, clientmgr.Cursor{}), newClient("room", pub, clientmgr.Cursor{})
	waitA, waitB := onA.waitOn(t, a), onB.waitOn(t, b)
	hello := pub.broadcast(t, b, "room", "hello")
	assert.Equal(t, uint64(1), hello.Seq)
	onA.answer(t, <-waitA)
	onB.answer(t, <-waitB)
	assert.Equal(t, texts(hello), texts(onA.got...))
	assert.Equal(t, texts(hello), texts(onB.got...))

	again := pub.broadcast(t, a, "room", "again")
	assert.Equal(t, hello.Epoch, again.Epoch, "one sequence for the topic, whichever node publishes")
	assert.Equal(t, uint64(2), again.Seq)

	late := newNode(t, r.Addr, 64)
	h, err := late.mgr.History(t.Context(), "room", clientmgr.Cursor{})
	require.NoError(t, err)
	assert.Equal(t, texts(hello, again), texts(h.Messages...), "a node that starts later has the history")
	assert.True(t, h.Complete)
	assert.Equal(t, again.Cursor(), h.Next)
	head, err := late.mgr.Head(t.Context(), "room")
	require.NoError(t, err)
	assert.Equal(t, again.Cursor(), head)

	// Seen on a, polled again on b: the next one, nothing twice.
	onA.poll(t, a)
	wait := onA.waitOn(t, b)
	third := pub.broadcast(t, late, "room", "third")
	onA.answer(t, <-wait)
	assert.Equal(t, texts(hello, again, third), texts(onA.got...))
	assert.Zero(t, onA.told+onB.told)
}

// 2,000 messages published from both nodes at once, and clients that poll
// alternately on either node with their cursor: every client gets every
// message once, in order, and never is told it may have missed one.
func TestOrderAndNoLossAcrossNodes(t *testing.T) {
	const messages, clients = 2000, 10
	r := testredis.Start(t)
	pub := newPublished()
	nodes := []*node{newNode(t, r.Addr, 4096), newNode(t, r.Addr, 4096)}
	first := pub.broadcast(t, nodes[0], "stream", "0")

	var wg sync.WaitGroup
	cls := make([]*client, clients)
	for i := range cls {
		cls[i] = newClient("stream", pub, clientmgr.Cursor{})
		wg.Go(func() {
			cls[i].pollUntil(t, func(poll int) *node { return nodes[(i+poll)%2] }, clientmgr.Cursor{Epoch: first.Epoch, Seq: messages})
		})
	}
	var pubs sync.WaitGroup
	for p, n := range nodes {
		pubs.Go(func() {
			for i := range messages / 2 {
				if p == 0 && i == 0 {
					continue // published above, for the epoch
				}
				data := fmt.Sprintf("n%d-%d", p, i)
				pub.attempt(data)
				msg, err := n.mgr.Broadcast(t.Context(), "stream", []byte(data))
				if !assert.NoError(t, err) {
					return
				}
				pub.add(msg)
			}
		})
	}
	pubs.Wait()
	wg.Wait()
	require.Len(t, pub.at, messages, "every publish got its own position")
	for i, c := range cls {
		assert.Equal(t, span(1, messages), seqs(c.got), "client %d: every message, once, in order", i)
		assert.Zero(t, c.told, "client %d was never told of a loss", i)
	}
}

// Redis down: Broadcast fails within its deadline, with the cause; clients
// waiting on both nodes keep waiting; once Redis is back, the brokers
// subscribe again by themselves, the waiting clients are answered and read
// what they missed, and the sequence goes on where it was (Redis kept it).
func TestOutage(t *testing.T) {
	r := testredis.Start(t)
	pub := newPublished()
	a, b := newNode(t, r.Addr, 64), newNode(t, r.Addr, 64)
	onA, onB := newClient("room", pub, clientmgr.Cursor{}), newClient("room", pub, clientmgr.Cursor{})
	waitA, waitB := onA.waitOn(t, a), onB.waitOn(t, b)
	before := pub.broadcast(t, a, "room", "before")
	onA.answer(t, <-waitA)
	onB.answer(t, <-waitB)
	// Both nodes hold the topic at "before": the clients wait with no read.
	waitA, waitB = onA.waitOn(t, a), onB.waitOn(t, b)

	r.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := a.mgr.Broadcast(ctx, "room", []byte("lost"))
	assert.ErrorContains(t, err, "redisbroker: publish")
	assert.Less(t, time.Since(start), 5*time.Second, "no hang: the deadline is 300 ms")
	assert.Positive(t, a.metric("cometkit_redis_errors_total"))
	assert.Equal(t, 1, a.mgr.Count("room"), "still waiting")
	assert.Equal(t, 1, b.mgr.Count("room"), "still waiting")

	r.Restart()
	var after clientmgr.Message
	require.Eventually(t, func() bool {
		data := fmt.Sprintf("after %d", time.Now().UnixNano())
		pub.attempt(data)
		msg, err := b.mgr.Broadcast(t.Context(), "room", []byte(data))
		if err == nil {
			pub.add(msg)
			after = msg
		}
		return err == nil
	}, 20*time.Second, 50*time.Millisecond)
	assert.Equal(t, before.Epoch, after.Epoch, "Redis kept the sequence")
	assert.Equal(t, uint64(2), after.Seq)
	onA.answerOr503(t, <-waitA)
	onB.answerOr503(t, <-waitB)
	for _, c := range []*client{onA, onB} {
		require.True(t, c.pollUntil(t, on(a), after.Cursor()))
		assert.Equal(t, []uint64{1, 2}, seqs(c.got), "nothing lost on the way")
		assert.Zero(t, c.told)
	}
	awaitMetric(t, a, "cometkit_redis_resubscriptions_total", 1)
	awaitMetric(t, b, "cometkit_redis_resubscriptions_total", 1)
}

// Kill and restart redis-server in the middle of a stream of publishes on
// one node, with clients polling on both nodes all along: every client
// ends with every message whose Broadcast succeeded, in order, once, and
// is never told of a loss (fsync always: Redis lost nothing).
func TestRestartMidStream(t *testing.T) {
	const clients = 4
	r := testredis.Start(t)
	pub := newPublished()
	nodes := []*node{newNode(t, r.Addr, 4096), newNode(t, r.Addr, 4096)}
	first := pub.broadcast(t, nodes[0], "stream", "first")

	var target atomic.Pointer[clientmgr.Cursor] // the last acknowledged, once publishing is over
	cls := make([]*client, clients)
	var polls sync.WaitGroup
	for i := range cls {
		cls[i] = newClient("stream", pub, first.Cursor())
		polls.Go(func() {
			cls[i].pollWhile(t, on(nodes[i%2]), func() bool {
				return target.Load() == nil || cls[i].cursor.Seq < target.Load().Seq
			})
		})
	}

	stop := make(chan struct{})
	var acked []clientmgr.Message
	var failed int
	var pubs sync.WaitGroup
	pubs.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			pub.attempt(strconv.Itoa(i))
			msg, err := nodes[0].mgr.Broadcast(ctx, "stream", []byte(strconv.Itoa(i)))
			cancel()
			if err != nil {
				failed++
				time.Sleep(20 * time.Millisecond)
				continue
			}
			pub.add(msg)
			acked = append(acked, msg)
			time.Sleep(time.Millisecond)
		}
	})
	time.Sleep(300 * time.Millisecond)
	r.Kill()
	time.Sleep(500 * time.Millisecond)
	r.Restart()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	pubs.Wait()
	require.NotEmpty(t, acked)
	assert.Positive(t, failed, "some Broadcasts failed while Redis was down")
	// One more, so that a client waiting at the last acknowledged message
	// is answered and sees the target.
	last := acked[len(acked)-1].Cursor()
	target.Store(&last)
	pub.broadcast(t, nodes[1], "stream", "end")
	polls.Wait()
	for i, c := range cls {
		assert.Subset(t, positions(c.got), positions(acked), "client %d has every acknowledged message", i)
		assert.Zero(t, c.told, "client %d was never told of a loss", i)
	}
}

func positions(msgs []clientmgr.Message) []clientmgr.Cursor {
	out := make([]clientmgr.Cursor, len(msgs))
	for i, m := range msgs {
		out[i] = m.Cursor()
	}
	return out
}

// A message that reached the stream but not the channel (here written by
// hand, without PUBLISH): the next delivery does not follow, so the batch
// waiting on the node ends before it, and the client's next poll reads the
// missing one from the stream. In order, none lost, none twice, and no
// one told of a loss that did not happen.
func TestGapOnTheChannel(t *testing.T) {
	r := testredis.Start(t)
	pub := newPublished()
	a := newNode(t, r.Addr, 64)
	one := pub.broadcast(t, a, "room", "one")
	awaitLast(t, a, "room", one.Cursor())
	c := newClient("room", pub, one.Cursor())
	wait := c.waitOn(t, a)

	raw := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer raw.Close()
	require.NoError(t, raw.Incr(t.Context(), "cometkit:{room}:seq").Err())
	epoch := strconv.FormatUint(one.Epoch, 10)
	now := time.Now().UnixNano()
	require.NoError(t, raw.XAdd(t.Context(), &redis.XAddArgs{
		Stream: "cometkit:{room}:log", ID: "2-0",
		Values: []any{"t", strconv.FormatInt(now, 10), "e", epoch, "d", "not on the channel"},
	}).Err())
	pub.add(clientmgr.Message{Topic: "room", Epoch: one.Epoch, Seq: 2, Data: []byte("not on the channel")})
	three := pub.broadcast(t, newNode(t, r.Addr, 64), "room", "three")

	c.answer(t, <-wait)
	require.True(t, c.pollUntil(t, on(a), three.Cursor()))
	assert.Equal(t, []uint64{2, 3}, seqs(c.got))
	assert.Equal(t, "not on the channel", string(c.got[0].Data))
	assert.Zero(t, c.told)
}

// Open makes no connection: the Manager's Open does, and its Close closes
// the client Open made. A URL that is not Redis's is an error at once.
func TestOpen(t *testing.T) {
	r := testredis.Start(t)
	b, err := redisbroker.Open("redis://" + r.Addr + "/0")
	require.NoError(t, err)
	mgr, err := clientmgr.Open(t.Context(), clientmgr.WithBroker(b))
	require.NoError(t, err)
	_, err = mgr.Broadcast(t.Context(), "t", []byte("x"))
	assert.NoError(t, err)
	require.NoError(t, mgr.Close()) // closes the broker, which closes its client
	_, err = b.Publish(t.Context(), "t", []byte("y"), clientmgr.Cursor{})
	assert.ErrorIs(t, err, redisbroker.ErrClosed)

	_, err = redisbroker.Open("http://" + r.Addr)
	assert.ErrorContains(t, err, "redisbroker: redis: invalid URL scheme")
	unstarted, err := redisbroker.Open("redis://127.0.0.1:1/0")
	assert.NoError(t, err, "no I/O before Start")
	assert.NoError(t, unstarted.Close(), "closing a broker never started closes its client")
}

// Redis down when a node starts: Open waits for it, trying again, and
// succeeds once it is up; with a context too short for that, Open fails,
// saying why, and leaves nothing running (goleak, and the client Open
// made is closed).
func TestRedisDownAtStart(t *testing.T) {
	r := testredis.Start(t)
	r.Kill()

	b, err := redisbroker.Open("redis://" + r.Addr + "/0")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = clientmgr.Open(ctx, clientmgr.WithBroker(b))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "clientmgr: starting the broker: redisbroker: no subscription to \"cometkit:messages\" before the start's context ended")
	assert.ErrorContains(t, err, "connection refused")
	assert.Less(t, time.Since(start), 3*time.Second)
	_, err = b.Publish(t.Context(), "t", []byte("x"), clientmgr.Cursor{})
	assert.ErrorIs(t, err, redisbroker.ErrClosed, "a broker whose Start failed is closed")

	b, err = redisbroker.Open("redis://" + r.Addr + "/0")
	require.NoError(t, err)
	opened := make(chan error, 1)
	var mgr *clientmgr.Manager
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var err error
		mgr, err = clientmgr.Open(ctx, clientmgr.WithBroker(b))
		opened <- err
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-opened:
		t.Fatalf("Open returned %v while Redis was down", err)
	default:
	}
	r.Restart()
	require.NoError(t, <-opened)
	defer mgr.Close()

	pub := newPublished()
	other := newNode(t, r.Addr, 64)
	p := newClient("room", pub, clientmgr.Cursor{})
	wait := p.waitOn(t, other)
	msg, err := mgr.Broadcast(t.Context(), "room", []byte("hello"))
	require.NoError(t, err)
	pub.add(msg)
	p.answer(t, <-wait)
	assert.Equal(t, texts(msg), texts(p.got...), "the node that waited for Redis publishes to the others")
	reply := pub.broadcast(t, other, "room", "hello to you")
	require.Eventually(t, func() bool {
		topics := mgr.Topics("room")
		return len(topics) == 1 && topics[0].Last == reply.Cursor()
	}, 10*time.Second, 2*time.Millisecond, "and hears theirs")
}
