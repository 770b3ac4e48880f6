package continuation_test

// Every row of the life-cycle table in doc.go, the misuse matrix
// (scenario 39) and the timing rules (scenarios 36–38).

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
)

// Scenario 36: the timeout clock starts when the suspending dispatch
// returns, not at Suspend.
func TestTimerStartsAtReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		d := continuation.NewDispatcher(timeoutThenSleep(&hist))
		start := time.Now()
		cl := get(d, "/")
		assert.Equal(t, "TIMEOUT", cl.Wait().Body.String())
		assert.Equal(t, 400*time.Millisecond, time.Since(start))
		assert.Equal(t, []string{"returned", "onTimeout", "onComplete"}, hist.get())
	})
}

func timeoutThenSleep(hist *history) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if !c.IsInitial() {
			io.WriteString(w, "TIMEOUT")
			return
		}
		c.SetTimeout(100 * time.Millisecond)
		c.AddListener(recordingListener(hist))
		if err := c.Suspend(); err != nil {
			panic(err)
		}
		time.Sleep(300 * time.Millisecond)
		hist.add("returned")
	})
}

// Scenario 37: Complete before return takes effect at return; writes made
// in between are part of the response.
func TestCompleteBeforeReturnIsDeferred(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		var calls atomic.Int32
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			c := continuation.FromRequest(r)
			c.AddListener(recordingListener(&hist))
			require.NoError(t, c.Suspend())
			io.WriteString(w, "A")
			require.NoError(t, c.Complete())
			assert.True(t, c.IsSuspended(), "IsSuspended after Complete before return")
			assert.False(t, c.IsResumed(), "IsResumed after Complete")
			time.Sleep(300 * time.Millisecond)
			io.WriteString(w, "B")
			hist.add("returned")
		}))
		cl := get(d, "/")
		time.Sleep(299 * time.Millisecond)
		assert.False(t, finished(cl), "answered before the handler returned")
		assert.Equal(t, "AB", cl.Wait().Body.String())
		assert.Equal(t, []string{"returned", "onComplete"}, hist.get())
		assert.Equal(t, int32(1), calls.Load())
	})
}

// Scenario 38: Resume before return is deferred; the redispatch never runs
// alongside the dispatch that suspended.
func TestResumeBeforeReturnIsDeferred(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		var running atomic.Int32
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			assert.Equal(t, int32(1), running.Add(1), "two dispatches at once")
			defer running.Add(-1)
			c := continuation.FromRequest(r)
			if !c.IsInitial() {
				hist.add("!initial")
				io.WriteString(w, "RESUMED")
				return
			}
			require.NoError(t, c.Suspend())
			require.NoError(t, c.Resume())
			assert.True(t, c.IsSuspended())
			assert.True(t, c.IsResumed())
			assert.True(t, c.IsInitial(), "IsInitial stays true until the first dispatch returns")
			time.Sleep(300 * time.Millisecond)
			hist.add("returned")
		}))
		start := time.Now()
		cl := get(d, "/")
		assert.Equal(t, "RESUMED", cl.Wait().Body.String())
		assert.Equal(t, 300*time.Millisecond, time.Since(start))
		assert.Equal(t, []string{"returned", "!initial"}, hist.get())
	})
}

// misuse runs handler h in one request and returns the body it wrote.
func misuse(t *testing.T, h func(w http.ResponseWriter, c *continuation.Continuation)) string {
	t.Helper()
	var body string
	synctest.Test(t, func(t *testing.T) {
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h(w, continuation.FromRequest(r))
		}))
		rec := get(d, "/").Wait()
		assert.Equal(t, http.StatusOK, rec.Code)
		body = rec.Body.String()
	})
	return body
}

func errName(err error) string {
	for _, e := range []error{continuation.ErrAlreadySuspended, continuation.ErrNotDispatched,
		continuation.ErrNotSuspended, continuation.ErrCompleted, continuation.ErrOverloaded, continuation.ErrShutdown} {
		if errors.Is(err, e) {
			return strings.TrimPrefix(e.Error(), "continuation: ")
		}
	}
	if err == nil {
		return "ok"
	}
	return "unexpected " + err.Error()
}

// Scenario 39, the misuse matrix: every illegal call is an error, never a
// panic, and the request is answered as the legal calls say.
func TestMisuse(t *testing.T) {
	t.Run("a resume without suspend", func(t *testing.T) {
		body := misuse(t, func(w http.ResponseWriter, c *continuation.Continuation) {
			io.WriteString(w, "resume:"+errName(c.Resume()))
		})
		assert.Equal(t, "resume:not suspended", body)
	})
	t.Run("b complete without suspend", func(t *testing.T) {
		body := misuse(t, func(w http.ResponseWriter, c *continuation.Continuation) {
			io.WriteString(w, "complete:"+errName(c.Complete()))
		})
		assert.Equal(t, "complete:not suspended", body)
	})
	t.Run("c suspend twice", func(t *testing.T) {
		body := misuse(t, func(w http.ResponseWriter, c *continuation.Continuation) {
			if !c.IsInitial() {
				io.WriteString(w, " RESUMED")
				return
			}
			require.NoError(t, c.Suspend())
			io.WriteString(w, "suspend:"+errName(c.Suspend()))
			time.AfterFunc(time.Millisecond, func() { assert.NoError(t, c.Resume()) })
		})
		assert.Equal(t, "suspend:already suspended in this dispatch RESUMED", body)
	})
	// e–g: once a Resume or Complete has ended the suspension, a second
	// call in the same dispatch is an error and changes nothing: the first
	// decides whether the request is redispatched.
	resume, complete := (*continuation.Continuation).Resume, (*continuation.Continuation).Complete
	for _, tc := range []struct {
		name             string
		first, second    func(*continuation.Continuation) error
		secondName, want string
	}{
		{"e complete then resume", complete, resume, "resume", "resume:not suspended"},
		{"f resume then complete", resume, complete, "complete", "complete:not suspended REDISPATCHED"},
		{"g resume twice before return", resume, resume, "resume", "resume:not suspended REDISPATCHED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := misuse(t, func(w http.ResponseWriter, c *continuation.Continuation) {
				if !c.IsInitial() {
					io.WriteString(w, " REDISPATCHED")
					return
				}
				require.NoError(t, c.Suspend())
				require.NoError(t, tc.first(c))
				io.WriteString(w, tc.secondName+":"+errName(tc.second(c)))
			})
			assert.Equal(t, tc.want, body)
		})
	}
	t.Run("h resume twice after return", func(t *testing.T) {
		var second error
		body := misuse(t, func(w http.ResponseWriter, c *continuation.Continuation) {
			if !c.IsInitial() {
				io.WriteString(w, "RESUMED")
				return
			}
			require.NoError(t, c.Suspend())
			time.AfterFunc(time.Millisecond, func() {
				assert.NoError(t, c.Resume())
				second = c.Resume()
			})
		})
		assert.Equal(t, "RESUMED", body) // exactly one redispatch
		assert.ErrorIs(t, second, continuation.ErrNotSuspended)
	})
	t.Run("i resume and complete in a redispatch", func(t *testing.T) {
		body := misuse(t, func(w http.ResponseWriter, c *continuation.Continuation) {
			if c.IsInitial() {
				require.NoError(t, c.Suspend())
				require.NoError(t, c.Resume())
				return
			}
			io.WriteString(w, "resume:"+errName(c.Resume())+" complete:"+errName(c.Complete()))
		})
		assert.Equal(t, "resume:not suspended complete:not suspended", body)
	})
	t.Run("j calls after the request finished", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cs := make(chan *continuation.Continuation, 1)
			d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				cs <- continuation.FromRequest(r)
				io.WriteString(w, "done")
			}))
			get(d, "/").Wait()
			c := <-cs
			<-c.Done()
			assert.ErrorIs(t, c.Resume(), continuation.ErrCompleted)
			assert.ErrorIs(t, c.Complete(), continuation.ErrCompleted)
			assert.ErrorIs(t, c.Suspend(), continuation.ErrCompleted)
			// The next request gets its own continuation and a normal answer.
			assert.Equal(t, "done", get(d, "/").Wait().Body.String())
			assert.NotSame(t, c, <-cs)
		})
	})
	t.Run("k suspend from another goroutine while suspended", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cs := make(chan *continuation.Continuation, 1)
			d := continuation.NewDispatcher(suspendEach(t, cs, nil))
			cl := get(d, "/")
			c := <-cs
			synctest.Wait()
			assert.ErrorIs(t, c.Suspend(), continuation.ErrNotDispatched)
			require.NoError(t, c.Resume())
			cl.Wait()
		})
	})
	t.Run("suspend after the handler returned, from a listener", func(t *testing.T) {
		var fromListener error
		misuse(t, func(w http.ResponseWriter, c *continuation.Continuation) {
			if !c.IsInitial() {
				return
			}
			c.SetTimeout(time.Millisecond)
			c.AddListener(continuation.ListenerFuncs{Timeout: func(c *continuation.Continuation) {
				fromListener = c.Suspend()
			}})
			require.NoError(t, c.Suspend())
		})
		assert.ErrorIs(t, fromListener, continuation.ErrNotDispatched)
	})
}

// A Handle acts only on its own suspension: an event source that kept it
// across a timeout cannot wake the next suspension.
func TestStaleHandleCannotResumeLaterSuspension(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		handles := make(chan continuation.Handle, 2)
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() || c.IsExpired() {
				c.SetTimeout(100 * time.Millisecond)
				require.NoError(t, c.Suspend())
				handles <- c.Handle()
				return
			}
			io.WriteString(w, "RESUMED")
		}))
		cl := get(d, "/")
		first := <-handles
		second := <-handles // the first suspension expired; the second waits
		synctest.Wait()
		assert.ErrorIs(t, first.Resume(), continuation.ErrNotSuspended, "stale handle")
		assert.ErrorIs(t, first.Complete(), continuation.ErrNotSuspended, "stale handle")
		assert.True(t, second.Continuation().IsSuspended(), "the later suspension is untouched")
		assert.Same(t, first.Continuation(), second.Continuation())
		require.NoError(t, second.Resume())
		assert.Equal(t, "RESUMED", cl.Wait().Body.String())
		assert.ErrorIs(t, second.Resume(), continuation.ErrCompleted)
	})
}

// IsSuspended, IsResumed and IsExpired through the phases of a request.
func TestFlagsByPhase(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type flags struct{ initial, suspended, resumed, expired bool }
		read := func(c *continuation.Continuation) flags {
			return flags{c.IsInitial(), c.IsSuspended(), c.IsResumed(), c.IsExpired()}
		}
		seen := map[string]flags{}
		cs := make(chan *continuation.Continuation, 1)
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			switch {
			case c.IsInitial():
				seen["initial, before Suspend"] = read(c)
				require.NoError(t, c.Suspend())
				seen["initial, after Suspend"] = read(c)
				c.SetTimeout(10 * time.Millisecond)
				cs <- c
			case c.IsResumed():
				seen["redispatch by Resume"] = read(c)
				require.NoError(t, c.Suspend())
				seen["redispatch, after Suspend"] = read(c)
			case c.IsExpired():
				seen["redispatch by expiry"] = read(c)
			}
		}))
		cl := get(d, "/")
		c := <-cs
		synctest.Wait()
		seen["waiting"] = read(c)
		require.NoError(t, c.Resume())
		cl.Wait()
		assert.Equal(t, map[string]flags{
			"initial, before Suspend":   {true, false, false, false},
			"initial, after Suspend":    {true, true, false, false},
			"waiting":                   {false, true, false, false},
			"redispatch by Resume":      {false, false, true, false},
			"redispatch, after Suspend": {false, true, false, false},
			"redispatch by expiry":      {false, false, false, true},
		}, seen)
	})
}

// A timeout of 0 never expires; the request waits until resumed.
func TestZeroTimeoutNeverExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cs := make(chan *continuation.Continuation, 1)
		d := continuation.NewDispatcher(suspendEach(t, cs, func(w http.ResponseWriter, c *continuation.Continuation) {
			assert.False(t, c.IsExpired())
		}), continuation.WithDefaultTimeout(0))
		start := time.Now()
		cl := get(d, "/")
		c := <-cs
		time.Sleep(24 * time.Hour)
		assert.False(t, finished(cl))
		require.NoError(t, c.Resume())
		cl.Wait()
		assert.Equal(t, 24*time.Hour, time.Since(start))
	})
}

// The default timeout is 30 s, as in Jetty.
func TestDefaultTimeoutIs30s(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				require.NoError(t, c.Suspend())
			}
		}))
		start := time.Now()
		cl := get(d, "/")
		cl.Wait()
		assert.Equal(t, 30*time.Second, time.Since(start))
	})
}

// Several suspend cycles on one request, each writing and flushing, as a
// stream does; the client sees each chunk as it is flushed.
func TestStreamingCycles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cs := make(chan *continuation.Continuation, 1)
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if !c.IsInitial() {
				n, _ := c.Attribute("n").(int)
				io.WriteString(w, strings.Repeat("x", n+1)+"\n")
				require.NoError(t, http.NewResponseController(w).Flush())
				if n == 2 {
					return
				}
				c.SetAttribute("n", n+1)
			}
			require.NoError(t, c.Suspend())
			cs <- c
		}))
		cl := get(d, "/")
		for want := range []string{"", "x\n", "x\nxx\n"} {
			c := <-cs
			synctest.Wait()
			assert.Equal(t, []string{"", "x\n", "x\nxx\n"}[want], cl.Recorder.Body.String())
			assert.True(t, cl.Recorder.Flushed || want == 0)
			require.NoError(t, c.Resume())
		}
		assert.Equal(t, "x\nxx\nxxx\n", cl.Wait().Body.String())
	})
}

// A DispatchListener hears of every redispatch before the handler runs,
// and of no initial dispatch.
func TestDispatchListener(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			n, _ := c.Attribute("n").(int)
			hist.add("dispatch")
			if c.IsInitial() {
				c.AddListener(continuation.ListenerFuncs{Dispatch: func(*continuation.Continuation) { hist.add("onDispatch") }})
			}
			if n < 2 {
				c.SetAttribute("n", n+1)
				require.NoError(t, c.Suspend())
				require.NoError(t, c.Resume())
			}
		}))
		get(d, "/").Wait()
		assert.Equal(t, []string{"dispatch", "onDispatch", "dispatch", "onDispatch", "dispatch"}, hist.get())
	})
}

// LoadOrStoreValue stores once, whoever calls first, under keys no string
// attribute can reach.
func TestLoadOrStoreValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type key struct{}
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			assert.Nil(t, c.Value(key{}))
			stored := make(chan any, 8)
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					v, _ := c.LoadOrStoreValue(key{}, i)
					stored <- v
				})
			}
			wg.Wait()
			close(stored)
			first := c.Value(key{})
			for v := range stored {
				assert.Equal(t, first, v, "every caller sees the one value stored")
			}
			v, loaded := c.LoadOrStoreValue(key{}, "other")
			assert.True(t, loaded)
			assert.Equal(t, first, v)
			c.SetAttribute("k", "attribute")
			assert.Equal(t, first, c.Value(key{}), "a string attribute is another key")
		}))
		get(d, "/").Wait()
	})
}

// A handler served without a Dispatcher gets a nil *Continuation from
// FromRequest; every method called on it panics with a message that names
// the method and says what is missing, not with a nil dereference. The
// methods are found by reflection, so a method added later is covered.
func TestNilContinuationExplains(t *testing.T) {
	c := continuation.FromRequest(httptest.NewRequest(http.MethodGet, "/", nil))
	require.Nil(t, c)
	for _, v := range []any{c, continuation.Handle{}} {
		rv := reflect.ValueOf(v)
		for i := range rv.NumMethod() {
			m := rv.Type().Method(i)
			if m.Name == "Continuation" { // a Handle's accessor: nil is its answer
				continue
			}
			args := make([]reflect.Value, m.Type.NumIn()-1)
			for j := range args {
				args[j] = reflect.Zero(m.Type.In(j + 1))
			}
			t.Run(rv.Type().String()+"."+m.Name, func(t *testing.T) {
				defer func() {
					msg, _ := recover().(string)
					assert.Contains(t, msg, m.Name+" called on a nil *Continuation")
					assert.Contains(t, msg, "not served through a Dispatcher")
					assert.Contains(t, msg, "continuation.NewDispatcher, Dispatcher.Handler or middleware.Continuations")
				}()
				rv.Method(i).Call(args)
			})
		}
	}
}
