package continuation_test

// Every way out of a request gives back what it holds exactly once: the
// suspended count, the gauge, the pool slot. runtime.Goexit in a handler
// or a listener, and Suspend called from another goroutine as the handler
// returns, are the ways that used to leak.

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

// runtime.Goexit anywhere in a request's life: the request ends (net/http
// drops the connection, as for a panic it does not recover), OnComplete
// runs and Done closes, later calls get ErrCompleted, and the suspended
// count, its gauge and the one worker are all given back, so that the
// next requests can suspend under WithMaxSuspended(3).
func TestGoexit(t *testing.T) {
	tests := []struct {
		name    string
		handler func(c *continuation.Continuation) // runs in every dispatch
	}{
		{"before Suspend", func(c *continuation.Continuation) {
			runtime.Goexit()
		}},
		{"after Suspend", func(c *continuation.Continuation) {
			c.Suspend()
			runtime.Goexit()
		}},
		{"after Suspend and Resume", func(c *continuation.Continuation) {
			c.Suspend()
			c.Resume()
			runtime.Goexit()
		}},
		{"after Suspend and Complete", func(c *continuation.Continuation) {
			c.Suspend()
			c.Complete()
			runtime.Goexit()
		}},
		{"in a redispatch, after Suspend", func(c *continuation.Continuation) {
			c.Suspend()
			if c.IsInitial() {
				c.Resume()
				return
			}
			runtime.Goexit()
		}},
		{"in OnDispatch", func(c *continuation.Continuation) {
			if c.IsInitial() {
				c.AddListener(continuation.ListenerFuncs{Dispatch: func(*continuation.Continuation) { runtime.Goexit() }})
				c.Suspend()
				c.Resume()
			}
		}},
		{"in OnTimeout", func(c *continuation.Continuation) {
			if c.IsInitial() {
				c.SetTimeout(time.Second)
				c.AddListener(continuation.ListenerFuncs{Timeout: func(*continuation.Continuation) { runtime.Goexit() }})
				c.Suspend()
			}
		}},
		{"in OnComplete", func(c *continuation.Continuation) {
			c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { runtime.Goexit() }})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				reg := prometheus.NewPedanticRegistry()
				var completions atomic.Int32
				cs := make(chan *continuation.Continuation, 3)
				d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					c := continuation.FromRequest(r)
					if r.URL.Path == "/poll" {
						require.NoError(t, c.Suspend())
						cs <- c
						return
					}
					if c.IsInitial() {
						c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { completions.Add(1) }})
						cs <- c
					}
					tt.handler(c)
				}), continuation.WithWorkers(1), continuation.WithMaxSuspended(3), continuation.WithMetrics(reg))
				for range 3 {
					call := get(d, "/")
					c := <-cs
					call.Wait()
					assert.True(t, call.Aborted(), "ServeHTTP returned normally")
					select {
					case <-c.Done():
					default:
						t.Fatal("Done not closed")
					}
					assert.ErrorIs(t, c.Resume(), continuation.ErrCompleted)
				}
				assert.Equal(t, int32(3), completions.Load(), "OnComplete calls")
				assert.Zero(t, d.Suspended())
				assert.Zero(t, gaugeValue(t, reg, "cometkit_continuations_suspended"))

				// The worker and the three suspensions are free.
				var polls []*continuation.Continuation
				for range 3 {
					get(d, "/poll")
					polls = append(polls, <-cs)
				}
				synctest.Wait()
				assert.Equal(t, 3, d.Suspended())
				for _, c := range polls {
					require.NoError(t, c.Complete())
				}
			})
		})
	}
}

// Suspend from a goroutine that races the handler's return, 20,000 times
// under the race detector. The Suspend either fails (ErrNotDispatched, or
// ErrCompleted once the request finished) and the request is answered by
// its one dispatch, or it succeeds as if the handler had suspended, and the
// request waits for that goroutine to resume it (one redispatch) or
// complete it (none). Never a second dispatch without a successful
// Suspend, never a count left behind.
func TestSuspendFromAnotherGoroutine(t *testing.T) {
	const tries, concurrency = 20000, 16
	reg := prometheus.NewPedanticRegistry()
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsInitial() {
			c.AddListener(r.Context().Value(completionCounter{}).(continuation.Listener))
			io.WriteString(w, "A")
			r.Context().Value(handOver{}).(chan *continuation.Continuation) <- c
			for range rand.IntN(3) { // return sooner or later than the Suspend below
				runtime.Gosched()
			}
			return
		}
		io.WriteString(w, "B")
	}), continuation.WithMetrics(reg), continuation.WithMaxSuspended(concurrency))

	var won, lost atomic.Int32
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for range tries / concurrency {
				var completions atomic.Int32
				cs := make(chan *continuation.Continuation, 1)
				ctx := context.WithValue(context.Background(), handOver{}, cs)
				ctx = context.WithValue(ctx, completionCounter{},
					continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { completions.Add(1) }})
				call := continuationtest.Start(d, httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil))
				c := <-cs
				want := "A"
				switch err := c.Suspend(); {
				case err == nil:
					won.Add(1)
					if rand.IntN(2) == 0 {
						want = "AB"
						assert.NoError(t, c.Resume())
					} else {
						assert.NoError(t, c.Complete())
					}
				case errors.Is(err, continuation.ErrNotDispatched), errors.Is(err, continuation.ErrCompleted):
					lost.Add(1)
				default:
					t.Errorf("Suspend from another goroutine: %v", err)
				}
				assert.Equal(t, want, call.Wait().Body.String())
				<-c.Done()
				assert.Equal(t, int32(1), completions.Load(), "OnComplete calls")
			}
		})
	}
	wg.Wait()
	t.Logf("foreign Suspend won %d times, lost %d", won.Load(), lost.Load())
	assert.Equal(t, int32(tries), won.Load()+lost.Load())
	assert.Zero(t, d.Suspended())
	assert.Zero(t, gaugeValue(t, reg, "cometkit_continuations_suspended"))
}

// Context keys for the hammer's handler: where to hand the continuation
// over, and the listener that counts OnComplete calls.
type (
	handOver          struct{}
	completionCounter struct{}
)
