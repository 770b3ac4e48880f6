package continuation_test

// Admission, overload, shutdown and metrics.

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

// blockingHandler holds its dispatch until release is closed, so tests can
// fill the pool.
func blockingHandler(entered chan<- struct{}, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	})
}

// A new request that finds the pool and its queue full gets 503 with
// Retry-After; once the pool frees up the Dispatcher serves again.
func TestPoolAndQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		entered := make(chan struct{}, 10)
		release := make(chan struct{})
		d := continuation.NewDispatcher(blockingHandler(entered, release),
			continuation.WithWorkers(1), continuation.WithQueueSize(1),
			continuation.WithMetrics(reg), continuation.WithLogger(discardLogger()))
		running := get(d, "/")
		<-entered
		queued := get(d, "/")
		synctest.Wait()
		assert.Equal(t, 1.0, gaugeValue(t, reg, "cometkit_dispatch_queue_length"))
		refused := get(d, "/").Wait()
		assert.Equal(t, http.StatusServiceUnavailable, refused.Code)
		assert.Equal(t, "1", refused.Header().Get("Retry-After"))
		assert.Equal(t, "text/plain; charset=utf-8", refused.Header().Get("Content-Type"))
		assert.Equal(t, "server overloaded\n", refused.Body.String())
		assert.Equal(t, 1.0, gaugeValue(t, reg, "cometkit_requests_rejected_total"))

		close(release)
		assert.Equal(t, "ok", running.Wait().Body.String())
		<-entered
		assert.Equal(t, "ok", queued.Wait().Body.String())
		assert.Equal(t, 0.0, gaugeValue(t, reg, "cometkit_dispatch_queue_length"))
		go func() { <-entered }()
		assert.Equal(t, http.StatusOK, get(d, "/").Wait().Code, "recovered after the overload")
	})
}

// A queued new request whose client goes away leaves the queue and takes
// no slot.
func TestQueuedClientGoesAway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered := make(chan struct{}, 10)
		release := make(chan struct{})
		var calls atomic.Int32
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			blockingHandler(entered, release).ServeHTTP(w, r)
		}), continuation.WithWorkers(1), continuation.WithQueueSize(1))
		running := get(d, "/")
		<-entered
		gone := get(d, "/")
		synctest.Wait()
		gone.Disconnect()
		gone.Wait()
		// The queue has room again.
		queued := get(d, "/")
		synctest.Wait()
		close(release)
		running.Wait()
		<-entered
		queued.Wait()
		assert.Equal(t, int32(2), calls.Load(), "the abandoned request was never dispatched")
	})
}

// A redispatch is never refused, even with no queue at all: the requests
// were admitted, and their wakers are owed a dispatch. A new request that
// arrives meanwhile is refused, because new requests do count.
func TestRedispatchIsNeverRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 50
		cs := make(chan *continuation.Continuation, n)
		d := continuation.NewDispatcher(suspendEach(t, cs, func(w http.ResponseWriter, c *continuation.Continuation) {
			time.Sleep(time.Millisecond) // keep the single worker busy
			io.WriteString(w, "RESUMED")
		}), continuation.WithWorkers(1), continuation.WithQueueSize(0), continuation.WithLogger(discardLogger()))
		var calls []*continuationtest.Call
		var all []*continuation.Continuation
		for range n {
			calls = append(calls, get(d, "/"))
			all = append(all, <-cs) // admitted one at a time: there is no queue
			synctest.Wait()
		}
		for _, c := range all {
			require.NoError(t, c.Resume())
		}
		synctest.Wait() // one redispatch runs, the rest wait for the worker
		assert.Equal(t, http.StatusServiceUnavailable, get(d, "/").Wait().Code)
		for _, cl := range calls {
			assert.Equal(t, "RESUMED", cl.Wait().Body.String())
		}
	})
}

// After a broadcast resumes 20,000 requests at once, the re-polls that
// follow are not refused with the default pool and queue: redispatches do
// not count against the queue, and new requests go first when both wait.
func TestBroadcastThenRepollNotRefused(t *testing.T) {
	const n = 20000
	cs := make(chan *continuation.Continuation, n)
	var refused atomic.Int32
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if c.IsInitial() && r.URL.Query().Get("repoll") == "" {
			require.NoError(t, c.Suspend())
			cs <- c
			return
		}
		io.WriteString(w, "ok")
	}), continuation.WithLogger(discardLogger()))
	done := make(chan struct{}, n)
	all := make([]*continuation.Continuation, 0, n)
	for range n { // the clients arrive one by one and wait
		go func() {
			if get(d, "/").Wait().Code != http.StatusOK {
				refused.Add(1)
			}
			// The client re-polls as soon as it has its message.
			if get(d, "/?repoll=1").Wait().Code != http.StatusOK {
				refused.Add(1)
			}
			done <- struct{}{}
		}()
		all = append(all, <-cs)
	}
	for _, c := range all { // the broadcast
		require.NoError(t, c.Resume())
	}
	for range n {
		<-done
	}
	assert.Zero(t, refused.Load(), "requests refused with 503")
}

// WithMaxSuspended: Suspend beyond it returns ErrOverloaded; the slot frees
// when a suspension ends.
func TestMaxSuspended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cs := make(chan *continuation.Continuation, 3)
		errs := make(chan error, 3)
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if !c.IsInitial() {
				return
			}
			err := c.Suspend()
			errs <- err
			if err != nil {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "too many waiting clients", http.StatusServiceUnavailable)
				return
			}
			cs <- c
		}), continuation.WithMaxSuspended(2))
		a, b := get(d, "/"), get(d, "/")
		require.NoError(t, <-errs)
		require.NoError(t, <-errs)
		over := get(d, "/")
		assert.ErrorIs(t, <-errs, continuation.ErrOverloaded)
		assert.Equal(t, http.StatusServiceUnavailable, over.Wait().Code)
		assert.Equal(t, 2, d.Suspended())
		require.NoError(t, (<-cs).Resume())
		a.Wait()
		_ = b
		get(d, "/")
		require.NoError(t, <-errs, "a slot freed when a suspension ended")
		require.NoError(t, d.Shutdown(t.Context()))
	})
}

// Shutdown: every suspended request is expired and answered, Suspend fails
// with ErrShutdown, new requests get 503, and Shutdown returns once all
// requests have finished.
func TestShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var timeouts atomic.Int32
		suspendErr := make(chan error, 3)
		cs := make(chan *continuation.Continuation, 3)
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				c.AddListener(continuation.ListenerFuncs{Timeout: func(*continuation.Continuation) { timeouts.Add(1) }})
				require.NoError(t, c.Suspend())
				cs <- c
				return
			}
			if c.IsExpired() {
				suspendErr <- c.Suspend() // a handler that tries to wait on
				io.WriteString(w, "bye")
			}
		}), continuation.WithDefaultTimeout(0), continuation.WithLogger(discardLogger()))
		var calls []*continuationtest.Call
		for range 3 {
			calls = append(calls, get(d, "/"))
			<-cs
		}
		synctest.Wait()
		start := time.Now()
		require.NoError(t, d.Shutdown(t.Context()))
		assert.Zero(t, time.Since(start), "Shutdown waited for nothing but the answers")
		for _, cl := range calls {
			assert.Equal(t, "bye", cl.Wait().Body.String())
		}
		assert.Equal(t, int32(3), timeouts.Load())
		for range 3 {
			assert.ErrorIs(t, <-suspendErr, continuation.ErrShutdown)
		}
		late := get(d, "/").Wait()
		assert.Equal(t, http.StatusServiceUnavailable, late.Code)
		assert.Equal(t, "1", late.Header().Get("Retry-After"))
		assert.NoError(t, d.Shutdown(t.Context()), "a second Shutdown returns at once")
	})
}

// Shutdown returns the context's error when requests outlast it, and
// succeeds once they finish.
func TestShutdownDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered := make(chan struct{}, 1)
		release := make(chan struct{})
		d := continuation.NewDispatcher(blockingHandler(entered, release))
		cl := get(d, "/")
		<-entered
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		assert.ErrorIs(t, d.Shutdown(ctx), context.DeadlineExceeded)
		close(release)
		cl.Wait()
		assert.NoError(t, d.Shutdown(t.Context()))
	})
}

// The contract's metric names, on the caller's registry only; two
// Dispatchers share one registry.
func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		s := &suspendServlet{}
		d1 := continuation.NewDispatcher(s, continuation.WithMetrics(reg))
		d2 := continuation.NewDispatcher(s, continuation.WithMetrics(reg))
		get(d1, "/?suspend=10").Wait()            // initial + expired
		get(d2, "/?suspend=100&resume=10").Wait() // initial + resumed
		get(d2, "/").Wait()                       // initial
		cl := get(d1, "/?suspend=0")              // stays suspended
		synctest.Wait()
		assert.Equal(t, 1.0, gaugeValue(t, reg, "cometkit_continuations_suspended"))
		problems, err := testutil.GatherAndLint(reg)
		require.NoError(t, err)
		assert.Empty(t, problems)
		assert.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cometkit_dispatches_total Dispatches of the handler, by cause.
# TYPE cometkit_dispatches_total counter
cometkit_dispatches_total{kind="expired"} 1
cometkit_dispatches_total{kind="initial"} 4
cometkit_dispatches_total{kind="resumed"} 1
`), "cometkit_dispatches_total"))
		require.NoError(t, d1.Shutdown(t.Context()))
		cl.Wait()
		assert.Equal(t, 0.0, gaugeValue(t, reg, "cometkit_continuations_suspended"))
		assert.Equal(t, uint64(3), histogramCount(t, reg, "cometkit_suspend_duration_seconds"))

		// Nothing lands on the global registry.
		families, err := prometheus.DefaultGatherer.Gather()
		require.NoError(t, err)
		for _, f := range families {
			assert.False(t, strings.HasPrefix(f.GetName(), "cometkit_"), f.GetName())
		}
	})
}

func gaugeValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	return metricValue(t, reg, name, "", "")
}

// metricValue sums the gauges and counters of metric name: all of them,
// or those whose label is value.
func metricValue(t *testing.T, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range f.GetMetric() {
			matches := label == ""
			for _, l := range m.GetLabel() {
				matches = matches || l.GetName() == label && l.GetValue() == value
			}
			if matches {
				sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		return sum
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func histogramCount(t *testing.T, reg prometheus.Gatherer, name string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// A flood of ten times what the Dispatcher can hold: it holds at most its
// workers, queue and suspended cap at once, refuses the rest at once with
// 503 (so memory stays bounded), and serves normally afterwards.
func TestFloodIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers, queue, maxSuspended = 4, 16, 100
		const capacity = maxSuspended + queue + workers
		var inHandler, peak atomic.Int32
		release := make(chan struct{})
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if !c.IsInitial() {
				io.WriteString(w, "ok")
				return
			}
			if err := c.Suspend(); err != nil {
				// Full: this dispatch holds its worker until released, so
				// the queue fills up behind it.
				n := inHandler.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				<-release
				inHandler.Add(-1)
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			go func() { <-release; c.Resume() }()
		}), continuation.WithWorkers(workers), continuation.WithQueueSize(queue),
			continuation.WithMaxSuspended(maxSuspended), continuation.WithLogger(discardLogger()))

		var calls []*continuationtest.Call
		for range 10 * capacity {
			calls = append(calls, get(d, "/"))
		}
		synctest.Wait()
		assert.Equal(t, maxSuspended, d.Suspended())
		assert.LessOrEqual(t, int(peak.Load()), workers, "dispatches at once")
		refused := 0
		for _, cl := range calls {
			if finished(cl) {
				assert.Equal(t, http.StatusServiceUnavailable, cl.Recorder.Code)
				assert.Equal(t, "1", cl.Recorder.Header().Get("Retry-After"))
				refused++
			}
		}
		// Everything beyond what it holds was refused at once: at most
		// maxSuspended waiting, workers running and queue queued.
		assert.GreaterOrEqual(t, refused, 10*capacity-capacity)
		close(release)
		for _, cl := range calls {
			cl.Wait()
		}
		assert.Zero(t, d.Suspended())
		assert.Equal(t, "ok", get(d, "/").Wait().Body.String(), "served normally afterwards")
	})
}

// Drain starts the shutdown and returns at once, as RegisterOnShutdown
// wants: the parked request is expired and answers without anyone waiting
// on Shutdown, and a new request gets 503.
func TestDrainDoesNotWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parked := make(chan struct{}, 1)
		d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				require.NoError(t, c.Suspend())
				parked <- struct{}{}
				return
			}
			io.WriteString(w, "expired by the drain")
		}), continuation.WithDefaultTimeout(0))
		cl := get(d, "/")
		<-parked
		synctest.Wait()
		d.Drain()
		assert.False(t, finished(cl), "Drain returned before the request answered")
		assert.Equal(t, "expired by the drain", cl.Wait().Body.String())
		assert.Equal(t, http.StatusServiceUnavailable, get(d, "/").Wait().Code)
		d.Drain() // again: nothing happens
		assert.NoError(t, d.Shutdown(t.Context()))
	})
}

// Handlers served through one Dispatcher's Handler share its pool and its
// limits: with one worker, a request on the second handler waits for the
// first's dispatch; with WithMaxSuspended(1), a suspension on one refuses
// a suspension on the other.
func TestHandlersShareOnePool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered := make(chan struct{}, 2)
		release := make(chan struct{})
		d := continuation.NewDispatcher(http.NotFoundHandler(),
			continuation.WithWorkers(1), continuation.WithMaxSuspended(1), continuation.WithDefaultTimeout(0))
		blocking := d.Handler(blockingHandler(entered, release))
		suspendErr := make(chan error, 2)
		suspending := d.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				err := c.Suspend()
				suspendErr <- err
				if err != nil {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
				return
			}
			io.WriteString(w, "drained")
		}))

		first := get(blocking, "/")
		<-entered
		second := get(suspending, "/")
		synctest.Wait()
		assert.False(t, finished(second))
		assert.Len(t, suspendErr, 0, "the second handler waits for the one worker")
		close(release)
		first.Wait()
		require.NoError(t, <-suspendErr)

		third := get(suspending, "/")
		assert.ErrorIs(t, <-suspendErr, continuation.ErrOverloaded, "one cap for both handlers' requests")
		assert.Equal(t, http.StatusServiceUnavailable, third.Wait().Code)
		assert.Equal(t, 1, d.Suspended())

		require.NoError(t, d.Shutdown(t.Context()))
		assert.Equal(t, "drained", second.Wait().Body.String(), "Shutdown reaches requests of every handler")
	})
}

func TestNilHandlerPanics(t *testing.T) {
	assert.PanicsWithValue(t, "continuation: NewDispatcher(nil): a Dispatcher needs a handler", func() { continuation.NewDispatcher(nil) })
	d := continuation.NewDispatcher(http.NotFoundHandler())
	assert.PanicsWithValue(t, "continuation: Dispatcher.Handler(nil): a Dispatcher needs a handler", func() { d.Handler(nil) })
}

// Every option rejects, in NewDispatcher, the values that cannot be meant,
// naming itself; zero is accepted only where it means "none".
func TestOptionsRejectWhatCannotBeMeant(t *testing.T) {
	for _, tt := range []struct {
		opt  continuation.Option
		want string
	}{
		{continuation.WithWorkers(0), "continuation: WithWorkers(0): a pool needs at least one worker"},
		{continuation.WithWorkers(-1), "continuation: WithWorkers(-1): a pool needs at least one worker"},
		{continuation.WithQueueSize(-1), "continuation: WithQueueSize(-1): a queue cannot be shorter than empty"},
		{continuation.WithDefaultTimeout(-time.Second), "continuation: WithDefaultTimeout(-1s): a timeout cannot be negative; 0 means never expire"},
		{continuation.WithMaxSuspended(0), "continuation: WithMaxSuspended(0): a cap must allow at least one suspended request; for no cap, leave the option out"},
		{continuation.WithMaxSuspended(-5), "continuation: WithMaxSuspended(-5): a cap must allow at least one suspended request; for no cap, leave the option out"},
		{continuation.WithBodyBuffer(-1), "continuation: WithBodyBuffer(-1): a buffer cannot be negative; 0 means read nothing ahead"},
		{continuation.WithBodyTimeout(0), "continuation: WithBodyTimeout(0s): a body needs a deadline; for slow uploads pass a long one"},
		{continuation.WithBodyTimeout(-time.Minute), "continuation: WithBodyTimeout(-1m0s): a body needs a deadline; for slow uploads pass a long one"},
		{continuation.WithMetrics(nil), "continuation: WithMetrics(nil): pass a prometheus.Registerer, or leave the option out to register nothing"},
		{continuation.WithLogger(nil), "continuation: WithLogger(nil): pass a logger; slog.New(slog.DiscardHandler) discards"},
	} {
		assert.PanicsWithValue(t, tt.want, func() { continuation.NewDispatcher(http.NotFoundHandler(), tt.opt) })
	}
	assert.NotPanics(t, func() {
		continuation.NewDispatcher(http.NotFoundHandler(), continuation.WithQueueSize(0),
			continuation.WithDefaultTimeout(0), continuation.WithBodyBuffer(0), continuation.WithWorkers(1),
			continuation.WithMaxSuspended(1), continuation.WithBodyTimeout(time.Nanosecond))
	}, "zero where it means none, and the least values that can be meant")
}
