package clientmgr_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
)

// reader is a Subscription's reader, as a WebSocket's writer would be:
// woken through a channel with room for one.
type reader struct {
	sub   *clientmgr.Subscription
	ready chan struct{}
	calls atomic.Int32
}

func subscribe(t *testing.T, m *clientmgr.Manager, topic string, after clientmgr.Cursor) *reader {
	t.Helper()
	r := &reader{ready: make(chan struct{}, 1)}
	sub, err := m.Subscribe(t.Context(), topic, after, func() {
		r.calls.Add(1)
		select {
		case r.ready <- struct{}{}:
		default:
		}
	})
	require.NoError(t, err)
	r.sub = sub
	t.Cleanup(sub.Close)
	return r
}

// take waits for ready and takes the batch.
func (r *reader) take(t *testing.T) clientmgr.Batch {
	t.Helper()
	<-r.ready
	b, err := r.sub.Take(t.Context())
	require.NoError(t, err)
	return b
}

func data(b clientmgr.Batch) (out []string) {
	for _, m := range b.Messages {
		out = append(out, string(m.Data))
	}
	return out
}

// A subscription gets the backlog after its cursor at once, then every
// message, batch after batch, each following the last without a gap.
func TestSubscriptionFollowsTheTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		defer m.Close()
		first := broadcast(t, m, "room", "1")
		broadcast(t, m, "room", "2")
		r := subscribe(t, m, "room", first.Cursor())
		b := r.take(t)
		assert.Equal(t, []string{"2"}, data(b))
		assert.True(t, b.Complete)
		broadcast(t, m, "room", "3")
		broadcast(t, m, "room", "4")
		b = r.take(t)
		assert.Equal(t, []string{"3", "4"}, data(b), "both, in one batch: the reader had not taken the first yet")
		synctest.Wait()
		assert.Empty(t, r.ready, "nothing more to take")
	})
}

// A batch that ends early (a delivery this node never got) is taken as
// far as it goes; the subscription reads the rest from the history.
func TestSubscriptionRecoversAGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, onA, b := twoNodes(t)
		one := broadcast(t, b, "room", "1")
		r := subscribe(t, a, "room", one.Cursor())
		onA.miss(t, b, "room", "2")
		broadcast(t, b, "room", "3")
		batch := r.take(t)
		assert.Empty(t, batch.Messages, "the batch ends before the gap")
		assert.True(t, batch.Complete)
		batch = r.take(t)
		assert.Equal(t, []string{"2", "3"}, data(batch), "read from the history, in order")
	})
}

// WithMaxBatch: a full batch takes no more; the next Take goes on from its
// last message, through the history.
func TestSubscriptionFullBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New(clientmgr.WithMaxBatch(2))
		defer m.Close()
		r := subscribe(t, m, "room", clientmgr.Cursor{})
		for _, d := range []string{"1", "2", "3", "4", "5"} {
			broadcast(t, m, "room", d)
		}
		assert.Equal(t, []string{"1", "2"}, data(r.take(t)))
		assert.Equal(t, []string{"3", "4"}, data(r.take(t)))
		assert.Equal(t, []string{"5"}, data(r.take(t)))
	})
}

// A cursor of another epoch: the subscription starts with what the new
// one has, incomplete.
func TestSubscriptionStaleCursor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seen, m := restarted(t, "room", "old")
		now := broadcast(t, m, "room", "new")
		b := subscribe(t, m, "room", seen.Cursor()).take(t)
		assert.Equal(t, []string{"new"}, data(b))
		assert.False(t, b.Complete)
		assert.Equal(t, now.Cursor(), b.Next)
	})
}

// Close: ready is not called again, and the topic has no registration
// left; the Manager's Close wakes a subscription, whose Take then says so.
func TestSubscriptionClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New()
		r := subscribe(t, m, "room", clientmgr.Cursor{})
		assert.Equal(t, 1, m.Count("room"))
		r.sub.Close()
		assert.Zero(t, m.Count("room"))
		broadcast(t, m, "room", "after close")
		synctest.Wait()
		assert.Zero(t, r.calls.Load())

		other := subscribe(t, m, "room", clientmgr.Cursor{Seq: 1, Epoch: 0})
		require.NoError(t, m.Close())
		<-other.ready
		_, err := other.sub.Take(context.Background())
		assert.ErrorIs(t, err, clientmgr.ErrClosed)
	})
}

// A Take whose history read fails (here its context has ended) leaves
// nothing registered: later Takes return the error again, and Close, which
// the caller is told to call, ends it without a fault. A Take after Close
// says so.
func TestSubscriptionAfterFailedTake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := clientmgr.New(clientmgr.WithMaxBatch(1))
		defer m.Close()
		r := subscribe(t, m, "room", clientmgr.Cursor{})
		broadcast(t, m, "room", "1")
		broadcast(t, m, "room", "2") // beyond the batch: the next Take reads the history
		ended, cancel := context.WithCancel(context.Background())
		cancel()
		b, err := r.sub.Take(ended)
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, []string{"1"}, data(b), "the batch is valid with the error")
		assert.Zero(t, m.Count("room"), "nothing left registered")
		_, again := r.sub.Take(context.Background())
		assert.ErrorIs(t, again, context.Canceled)
		assert.NotPanics(t, r.sub.Close)

		closed := subscribe(t, m, "room", clientmgr.Cursor{})
		closed.sub.Close()
		_, err = closed.sub.Take(context.Background())
		assert.ErrorIs(t, err, clientmgr.ErrSubscriptionClosed)
	})
}
