package continuation_test

// While the OnTimeout listeners of an expired suspension run, Resume and
// Complete follow the rule of the suspending dispatch: the first from
// anyone decides, later ones get ErrNotSuspended, and the decision acts
// once the listeners have returned. There is no "listener's goroutine".

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
)

// expiringServer suspends the first dispatch for a second with listener
// l, and records how each redispatch was woken.
func expiringServer(t *testing.T, hist *history, l continuation.Listener) *continuation.Dispatcher {
	return continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsInitial() {
			c.SetTimeout(time.Second)
			c.AddListener(l)
			require.NoError(t, c.Suspend())
			return
		}
		hist.add("redispatch expired=" + strconv.FormatBool(c.IsExpired()) + " resumed=" + strconv.FormatBool(c.IsResumed()))
		io.WriteString(w, "REDISPATCHED")
	}))
}

// A listener that hands the Resume to a helper goroutine and waits for it:
// the Resume succeeds, and the expiry dispatch, with IsExpired and
// IsResumed both true, starts only after the listener has returned.
func TestOnTimeoutResumesFromHelper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		l := continuation.ListenerFuncs{Timeout: func(c *continuation.Continuation) {
			var wg sync.WaitGroup
			wg.Go(func() { hist.add("helper: " + errName(c.Resume())) })
			wg.Wait()
			assert.True(t, c.IsSuspended(), "IsSuspended while the listeners run")
			time.Sleep(100 * time.Millisecond) // the redispatch waits for this
			hist.add("listener returned")
		}}
		assert.Equal(t, "REDISPATCHED", get(expiringServer(t, &hist, l), "/").Wait().Body.String())
		assert.Equal(t, []string{"helper: ok", "listener returned", "redispatch expired=true resumed=true"}, hist.get())
	})
}

// The same with Complete: the helper writes the answer and completes; the
// request ends after the listener returns, with no expiry dispatch.
func TestOnTimeoutCompletesFromHelper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		l := continuation.ListenerFuncs{
			Timeout: func(c *continuation.Continuation) {
				var wg sync.WaitGroup
				wg.Go(func() {
					io.WriteString(c.ResponseWriter(), "COMPLETED")
					hist.add("helper: " + errName(c.Complete()))
				})
				wg.Wait()
				time.Sleep(100 * time.Millisecond)
				hist.add("listener returned")
			},
			Complete: func(*continuation.Continuation) { hist.add("onComplete") },
		}
		assert.Equal(t, "COMPLETED", get(expiringServer(t, &hist, l), "/").Wait().Body.String())
		assert.Equal(t, []string{"helper: ok", "listener returned", "onComplete"}, hist.get())
	})
}

// An event source that knows nothing of the expiry resumes through its
// Handle while the listener runs: it wins (the listener's own Resume then
// loses), and there is one expiry dispatch with both flags. Once the
// listeners have returned, that Handle can do nothing, to this suspension
// or the next one (Jetty #6227).
func TestResumeWhileListenersRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		listening := make(chan struct{})
		eventDone := make(chan struct{})
		handles := make(chan continuation.Handle, 2)
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			switch {
			case c.IsInitial():
				c.SetTimeout(time.Second)
				c.AddListener(continuation.ListenerFuncs{Timeout: func(c *continuation.Continuation) {
					if c.Attribute("second") != nil {
						return
					}
					close(listening)
					<-eventDone
					hist.add("listener: " + errName(c.Resume()))
				}})
			case c.Attribute("second") == nil:
				hist.add("redispatch expired=" + strconv.FormatBool(c.IsExpired()) + " resumed=" + strconv.FormatBool(c.IsResumed()))
				c.SetAttribute("second", true)
				c.SetTimeout(0)
			default:
				io.WriteString(w, "SECOND "+strconv.FormatBool(c.IsResumed()))
				return
			}
			require.NoError(t, c.Suspend())
			handles <- c.Handle()
		}))
		call := get(d, "/")
		first := <-handles
		<-listening
		hist.add("event: " + errName(first.Resume()))
		close(eventDone)
		second := <-handles
		synctest.Wait() // the second suspension waits
		assert.Equal(t, []string{"event: ok", "listener: not suspended", "redispatch expired=true resumed=true"}, hist.get())

		assert.ErrorIs(t, first.Resume(), continuation.ErrNotSuspended, "the first suspension's Handle")
		assert.ErrorIs(t, first.Complete(), continuation.ErrNotSuspended, "the first suspension's Handle")
		assert.True(t, second.Continuation().IsSuspended(), "the second suspension is untouched")
		require.NoError(t, second.Resume())
		assert.Equal(t, "SECOND true", call.Wait().Body.String())
	})
}

// A Resume from an unrelated goroutine racing the listener's own: exactly
// one wins, whoever comes first, and there is exactly one expiry
// dispatch, with both flags.
func TestResumeRacesListenerResume(t *testing.T) {
	for range raceRounds {
		var listenerWon, otherWon, dispatches atomic.Int32
		var flags atomic.Value
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if !c.IsInitial() {
				dispatches.Add(1)
				flags.Store([2]bool{c.IsExpired(), c.IsResumed()})
				return
			}
			c.SetTimeout(time.Millisecond)
			c.AddListener(continuation.ListenerFuncs{Timeout: func(c *continuation.Continuation) {
				var wg sync.WaitGroup
				wg.Go(func() {
					if c.Resume() == nil {
						otherWon.Add(1)
					}
				})
				if c.Resume() == nil {
					listenerWon.Add(1)
				}
				wg.Wait()
			}})
			require.NoError(t, c.Suspend())
		}))
		get(d, "/").Wait()
		require.Equal(t, int32(1), listenerWon.Load()+otherWon.Load(), "Resume calls that won")
		require.Equal(t, int32(1), dispatches.Load())
		require.Equal(t, [2]bool{true, true}, flags.Load())
	}
}
