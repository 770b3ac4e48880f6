package continuation_test

// Scenarios ported from Jetty's own continuation tests (ContinuationsTest,
// ContinuationTest, AsyncContextTest). Their numbers label them across this
// package's tests: 1–13 the core suite, 18–26 listeners and bodies, 27–29
// panics, 36–39 timing and misuse, 40 the race with the timeout. They run
// in a synctest bubble: time is fake, so the timing rules (the clock starts
// when the suspending dispatch returns, a resumed suspension never expires)
// are checked to the millisecond and take no real time.

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
)

// suspendServlet is Jetty's SuspendServlet (ContinuationsTest), driven by
// the query: suspend, resume, complete for the first cycle, suspend2,
// resume2, complete2 for the second, sleep and read. A value > 0 acts that
// many milliseconds later on another goroutine, 0 acts inline, absent does
// not act.
type suspendServlet struct {
	hist  history
	calls atomic.Int32
	errs  atomic.Int32 // unexpected errors from the continuation
}

func (s *suspendServlet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	c := continuation.FromRequest(r)
	q := r.URL.Query()
	if c.IsInitial() {
		s.hist.add("initial")
		if n, ok := millis(q.Get("read")); ok {
			_, _ = io.CopyN(io.Discard, r.Body, int64(n/time.Millisecond))
		}
		if t, ok := millis(q.Get("suspend")); ok {
			if t > 0 {
				c.SetTimeout(t)
			}
			c.AddListener(recordingListener(&s.hist)) // once, for every cycle
			s.suspend(c)
			s.act(w, c, q.Get("complete"), q.Get("resume"))
		} else if d, ok := millis(q.Get("sleep")); ok {
			time.Sleep(d)
			io.WriteString(w, "SLEPT\n")
		} else {
			io.WriteString(w, "NORMAL\n")
		}
		return
	}
	s.hist.add("!initial")
	if t, ok := millis(q.Get("suspend2")); ok && c.Attribute("2nd") == nil {
		c.SetAttribute("2nd", "cycle")
		if t > 0 {
			c.SetTimeout(t)
		}
		s.suspend(c)
		s.act(w, c, q.Get("complete2"), q.Get("resume2"))
		return
	}
	switch {
	case c.IsExpired():
		io.WriteString(w, "TIMEOUT\n")
	case c.IsResumed():
		io.WriteString(w, "RESUMED\n")
	default:
		io.WriteString(w, "UNKNOWN\n")
	}
}

func (s *suspendServlet) suspend(c *continuation.Continuation) {
	s.hist.add("suspend")
	s.check(c.Suspend())
}

func (s *suspendServlet) act(w http.ResponseWriter, c *continuation.Continuation, complete, resume string) {
	if d, ok := millis(complete); ok {
		s.later(d, func() {
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "COMPLETED\n")
			s.check(c.Complete())
		})
	} else if d, ok := millis(resume); ok {
		s.later(d, func() {
			s.hist.add("resume")
			s.check(c.Resume())
		})
	}
}

func (s *suspendServlet) later(d time.Duration, f func()) {
	if d == 0 {
		f()
		return
	}
	time.AfterFunc(d, f)
}

func (s *suspendServlet) check(err error) {
	if err != nil {
		s.errs.Add(1)
	}
}

func millis(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * time.Millisecond, true
}

// TestJettyCoreSuite is Jetty ContinuationsTest's suite, scenarios 1–13 (14–17 exercise Jetty's
// undispatch(), whose Go equivalent is a plain return).
func TestJettyCoreSuite(t *testing.T) {
	const (
		initial = "initial"
		suspend = "suspend"
		resume  = "resume"
		again   = "!initial"
		timeout = "onTimeout"
		done    = "onComplete"
	)
	tests := []struct {
		name    string
		query   string
		body    string
		history []string
		elapsed time.Duration
	}{
		{"1 normal", "", "NORMAL", []string{initial}, 0},
		{"2 sleep", "sleep=200", "SLEPT", []string{initial}, 200 * time.Millisecond},
		{"3 suspend, timeout", "suspend=200", "TIMEOUT",
			[]string{initial, suspend, timeout, again, done}, 200 * time.Millisecond},
		{"4 suspend, resume after return", "suspend=200&resume=10", "RESUMED",
			[]string{initial, suspend, resume, again, done}, 10 * time.Millisecond},
		{"5 resume before return", "suspend=200&resume=0", "RESUMED",
			[]string{initial, suspend, resume, again, done}, 0},
		{"6 complete after return", "suspend=200&complete=50", "COMPLETED",
			[]string{initial, suspend, done}, 50 * time.Millisecond},
		{"7 complete before return", "suspend=200&complete=0", "COMPLETED",
			[]string{initial, suspend, done}, 0},
		{"8 resume, resume", "suspend=1000&resume=10&suspend2=1000&resume2=10", "RESUMED",
			[]string{initial, suspend, resume, again, suspend, resume, again, done}, 20 * time.Millisecond},
		{"9 resume, complete", "suspend=1000&resume=10&suspend2=1000&complete2=10", "COMPLETED",
			[]string{initial, suspend, resume, again, suspend, done}, 20 * time.Millisecond},
		{"10 resume, timeout", "suspend=1000&resume=10&suspend2=10", "TIMEOUT",
			[]string{initial, suspend, resume, again, suspend, timeout, again, done}, 20 * time.Millisecond},
		{"11 timeout, resume", "suspend=10&suspend2=1000&resume2=10", "RESUMED",
			[]string{initial, suspend, timeout, again, suspend, resume, again, done}, 20 * time.Millisecond},
		{"12 timeout, complete", "suspend=10&suspend2=1000&complete2=10", "COMPLETED",
			[]string{initial, suspend, timeout, again, suspend, done}, 20 * time.Millisecond},
		{"13 timeout, timeout", "suspend=10&suspend2=10", "TIMEOUT",
			[]string{initial, suspend, timeout, again, suspend, timeout, again, done}, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &suspendServlet{}
				d := continuation.NewDispatcher(s)
				start := time.Now()
				cl := get(d, "/?"+tt.query)
				rec := cl.Wait()
				assert.Equal(t, http.StatusOK, rec.Code)
				assert.Equal(t, tt.body+"\n", rec.Body.String())
				assert.Equal(t, tt.history, s.hist.get())
				assert.Equal(t, tt.elapsed, time.Since(start))
				assert.Zero(t, s.errs.Load(), "Suspend/Resume/Complete returned an error")
				assert.Zero(t, d.Suspended())
			})
		})
	}
}

// Scenario 4b: the resumer hands its result to the redispatch as an
// attribute.
func TestAttributePassedToRedispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				require.NoError(t, c.Suspend())
				time.AfterFunc(10*time.Millisecond, func() {
					c.SetAttribute("results", "R42")
					assert.NoError(t, c.Resume())
				})
				return
			}
			io.WriteString(w, c.Attribute("results").(string))
		}))
		assert.Equal(t, "R42", get(d, "/").Wait().Body.String())
	})
}

// timeoutHandler is the fixture of Jetty's listener tests: the first dispatch suspends with a
// timeout and adds l; the redispatch reports how it was woken.
func timeoutHandler(timeout time.Duration, l continuation.Listener, hist *history) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsInitial() {
			hist.add("initial")
			c.SetTimeout(timeout)
			c.AddListener(l)
			if err := c.Suspend(); err != nil {
				panic(err)
			}
			return
		}
		hist.add("!initial")
		hist.add("expired=" + strconv.FormatBool(c.IsExpired()) + " resumed=" + strconv.FormatBool(c.IsResumed()))
		if c.Attribute("TIMEOUT") != nil {
			io.WriteString(w, "TIMEOUT")
		} else {
			io.WriteString(w, "RESUMED")
		}
	})
}

// Scenarios 18 and 25: OnTimeout hands over an attribute and resumes; one
// redispatch, with IsExpired and IsResumed both true.
func TestOnTimeoutResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		l := continuation.ListenerFuncs{
			Timeout: func(c *continuation.Continuation) {
				hist.add("onTimeout")
				assert.True(t, c.IsExpired(), "IsExpired inside OnTimeout")
				assert.True(t, c.IsSuspended(), "IsSuspended inside OnTimeout")
				c.SetAttribute("TIMEOUT", true)
				assert.NoError(t, c.Resume())
				assert.ErrorIs(t, c.Resume(), continuation.ErrNotSuspended, "second Resume")
			},
			Complete: func(*continuation.Continuation) { hist.add("onComplete") },
		}
		d := continuation.NewDispatcher(timeoutHandler(time.Second, l, &hist))
		start := time.Now()
		cl := get(d, "/")
		assert.Equal(t, "TIMEOUT", cl.Wait().Body.String())
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, []string{"initial", "onTimeout", "!initial", "expired=true resumed=true", "onComplete"}, hist.get())
	})
}

// Scenario 22: a passive listener, added after the handler returned; the
// expiry redispatch has IsExpired true and IsResumed false (the javadoc,
// not Jetty 7's quirk).
func TestExpiryWithPassiveListenerAddedLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		cs := make(chan *continuation.Continuation, 1)
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				c.SetTimeout(100 * time.Millisecond)
				require.NoError(t, c.Suspend())
				cs <- c
				return
			}
			hist.add("expired=" + strconv.FormatBool(c.IsExpired()) + " resumed=" + strconv.FormatBool(c.IsResumed()))
		}))
		start := time.Now()
		cl := get(d, "/")
		c := <-cs
		synctest.Wait() // the handler has returned and the request waits
		require.True(t, c.IsSuspended())
		c.AddListener(recordingListener(&hist))
		cl.Wait()
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		assert.Equal(t, []string{"onTimeout", "expired=true resumed=false", "onComplete"}, hist.get())
	})
}

// Scenario 19: the body is read before suspending; resumed or completed,
// inline or later.
func TestBodyConsumedBeforeSuspend(t *testing.T) {
	for _, tt := range []struct{ name, query, body string }{
		{"resume inline", "suspend=10000&resume=0&read=6", "RESUMED\n"},
		{"resume later", "suspend=10000&resume=100&read=6", "RESUMED\n"},
		{"complete inline", "suspend=10000&complete=0&read=6", "COMPLETED\n"},
		{"complete later", "suspend=10000&complete=100&read=6", "COMPLETED\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &suspendServlet{}
				d := continuation.NewDispatcher(s)
				cl := do(d, http.MethodGet, "/?"+tt.query, strings.NewReader("wibble"))
				rec := cl.Wait()
				assert.Equal(t, http.StatusOK, rec.Code)
				assert.Equal(t, tt.body, rec.Body.String())
				assert.Zero(t, s.errs.Load())
			})
		})
	}
}

// Scenario 20: output written across two cycles arrives in order.
func TestOutputAccumulatesAcrossCycles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			switch {
			case c.IsInitial():
				c.SetTimeout(time.Second)
				require.NoError(t, c.Suspend())
				io.WriteString(w, "STARTASYNC\n")
				time.AfterFunc(100*time.Millisecond, func() { assert.NoError(t, c.Resume()) })
			case c.Attribute("second") == nil:
				c.SetAttribute("second", true)
				io.WriteString(w, "DISPATCHED\n")
				require.NoError(t, c.Suspend())
				io.WriteString(w, "STARTASYNC2\n")
				time.AfterFunc(200*time.Millisecond, func() { assert.NoError(t, c.Resume()) })
			default:
				io.WriteString(w, "DISPATCHED\n")
			}
		}))
		start := time.Now()
		cl := get(d, "/")
		assert.Equal(t, "STARTASYNC\nDISPATCHED\nSTARTASYNC2\nDISPATCHED\n", cl.Wait().Body.String())
		assert.Equal(t, 300*time.Millisecond, time.Since(start))
	})
}

// Scenarios 21 and 23: an actor outside the handler resumes or completes
// after the handler returned; a listener added then still fires once.
func TestExternalActorAfterReturn(t *testing.T) {
	for _, complete := range []bool{false, true} {
		t.Run("complete="+strconv.FormatBool(complete), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				cs := make(chan *continuation.Continuation, 1)
				d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					calls.Add(1)
					c := continuation.FromRequest(r)
					if c.IsInitial() {
						require.NoError(t, c.Suspend())
						cs <- c
					}
				}))
				start := time.Now()
				cl := get(d, "/")
				c := <-cs
				synctest.Wait()
				require.True(t, c.IsSuspended())
				var completions atomic.Int32
				c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { completions.Add(1) }})
				time.Sleep(10 * time.Millisecond)
				if complete {
					require.NoError(t, c.Complete())
				} else {
					require.NoError(t, c.Resume())
				}
				rec := cl.Wait()
				assert.Equal(t, http.StatusOK, rec.Code)
				assert.Empty(t, rec.Body.String())
				wantCalls := int32(2)
				if complete {
					wantCalls = 1
				}
				assert.Equal(t, wantCalls, calls.Load(), "handler dispatches")
				assert.Equal(t, int32(1), completions.Load(), "OnComplete calls")
				assert.Equal(t, 10*time.Millisecond, time.Since(start))
				<-c.Done()
				assert.ErrorIs(t, c.Resume(), continuation.ErrCompleted)
			})
		})
	}
}

// Scenario 24: OnTimeout writes the answer and completes: no redispatch.
func TestOnTimeoutCompletes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		l := continuation.ListenerFuncs{
			Timeout: func(c *continuation.Continuation) {
				hist.add("onTimeout")
				// The listener runs on the request's goroutine: writing is safe.
				io.WriteString(c.ResponseWriter(), "COMPLETED")
				assert.NoError(t, c.Complete())
			},
			Complete: func(*continuation.Continuation) { hist.add("onComplete") },
		}
		d := continuation.NewDispatcher(timeoutHandler(200*time.Millisecond, l, &hist))
		start := time.Now()
		cl := get(d, "/")
		assert.Equal(t, "COMPLETED", cl.Wait().Body.String())
		assert.Equal(t, []string{"initial", "onTimeout", "onComplete"}, hist.get())
		assert.Equal(t, 200*time.Millisecond, time.Since(start))
	})
}

// Scenario 26: a panicking OnTimeout is logged, the next listener still
// runs, and the expiry redispatch happens.
func TestOnTimeoutPanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hist history
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				c.SetTimeout(200 * time.Millisecond)
				c.AddListener(continuation.ListenerFuncs{Timeout: func(*continuation.Continuation) { panic("boom") }})
				c.AddListener(continuation.ListenerFuncs{
					Timeout:  func(*continuation.Continuation) { hist.add("onTimeout2") },
					Complete: func(*continuation.Continuation) { hist.add("onComplete") },
				})
				require.NoError(t, c.Suspend())
				return
			}
			if c.IsExpired() {
				io.WriteString(w, "TIMEOUT")
			}
		}), continuation.WithLogger(discardLogger()))
		cl := get(d, "/")
		rec := cl.Wait()
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "TIMEOUT", rec.Body.String())
		assert.Equal(t, []string{"onTimeout2", "onComplete"}, hist.get())
	})
}
