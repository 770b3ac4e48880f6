package clientmgr_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

// restarted is a single node's restart: a Manager publishes data on
// topic and is closed, and a new one starts, closed at the end of the
// test. It returns the message as a client saw it before the restart, and
// the new Manager.
func restarted(t *testing.T, topic, data string) (clientmgr.Message, *clientmgr.Manager) {
	t.Helper()
	before := clientmgr.New()
	seen := broadcast(t, before, topic, data)
	require.NoError(t, before.Close())
	m := clientmgr.New()
	t.Cleanup(func() { m.Close() })
	return seen, m
}

// A restart of a single node: the Manager is closed and a new one started,
// messages are published, and a client comes back with its cursor from
// before. The new sequence has reached the old cursor's Seq, so a plain
// Seq would be taken at face value and message 1 skipped; the epoch says
// the cursor is from another sequence, and the client gets every message
// of the new one, told that it may have missed some.
func TestRestartCursorFromAnotherEpoch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seen, m := restarted(t, "edge", "before the restart")
		var published []clientmgr.Message
		for _, d := range []string{"one", "two", "three"} {
			published = append(published, broadcast(t, m, "edge", d))
		}
		require.NotEqual(t, seen.Epoch, published[0].Epoch)
		next := published[2].Cursor().String()
		assert.Equal(t, "edge/1:one\nedge/2:two\nedge/3:three\nedge incomplete, next "+next+"\n",
			start(longPoll(t, m, nil), "/?topic=edge&cursor="+seen.Cursor().String()).Wait().Body.String())

		b, err := m.History(t.Context(), "edge", seen.Cursor())
		require.NoError(t, err)
		assert.False(t, b.Complete)
		assert.Equal(t, published, b.Messages)
		assert.Equal(t, published[2].Cursor(), b.Next)
	})
}

// Back after a restart before anything was published: the client is
// answered at once (it must not wait to learn), told, and given a cursor
// from which it then gets every message of the new sequence.
func TestRestartNothingPublishedYet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seen, m := restarted(t, "edge", "x")
		h := longPoll(t, m, nil)
		assert.Equal(t, "edge incomplete, next 0\n", start(h, "/?topic=edge&cursor="+seen.Cursor().String()).Wait().Body.String())
		p := start(h, "/?topic=edge&cursor=0")
		synctest.Wait()
		broadcast(t, m, "edge", "first of the new sequence")
		assert.Equal(t, "edge/1:first of the new sequence\n", p.Wait().Body.String())
	})
}

// Each topic of a registration has its own batch: its messages, whether
// its cursor was honoured, and where to ask from next.
func TestBatchesPerTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New(clientmgr.WithHistory(2))
		defer m.Close()
		var a []clientmgr.Message
		for _, d := range []string{"a1", "a2", "a3"} {
			a = append(a, broadcast(t, m, "a", d))
		}
		batches := make(chan []clientmgr.Batch, 1)
		d := dispatcher(func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
			if !c.IsInitial() {
				batches <- clientmgr.Batches(c)
				return
			}
			require.NoError(t, c.Suspend())
			require.NoError(t, m.RegisterCursor(r.Context(), "a", a[0].Cursor(), c)) // a2, a3: complete
			require.NoError(t, m.RegisterCursor(r.Context(), "b", clientmgr.Cursor{}, c))
		})
		start(d, "/").Wait()
		got := <-batches
		require.Len(t, got, 2)
		assert.Equal(t, clientmgr.Batch{Topic: "a", Messages: a[1:], Complete: true, Next: a[2].Cursor()}, got[0])
		assert.Equal(t, clientmgr.Batch{Topic: "b", Complete: true}, got[1], "nothing on b: waits no longer than the others")

		// Seq 1 fell out of a history of 2: from the start, incomplete.
		b, err := m.History(t.Context(), "a", clientmgr.Cursor{})
		require.NoError(t, err)
		assert.Equal(t, clientmgr.Batch{Topic: "a", Messages: a[1:], Complete: false, Next: a[2].Cursor()}, b)
	})
}

// One continuation registered twice on one topic in one suspension: the
// second is refused, and the backlog is in the batch once.
func TestRegisterTwiceOnOneTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		defer m.Close()
		broadcast(t, m, "room", "backlog")
		second := make(chan error, 1)
		d := dispatcher(func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
			if !c.IsInitial() {
				assert.Len(t, clientmgr.Messages(c), 1)
				return
			}
			require.NoError(t, c.Suspend())
			require.NoError(t, m.Register("room", 0, c))
			second <- m.Register("room", 0, c)
		})
		start(d, "/").Wait()
		assert.ErrorIs(t, <-second, clientmgr.ErrAlreadyRegistered)
	})
}

// Close racing Register: every registration either fails with ErrClosed
// or is resumed by Close; none waits for its timeout.
func TestCloseRacesRegister(t *testing.T) {
	const requests = 4000
	m := clientmgr.New()
	var failed, answered sync.WaitGroup
	failed.Add(requests)
	var mu sync.Mutex
	var closedErrs int
	d := dispatcher(func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
		if !c.IsInitial() {
			return
		}
		require.NoError(t, c.Suspend())
		err := m.Register("room", 0, c)
		if err != nil {
			assert.ErrorIs(t, err, clientmgr.ErrClosed)
			mu.Lock()
			closedErrs++
			mu.Unlock()
			c.Resume()
		}
		failed.Done()
	}, continuation.WithDefaultTimeout(time.Hour), continuation.WithQueueSize(requests))
	for i := range requests {
		answered.Go(func() { start(d, "/").Wait() })
		if i == requests/2 {
			go m.Close()
		}
	}
	failed.Wait()
	done := make(chan struct{})
	go func() { answered.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("registrations left waiting after Close: %d", m.Count("room"))
	}
	t.Logf("%d of %d registrations came after Close", closedErrs, requests)
}

// Deliveries arriving while a registration reads the history join the
// batch after it, once each and in order, whether they were published
// before the read (in both) or after it (only delivered).
func TestHistoryReadRacesDeliveries(t *testing.T) {
	for _, when := range []string{"before the read", "after the read"} {
		t.Run(when, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEngine(16)
				m, b := e.node(t)
				other, _ := e.node(t)
				first := broadcast(t, other, "room", "1")
				b.duringHistory = func(read func()) {
					if when == "after the read" {
						read()
					}
					broadcast(t, other, "room", "2")
					broadcast(t, other, "room", "3")
					if when == "before the read" {
						read()
					}
				}
				// A cursor behind this node's position, so the history is read.
				assert.Equal(t, "room/2:2\nroom/3:3\n",
					start(longPoll(t, m, nil), "/?topic=room&cursor="+first.Cursor().String()).Wait().Body.String())
			})
		})
	}
}

// Messages delivered twice (a broker that repeats one) reach a client once.
func TestDuplicateDeliveryIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEngine(16)
		m, b := e.node(t)
		p := start(longPoll(t, m, nil), "/?topic=room")
		synctest.Wait()
		msg := broadcast(t, m, "room", "once")
		require.NoError(t, b.node.Deliver(msg))
		assert.Equal(t, "room/1:once\n", p.Wait().Body.String())
	})
}

// An option's value that cannot be meant panics in New and Open, naming
// the option; a valid one is taken as it is.
func TestOptionsSayNo(t *testing.T) {
	for want, opt := range map[string]clientmgr.Option{
		"clientmgr: WithHistory(0): must be at least 1":                              clientmgr.WithHistory(0),
		"clientmgr: WithMaxMessageSize(-1): must be at least 1":                      clientmgr.WithMaxMessageSize(-1),
		"clientmgr: WithMaxTopics(0): must be at least 1":                            clientmgr.WithMaxTopics(0),
		"clientmgr: WithMaxBatch(0): must be at least 1":                             clientmgr.WithMaxBatch(0),
		"clientmgr: WithIdleTimeout(0s): must be more than 0":                        clientmgr.WithIdleTimeout(0),
		"clientmgr: WithBroker(nil): leave the option out for the in-process broker": clientmgr.WithBroker(nil),
		"clientmgr: WithMetrics(nil): leave the option out to register nothing":      clientmgr.WithMetrics(nil),
	} {
		assert.PanicsWithValue(t, want, func() { clientmgr.New(opt) })
		assert.PanicsWithValue(t, want, func() { clientmgr.Open(context.Background(), opt) })
	}
	m := clientmgr.New(clientmgr.WithHistory(1), clientmgr.WithMaxBatch(1), clientmgr.WithIdleTimeout(time.Nanosecond))
	assert.NoError(t, m.Close())
}
