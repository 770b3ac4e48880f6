package clientmgr_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

// longPoll is the handler the tests drive: it registers on the topics in
// ?topic= (comma-separated) with the plain Seq cursor ?after= (Register),
// or with ?cursor= (RegisterCursor), and answers each batch as
// "topic/seq:data" lines, followed by "topic incomplete, next <cursor>"
// for a batch that could not honour the cursor.
func longPoll(t *testing.T, m *clientmgr.Manager, registered chan<- *continuation.Continuation) http.Handler {
	return dispatcher(func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
		if !c.IsInitial() {
			for _, b := range clientmgr.Batches(c) {
				for _, msg := range b.Messages {
					fmt.Fprintf(w, "%s/%d:%s\n", msg.Topic, msg.Seq, msg.Data)
				}
				if !b.Complete {
					fmt.Fprintf(w, "%s incomplete, next %s\n", b.Topic, b.Next)
				}
			}
			return
		}
		q := r.URL.Query()
		require.NoError(t, c.Suspend())
		for _, topic := range strings.Split(q.Get("topic"), ",") {
			if q.Has("cursor") {
				cursor, err := clientmgr.ParseCursor(q.Get("cursor"))
				require.NoError(t, err)
				require.NoError(t, m.RegisterCursor(r.Context(), topic, cursor, c))
				continue
			}
			after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
			require.NoError(t, m.Register(topic, after, c))
		}
		if registered != nil {
			registered <- c
		}
	}, continuation.WithDefaultTimeout(time.Minute))
}

func broadcast(t *testing.T, m *clientmgr.Manager, topic, data string) clientmgr.Message {
	t.Helper()
	msg, err := m.Broadcast(t.Context(), topic, []byte(data))
	require.NoError(t, err)
	return msg
}

func TestBroadcastResumesRegistered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		defer m.Close()
		h := longPoll(t, m, nil)
		a, b := start(h, "/?topic=room"), start(h, "/?topic=room")
		other := start(h, "/?topic=elsewhere")
		synctest.Wait()
		assert.Equal(t, 2, m.Count("room"))

		msg := broadcast(t, m, "room", "hello")
		assert.Equal(t, uint64(1), msg.Seq)
		assert.Equal(t, "room/1:hello\n", a.Wait().Body.String())
		assert.Equal(t, "room/1:hello\n", b.Wait().Body.String())
		synctest.Wait()
		assert.Zero(t, m.Count("room"), "registrations end with the dispatch")
		assert.Equal(t, 1, m.Count("elsewhere"))
		broadcast(t, m, "elsewhere", "x")
		other.Wait()
	})
}

// Two Broadcasts that land before the resumed handler runs are both in
// Messages(c): registration lasts until the next dispatch starts.
func TestBatchingUntilDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		defer m.Close()
		gate := make(chan struct{})
		d := dispatcher(func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
			if !c.IsInitial() {
				for _, msg := range clientmgr.Messages(c) {
					fmt.Fprintf(w, "%d:%s ", msg.Seq, msg.Data)
				}
				return
			}
			require.NoError(t, c.Suspend())
			require.NoError(t, m.Register("room", 0, c))
			<-gate // the redispatch cannot start before this dispatch returns
		})
		p := start(d, "/")
		synctest.Wait()
		broadcast(t, m, "room", "one")
		broadcast(t, m, "room", "two")
		close(gate)
		assert.Equal(t, "1:one 2:two ", p.Wait().Body.String())
	})
}

// Register with a cursor behind the topic: the backlog is delivered at once.
func TestRegisterWithCursorDeliversBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		defer m.Close()
		for i := range 5 {
			broadcast(t, m, "room", "m"+strconv.Itoa(i+1))
		}
		h := longPoll(t, m, nil)
		assert.Equal(t, "room/4:m4\nroom/5:m5\n", start(h, "/?topic=room&after=3").Wait().Body.String())
		// Up to date: waits for the next message.
		p := start(h, "/?topic=room&after=5")
		synctest.Wait()
		assert.Equal(t, 1, m.Count("room"))
		broadcast(t, m, "room", "m6")
		assert.Equal(t, "room/6:m6\n", p.Wait().Body.String())
		// A cursor from the future (before a restart): the whole history,
		// incomplete.
		head, err := m.Head(t.Context(), "room")
		require.NoError(t, err)
		assert.Equal(t, "room/1:m1\nroom/2:m2\nroom/3:m3\nroom/4:m4\nroom/5:m5\nroom/6:m6\nroom incomplete, next "+head.String()+"\n",
			start(h, "/?topic=room&after=99").Wait().Body.String())
	})
}

// A registration on several topics ends on all of them at the next
// dispatch.
func TestRegistrationOnSeveralTopicsEndsTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		defer m.Close()
		p := start(longPoll(t, m, nil), "/?topic=a,b,c")
		synctest.Wait()
		for _, topic := range []string{"a", "b", "c"} {
			assert.Equal(t, 1, m.Count(topic))
		}
		broadcast(t, m, "b", "x")
		assert.Equal(t, "b/1:x\n", p.Wait().Body.String())
		for _, topic := range []string{"a", "b", "c"} {
			assert.Zero(t, m.Count(topic), topic)
		}
	})
}

// A client that goes away is unregistered; an expired one too, at its
// expiry dispatch.
func TestRegistrationEndsWhenRequestEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		defer m.Close()
		h := longPoll(t, m, nil)
		gone := start(h, "/?topic=room")
		synctest.Wait()
		require.Equal(t, 1, m.Count("room"))
		gone.Disconnect()
		gone.Wait()
		assert.Zero(t, m.Count("room"))

		expired := start(h, "/?topic=room")
		synctest.Wait()
		require.Equal(t, 1, m.Count("room"))
		time.Sleep(time.Minute)
		assert.Empty(t, expired.Wait().Body.String())
		assert.Zero(t, m.Count("room"))
	})
}

// A registration on the next suspension starts a new batch; messages of
// the first are not repeated.
func TestStreamingRegistersEachCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		defer m.Close()
		var last uint64
		d := dispatcher(func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
			for _, msg := range clientmgr.Messages(c) {
				fmt.Fprintf(w, "%d ", msg.Seq)
				last = msg.Seq
			}
			if last >= 3 {
				return
			}
			require.NoError(t, c.Suspend())
			require.NoError(t, m.Register("s", last, c))
		})
		p := start(d, "/")
		for range 3 {
			synctest.Wait()
			broadcast(t, m, "s", "x")
		}
		assert.Equal(t, "1 2 3 ", p.Wait().Body.String())
	})
}

func TestSince(t *testing.T) {
	m := clientmgr.New(clientmgr.WithHistory(4))
	defer m.Close()
	msgs, complete := m.Since("room", 0)
	assert.Empty(t, msgs)
	assert.True(t, complete, "an empty topic from the start")
	msgs, complete = m.Since("room", 3)
	assert.Empty(t, msgs)
	assert.False(t, complete, "a cursor into an unknown topic")

	for i := range 10 {
		_, err := m.Broadcast(context.Background(), "room", []byte{byte('a' + i)})
		require.NoError(t, err)
	}
	seqs := func(msgs []clientmgr.Message) (out []uint64) {
		for _, m := range msgs {
			out = append(out, m.Seq)
		}
		return out
	}
	tests := []struct {
		after    uint64
		seqs     []uint64
		complete bool
	}{
		{10, nil, true},
		{8, []uint64{9, 10}, true},
		{6, []uint64{7, 8, 9, 10}, true},
		{5, []uint64{7, 8, 9, 10}, false}, // 6 fell out of the ring
		{0, []uint64{7, 8, 9, 10}, false},
		{11, []uint64{7, 8, 9, 10}, false}, // from the future: the whole history
	}
	for _, tt := range tests {
		msgs, complete := m.Since("room", tt.after)
		assert.Equal(t, tt.seqs, seqs(msgs), "after %d", tt.after)
		assert.Equal(t, tt.complete, complete, "after %d", tt.after)
	}
	msgs, _ = m.Since("room", 9)
	assert.Equal(t, "j", string(msgs[0].Data))
	head, err := m.Head(context.Background(), "room")
	require.NoError(t, err)
	assert.Equal(t, uint64(10), head.Seq)
	assert.Equal(t, msgs[0].Epoch, head.Epoch)
}

func TestErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New(clientmgr.WithMaxMessageSize(8), clientmgr.WithMaxTopics(2))
		ctx := t.Context()
		for _, topic := range []string{"", strings.Repeat("x", clientmgr.MaxTopicLen+1), "a\nb", "a\x00", "\xff", "a\u0085b"} {
			_, err := m.Broadcast(ctx, topic, nil)
			assert.ErrorIs(t, err, clientmgr.ErrInvalidTopic, "%q", topic)
		}
		_, err := m.Broadcast(ctx, strings.Repeat("x", clientmgr.MaxTopicLen), nil)
		assert.NoError(t, err, "a topic of the longest length")
		_, err = m.Broadcast(ctx, "t", []byte("123456789"))
		assert.ErrorIs(t, err, clientmgr.ErrMessageTooLarge)
		_, err = m.Broadcast(ctx, "t", []byte("12345678"))
		assert.NoError(t, err)
		_, err = m.Broadcast(ctx, "third", nil)
		assert.ErrorIs(t, err, clientmgr.ErrTooManyTopics)

		regErr := make(chan error, 1)
		d := dispatcher(func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
			regErr <- m.Register("t", 0, c) // not suspended
		})
		start(d, "/").Wait()
		assert.ErrorIs(t, <-regErr, clientmgr.ErrNotSuspended)

		require.NoError(t, m.Close())
		_, err = m.Broadcast(ctx, "t", nil)
		assert.ErrorIs(t, err, clientmgr.ErrClosed)
		assert.NoError(t, m.Close(), "Close twice")
	})
}

// Idle topics are reclaimed with their history; busy ones are kept.
func TestIdleTopicsReclaimed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New(clientmgr.WithIdleTimeout(10*time.Second), clientmgr.WithMaxTopics(2))
		defer m.Close()
		broadcast(t, m, "idle", "x")
		h := longPoll(t, m, nil)
		p := start(h, "/?topic=watched&after=0")
		synctest.Wait()
		_, err := m.Broadcast(t.Context(), "third", nil)
		require.ErrorIs(t, err, clientmgr.ErrTooManyTopics)

		before, err := m.Head(t.Context(), "idle")
		require.NoError(t, err)
		time.Sleep(20 * time.Second)
		assert.Equal(t, []clientmgr.TopicInfo{{Name: "watched", Subscribers: 1}}, m.Topics(""))
		msg := broadcast(t, m, "idle", "again") // there is room for it again
		assert.Equal(t, uint64(1), msg.Seq, "a reclaimed topic starts again, as after a restart")
		assert.NotEqual(t, before.Epoch, msg.Epoch, "under a new epoch")
		// A client with a cursor from before the reclaim is told.
		assert.Equal(t, "idle/1:again\nidle incomplete, next "+msg.Cursor().String()+"\n",
			start(h, "/?topic=idle&cursor="+before.String()).Wait().Body.String())
		broadcast(t, m, "watched", "z")
		p.Wait()
	})
}

// A slow consumer's batch is bounded: a full batch takes no more, and the
// client's next registration, from its last message, reads the rest from
// the history. Nothing is dropped, and the batch has no gap.
func TestBatchBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		m := clientmgr.New(clientmgr.WithMaxBatch(3), clientmgr.WithMetrics(reg))
		defer m.Close()
		gate := make(chan struct{})
		d := dispatcher(func(w http.ResponseWriter, r *http.Request, c *continuation.Continuation) {
			if !c.IsInitial() {
				b := clientmgr.Batches(c)[0]
				for _, msg := range b.Messages {
					fmt.Fprintf(w, "%d ", msg.Seq)
				}
				fmt.Fprintf(w, "complete=%v next=%d", b.Complete, b.Next.Seq)
				return
			}
			require.NoError(t, c.Suspend())
			after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
			require.NoError(t, m.Register("room", after, c))
			if after == 0 {
				<-gate
			}
		})
		p := start(d, "/")
		synctest.Wait()
		for range 5 {
			broadcast(t, m, "room", "x")
		}
		close(gate)
		assert.Equal(t, "1 2 3 complete=true next=3", p.Wait().Body.String())
		assert.Equal(t, 1.0, testutil.ToFloat64(counter(t, reg, "cometkit_clientmgr_batch_full_total")))
		assert.Equal(t, "4 5 complete=true next=5", start(d, "/?after=3").Wait().Body.String())
	})
}

func TestMetricsAndPresence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		m := clientmgr.New(clientmgr.WithMetrics(reg))
		m2 := clientmgr.New(clientmgr.WithMetrics(reg)) // shares the collectors
		defer m.Close()
		defer m2.Close()
		h := longPoll(t, m, nil)
		a, b := start(h, "/?topic=room:1"), start(h, "/?topic=room:2")
		synctest.Wait()
		assert.Equal(t, []clientmgr.TopicInfo{{Name: "room:1", Subscribers: 1}, {Name: "room:2", Subscribers: 1}}, m.Topics("room:"))
		defer func() {
			infos := m.Topics("room:")
			require.Len(t, infos, 2)
			assert.Equal(t, uint64(1), infos[0].Last.Seq, "the last message delivered here")
		}()
		broadcast(t, m, "room:1", "x")
		broadcast(t, m, "room:2", "y")
		a.Wait()
		b.Wait()
		synctest.Wait()
		problems, err := testutil.GatherAndLint(reg)
		require.NoError(t, err)
		assert.Empty(t, problems)
		assert.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cometkit_clientmgr_deliveries_total Messages added to a registered continuation's batch.
# TYPE cometkit_clientmgr_deliveries_total counter
cometkit_clientmgr_deliveries_total 2
# HELP cometkit_clientmgr_messages_total Messages broadcast through this node.
# TYPE cometkit_clientmgr_messages_total counter
cometkit_clientmgr_messages_total 2
# HELP cometkit_clientmgr_registered Registrations of continuations on topics.
# TYPE cometkit_clientmgr_registered gauge
cometkit_clientmgr_registered 0
# HELP cometkit_clientmgr_topics Topics this node holds.
# TYPE cometkit_clientmgr_topics gauge
cometkit_clientmgr_topics 2
`), "cometkit_clientmgr_deliveries_total", "cometkit_clientmgr_messages_total", "cometkit_clientmgr_registered", "cometkit_clientmgr_topics"))
	})
}

func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: "copy"}, func() float64 {
				return f.GetMetric()[0].GetCounter().GetValue()
			})
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// Close resumes every registered continuation so its handler can answer.
func TestCloseResumesRegistered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		p := start(longPoll(t, m, nil), "/?topic=room")
		synctest.Wait()
		require.NoError(t, m.Close())
		assert.Equal(t, http.StatusOK, p.Wait().Code)
		assert.True(t, errors.Is(m.Register("room", 0, nil), clientmgr.ErrClosed))
	})
}

// A topic's history is bounded in bytes as well as in count: the oldest go
// first, the newest always stays, and a cursor before what is kept gets an
// incomplete batch.
func TestHistoryBytes(t *testing.T) {
	m := clientmgr.New(clientmgr.WithHistory(100), clientmgr.WithHistoryBytes(10))
	defer m.Close()
	for _, d := range []string{"aaaa", "bbbb", "cccc", "dddd"} {
		_, err := m.Broadcast(context.Background(), "t", []byte(d))
		require.NoError(t, err)
	}
	b, err := m.History(context.Background(), "t", clientmgr.Cursor{})
	require.NoError(t, err)
	require.Len(t, b.Messages, 2, "8 bytes kept of 16; a third would make 12")
	assert.Equal(t, "cccc", string(b.Messages[0].Data))
	assert.False(t, b.Complete)
	_, err = m.Broadcast(context.Background(), "t", []byte("a message larger than the bound"))
	require.NoError(t, err)
	b, err = m.History(context.Background(), "t", clientmgr.Cursor{})
	require.NoError(t, err)
	require.Len(t, b.Messages, 1, "the newest stays, whatever its size")
	assert.Equal(t, uint64(5), b.Messages[0].Seq)
}
