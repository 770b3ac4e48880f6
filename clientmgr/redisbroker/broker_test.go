package redisbroker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/clientmgr/redisbroker"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/internal/testredis"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A node is one cometkit server: a Manager on its own Redis broker and
// client, serving long-polls over HTTP.
type node struct {
	mgr    *clientmgr.Manager
	broker *redisbroker.Broker
	reg    *prometheus.Registry
	url    string
}

func newNode(t *testing.T, addr string) *node {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	reg := prometheus.NewRegistry()
	b := redisbroker.New(rdb, redisbroker.WithMetrics(reg), redisbroker.WithHistory(4096),
		redisbroker.WithLogger(slog.New(slog.DiscardHandler)))
	mgr := clientmgr.New(clientmgr.WithBroker(b), clientmgr.WithHistory(4096))
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if !c.IsInitial() {
			for _, m := range clientmgr.Messages(c) {
				fmt.Fprintf(w, "%d %s\n", m.Seq, m.Data)
			}
			return
		}
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		if err := c.Suspend(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := mgr.Register(r.URL.Query().Get("topic"), after, c); err != nil {
			c.Complete()
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	}), continuation.WithDefaultTimeout(30*time.Second), continuation.WithLogger(slog.New(slog.DiscardHandler)))
	srv := httptest.NewServer(d)
	t.Cleanup(func() {
		d.Shutdown(context.Background())
		srv.Close()
		mgr.Close()
		rdb.Close()
	})
	return &node{mgr: mgr, broker: b, reg: reg, url: srv.URL}
}

type message struct {
	seq  uint64
	data string
}

// poll long-polls topic on n after the cursor and returns what came.
func (n *node) poll(ctx context.Context, topic string, after uint64) ([]message, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/?topic=%s&after=%d", n.url, topic, after), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%s: %s", resp.Status, b)
	}
	var msgs []message
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		seq, data, _ := strings.Cut(sc.Text(), " ")
		n, _ := strconv.ParseUint(seq, 10, 64)
		msgs = append(msgs, message{n, data})
	}
	return msgs, sc.Err()
}

func (n *node) metric(name string) float64 {
	families, _ := n.reg.Gather()
	for _, f := range families {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// Two nodes share a topic: a message published on either reaches the
// subscribers waiting on both, with the same Seq; a node that starts later
// has the history; a cursor from one node works on the other.
func TestTwoNodesShareTopics(t *testing.T) {
	r := testredis.Start(t)
	a, b := newNode(t, r.Addr), newNode(t, r.Addr)

	waitA, waitB := pollAsync(a, "room", 0), pollAsync(b, "room", 0)
	awaitRegistered(t, a.mgr, "room", 1)
	awaitRegistered(t, b.mgr, "room", 1)
	msg, err := b.mgr.Broadcast(t.Context(), "room", []byte("hello"))
	require.NoError(t, err)
	assert.Equal(t, uint64(1), msg.Seq)
	assert.Equal(t, []message{{1, "hello"}}, (<-waitA).msgs)
	assert.Equal(t, []message{{1, "hello"}}, (<-waitB).msgs)

	msg, err = a.mgr.Broadcast(t.Context(), "room", []byte("again"))
	require.NoError(t, err)
	assert.Equal(t, uint64(2), msg.Seq, "one sequence for the topic, whichever node publishes")

	late := newNode(t, r.Addr)
	got, complete := late.mgr.Since("room", 0)
	assert.True(t, complete)
	assert.Len(t, got, 2, "a node that starts later has the history")
	assert.Equal(t, uint64(2), late.mgr.LastSeq("room"))

	// Seen on a, re-polled on b: nothing twice.
	wait := pollAsync(b, "room", 2)
	awaitRegistered(t, b.mgr, "room", 1)
	_, err = late.mgr.Broadcast(t.Context(), "room", []byte("third"))
	require.NoError(t, err)
	assert.Equal(t, []message{{3, "third"}}, (<-wait).msgs)
}

type pollResult struct {
	msgs []message
	err  error
}

func pollAsync(n *node, topic string, after uint64) <-chan pollResult {
	out := make(chan pollResult, 1)
	go func() {
		msgs, err := n.poll(context.Background(), topic, after)
		out <- pollResult{msgs, err}
	}()
	return out
}

func awaitRegistered(t *testing.T, m *clientmgr.Manager, topic string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return m.Count(topic) >= n }, 10*time.Second, 5*time.Millisecond)
}

// 2,000 messages published from both nodes at once, and clients that
// re-poll alternately on either node with their cursor: every client gets
// every message once, in Seq order, and Seq n is the same message on both.
func TestOrderAndNoLossAcrossNodes(t *testing.T) {
	const messages, clients = 2000, 10
	r := testredis.Start(t)
	nodes := []*node{newNode(t, r.Addr), newNode(t, r.Addr)}

	var wg sync.WaitGroup
	received := make([][]message, clients)
	for i := range clients {
		wg.Go(func() {
			var cursor uint64
			for poll := 0; cursor < messages; poll++ {
				msgs, err := nodes[(i+poll)%2].poll(t.Context(), "stream", cursor)
				if !assert.NoError(t, err) {
					return
				}
				for _, m := range msgs {
					received[i] = append(received[i], m)
					cursor = m.seq
				}
			}
		})
	}
	published := make([]map[string]uint64, 2) // per node: data → Seq
	var pubs sync.WaitGroup
	for p, n := range nodes {
		published[p] = map[string]uint64{}
		pubs.Go(func() {
			for i := range messages / 2 {
				data := fmt.Sprintf("n%d-%d", p, i)
				msg, err := n.mgr.Broadcast(t.Context(), "stream", []byte(data))
				if !assert.NoError(t, err) {
					return
				}
				published[p][data] = msg.Seq
			}
		})
	}
	pubs.Wait()
	wg.Wait()

	bySeq := map[uint64]string{}
	for _, p := range published {
		for data, seq := range p {
			bySeq[seq] = data
		}
	}
	require.Len(t, bySeq, messages, "every publish got its own Seq")
	for i, got := range received {
		require.Len(t, got, messages, "client %d", i)
		for j, m := range got {
			require.Equal(t, uint64(j+1), m.seq, "client %d: in order, none twice, none missing", i)
			require.Equal(t, bySeq[m.seq], m.data, "client %d: Seq %d is the message published with it", i, m.seq)
		}
	}
}

// A Seq jump on the channel (a message Pub/Sub lost) is repaired from the
// stream before anything later is delivered.
func TestGapRepairedFromTheStream(t *testing.T) {
	r := testredis.Start(t)
	a := newNode(t, r.Addr)
	_, err := a.mgr.Broadcast(t.Context(), "room", []byte("one"))
	require.NoError(t, err)

	// Seq 2 goes into the stream but never reaches the channel.
	raw := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer raw.Close()
	require.NoError(t, raw.Incr(t.Context(), "cometkit:{room}:seq").Err())
	epoch, err := raw.Get(t.Context(), "cometkit:{room}:epoch").Result()
	require.NoError(t, err)
	require.NoError(t, raw.XAdd(t.Context(), &redis.XAddArgs{
		Stream: "cometkit:{room}:log", ID: "2-0",
		Values: map[string]any{"t": strconv.FormatInt(time.Now().UnixNano(), 10), "e": epoch, "d": "lost on the channel"},
	}).Err())

	wait := pollAsync(a, "room", 1)
	awaitRegistered(t, a.mgr, "room", 1)
	b := newNode(t, r.Addr) // publishes Seq 3; a sees 1 then 3
	_, err = b.mgr.Broadcast(t.Context(), "room", []byte("three"))
	require.NoError(t, err)
	res := <-wait
	require.NoError(t, res.err)
	assert.Equal(t, []message{{2, "lost on the channel"}, {3, "three"}}, res.msgs)
	assert.Equal(t, 1.0, a.metric("cometkit_redis_gaps_repaired_total"))
}

// A node whose subscription dropped catches up from the streams when it
// is subscribed again: a message that reached Redis but not the node's
// channel (here written without PUBLISH, then every subscription killed)
// reaches the client waiting there.
func TestResubscriptionCatchesUp(t *testing.T) {
	r := testredis.Start(t)
	a := newNode(t, r.Addr)
	_, err := a.mgr.Broadcast(t.Context(), "room", []byte("one"))
	require.NoError(t, err)
	wait := pollAsync(a, "room", 1)
	awaitRegistered(t, a.mgr, "room", 1)

	raw := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer raw.Close()
	epoch, err := raw.Get(t.Context(), "cometkit:{room}:epoch").Result()
	require.NoError(t, err)
	require.NoError(t, raw.Incr(t.Context(), "cometkit:{room}:seq").Err())
	require.NoError(t, raw.XAdd(t.Context(), &redis.XAddArgs{
		Stream: "cometkit:{room}:log", ID: "2-0",
		Values: map[string]any{"t": strconv.FormatInt(time.Now().UnixNano(), 10), "e": epoch, "d": "while unsubscribed"},
	}).Err())
	require.NoError(t, raw.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Err())

	res := <-wait
	require.NoError(t, res.err)
	assert.Equal(t, []message{{2, "while unsubscribed"}}, res.msgs)
	assert.GreaterOrEqual(t, a.metric("cometkit_redis_resubscriptions_total"), 1.0)
	assert.GreaterOrEqual(t, a.metric("cometkit_redis_messages_recovered_total"), 1.0)
}

// Redis down: Broadcast fails within its deadline, with the cause; clients
// waiting on both nodes stay waiting; once Redis is back the brokers
// subscribe again by themselves and the next message reaches them all.
func TestOutage(t *testing.T) {
	r := testredis.Start(t)
	a, b := newNode(t, r.Addr), newNode(t, r.Addr)
	_, err := a.mgr.Broadcast(t.Context(), "room", []byte("before"))
	require.NoError(t, err)
	waitA, waitB := pollAsync(a, "room", 1), pollAsync(b, "room", 1)
	awaitRegistered(t, a.mgr, "room", 1)
	awaitRegistered(t, b.mgr, "room", 1)

	r.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = a.mgr.Broadcast(ctx, "room", []byte("lost"))
	assert.Error(t, err)
	assert.ErrorContains(t, err, "redisbroker: publish")
	assert.Less(t, time.Since(start), 5*time.Second, "no hang: the deadline is 300 ms")
	assert.Positive(t, a.metric("cometkit_redis_errors_total"))
	assert.Equal(t, 1, a.mgr.Count("room"), "still waiting")
	assert.Equal(t, 1, b.mgr.Count("room"), "still waiting")

	r.Restart()
	require.Eventually(t, func() bool {
		_, err := b.mgr.Broadcast(t.Context(), "room", []byte("after"))
		return err == nil
	}, 20*time.Second, 100*time.Millisecond)
	for _, w := range []<-chan pollResult{waitA, waitB} {
		res := <-w
		require.NoError(t, res.err)
		require.NotEmpty(t, res.msgs)
		assert.Equal(t, "after", res.msgs[0].data)
		assert.Equal(t, uint64(2), res.msgs[0].seq, "Seq goes on from where it was: Redis kept it")
	}
	assert.Eventually(t, func() bool { return a.metric("cometkit_redis_resubscriptions_total") >= 1 }, 10*time.Second, 10*time.Millisecond)
}

// Kill and restart redis-server in the middle of a stream of publishes on
// one node, with clients long-polling on both nodes all along: every
// client ends with every message whose Broadcast succeeded, in order, once.
func TestRestartMidStream(t *testing.T) {
	const clients = 4
	r := testredis.Start(t)
	nodes := []*node{newNode(t, r.Addr), newNode(t, r.Addr)}

	var target atomic.Uint64 // the last acknowledged Seq, once publishing is over
	target.Store(math.MaxUint64)
	received := make([][]uint64, clients)
	var polls sync.WaitGroup
	for i := range clients {
		polls.Go(func() {
			for cursor := uint64(0); cursor < target.Load(); {
				msgs, err := nodes[i%2].poll(t.Context(), "stream", cursor)
				if !assert.NoError(t, err) {
					return
				}
				for _, m := range msgs {
					if !assert.Greater(t, m.seq, cursor, "client %d: in order, none twice", i) {
						return
					}
					received[i] = append(received[i], m.seq)
					cursor = m.seq
				}
			}
		})
	}

	stop := make(chan struct{})
	var acked []uint64 // Seqs of successful Broadcasts, in order
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
			msg, err := nodes[0].mgr.Broadcast(ctx, "stream", []byte(strconv.Itoa(i)))
			cancel()
			if err != nil {
				failed++
				time.Sleep(20 * time.Millisecond)
				continue
			}
			acked = append(acked, msg.Seq)
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
	// One more, so that a poller waiting at the last acknowledged Seq is
	// answered and sees the target.
	target.Store(acked[len(acked)-1])
	_, err := nodes[1].mgr.Broadcast(t.Context(), "stream", []byte("end"))
	require.NoError(t, err)
	polls.Wait()
	for i, got := range received {
		assert.Subset(t, got, acked, "client %d has every acknowledged message", i)
	}
}

// Redis loses its data (FLUSHALL stands in for a restart without
// persistence): the topic's Seq starts again at 1 under a new epoch, and
// the node drops its copy rather than ignore Seqs it has seen: a client
// waiting with the old cursor gets the new message, and one re-polling
// with it gets the new history.
func TestRedisLosesItsData(t *testing.T) {
	r := testredis.Start(t)
	a := newNode(t, r.Addr)
	for _, m := range []string{"one", "two", "three"} {
		_, err := a.mgr.Broadcast(t.Context(), "room", []byte(m))
		require.NoError(t, err)
	}
	wait := pollAsync(a, "room", 3)
	awaitRegistered(t, a.mgr, "room", 1)

	raw := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer raw.Close()
	require.NoError(t, raw.FlushAll(t.Context()).Err())
	msg, err := a.mgr.Broadcast(t.Context(), "room", []byte("after the loss"))
	require.NoError(t, err)
	assert.Equal(t, uint64(1), msg.Seq)
	res := <-wait
	require.NoError(t, res.err)
	assert.Equal(t, []message{{1, "after the loss"}}, res.msgs)
	assert.Equal(t, 1.0, a.metric("cometkit_redis_sequence_resets_total"))

	msgs, err := a.poll(t.Context(), "room", 3)
	require.NoError(t, err)
	assert.Equal(t, []message{{1, "after the loss"}}, msgs, "a cursor from before the loss gets the new history")
}

// Redis restarts from an AOF that lacks its last writes (fsync once a
// second): its sequence is behind what the nodes hold. The next message
// still gets a Seq after the node's, and reaches a client waiting there.
func TestRedisLosesItsLastWrites(t *testing.T) {
	r := testredis.Start(t)
	a := newNode(t, r.Addr)
	for i := range 5 {
		_, err := a.mgr.Broadcast(t.Context(), "room", []byte(strconv.Itoa(i+1)))
		require.NoError(t, err)
	}
	raw := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer raw.Close()
	require.NoError(t, raw.Set(t.Context(), "cometkit:{room}:seq", 2, 0).Err())
	require.NoError(t, raw.XDel(t.Context(), "cometkit:{room}:log", "3-0", "4-0", "5-0").Err())

	wait := pollAsync(a, "room", 5)
	awaitRegistered(t, a.mgr, "room", 1)
	msg, err := a.mgr.Broadcast(t.Context(), "room", []byte("six"))
	require.NoError(t, err)
	assert.Equal(t, uint64(6), msg.Seq)
	res := <-wait
	require.NoError(t, res.err)
	assert.Equal(t, []message{{6, "six"}}, res.msgs)
}

func TestOpen(t *testing.T) {
	r := testredis.Start(t)
	b, err := redisbroker.Open("redis://" + r.Addr + "/0")
	require.NoError(t, err)
	mgr := clientmgr.New(clientmgr.WithBroker(b))
	_, err = mgr.Broadcast(t.Context(), "t", []byte("x"))
	assert.NoError(t, err)
	require.NoError(t, mgr.Close()) // closes the broker, which closes its client

	_, err = redisbroker.Open("redis://127.0.0.1:1/0")
	assert.Error(t, err, "nothing listens there")
	_, err = redisbroker.Open("http://" + r.Addr)
	assert.Error(t, err, "not a redis URL")
}
