package continuation

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// A Dispatcher serves requests through a handler whose dispatches run on a
// bounded pool and which may suspend a request between dispatches. Create
// one with NewDispatcher; it is an http.Handler.
//
// Each request's body read, dispatches, listeners and waits run on the
// goroutine net/http gave the request, and the pool only bounds how many
// dispatches run at once. A request that detaches (see the package doc)
// has no goroutine while it waits; the pool starts one for each of its
// later steps when it grants it a slot. The Dispatcher's one goroutine of
// its own is the poller that watches detached connections, started by the
// first request that detaches and stopped once the Dispatcher has drained;
// so there is nothing to stop but requests, and Drain stops them.
type Dispatcher struct {
	h       http.Handler
	cfg     config
	pool    *pool
	metrics *metrics
	logger  *slog.Logger

	suspended   atomic.Int64 // suspensions in force, for WithMaxSuspended
	active      atomic.Int64 // requests admitted and not yet finished
	detachedNow atomic.Int64 // requests detached from net/http and not yet finished

	pollMu   sync.Mutex
	poll     *poller   // of the detached requests; started by the first
	pollDone bool      // stopped: the Dispatcher has drained
	pollFail time.Time // when the poller last failed to start; zero once it runs

	closing   atomic.Bool
	draining  context.Context // done when Drain begins; waits and body reads watch it
	stopAll   context.CancelFunc
	drained   chan struct{} // closed when closing and no request is active
	drainOnce sync.Once

	lastRefusalLog atomic.Int64 // unix nanos; refusals are logged at most once a second
}

// NewDispatcher returns a Dispatcher that serves every request through h.
// Inside h, FromRequest gives the request's Continuation. It panics if h is
// nil or an option's argument cannot be meant (see [Option]).
func NewDispatcher(h http.Handler, opts ...Option) *Dispatcher {
	check.That(h != nil, "NewDispatcher", h, "a Dispatcher needs a handler")
	cfg := newConfig(opts)
	d := &Dispatcher{
		h:       h,
		cfg:     cfg,
		logger:  cfg.logger,
		drained: make(chan struct{}),
	}
	d.draining, d.stopAll = context.WithCancel(context.Background())
	d.metrics = newMetrics(cfg.registerer)
	d.pool = newPool(cfg.workers, cfg.queueSize, d.metrics.queueLength)
	return d
}

type dispatchKind uint8

const (
	kindInitial dispatchKind = iota
	kindResumed
	kindExpired
	dispatchKinds
)

func (k dispatchKind) String() string {
	return [...]string{"initial", "resumed", "expired"}[k]
}

// ServeHTTP reads the request's body ahead (see [WithBodyBuffer]), admits
// the request (or answers 503 with Retry-After when the pool and its queue
// of new requests are full, or during Drain) and runs its dispatches until
// it finishes.
func (d *Dispatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.serveWith(d.h, w, r) }

// Handler returns an http.Handler that serves requests through h the way
// the Dispatcher serves them through its own handler: on the Dispatcher's
// one pool, under its limits (WithWorkers, WithQueueSize,
// WithMaxSuspended, the body's), and stopped by its Drain. Every dispatch
// of a request runs h. Use it to put many handlers (routes, servlets)
// behind one set of limits.
func (d *Dispatcher) Handler(h http.Handler) http.Handler {
	check.That(h != nil, "Dispatcher.Handler", h, "a Dispatcher needs a handler")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { d.serveWith(h, w, r) })
}

func (d *Dispatcher) serveWith(h http.Handler, w http.ResponseWriter, r *http.Request) {
	// Count the request before looking at closing; Drain sets closing
	// before it counts requests. So either this request sees closing, or
	// Drain sees this request.
	d.active.Add(1)
	handedOff, holding := false, false
	defer func() {
		if holding {
			d.releaseSlot()
		}
		// Once the request has detached, it is no longer this goroutine's:
		// whoever finishes it accounts for it.
		if !handedOff {
			d.requestDone()
		}
	}()
	if d.closing.Load() {
		d.refuse(w, r, "server shutting down")
		return
	}
	c := newContinuation(d, h, w, r)
	if !d.readBody(c, w, r) {
		return
	}
	defer func() {
		if !handedOff {
			c.dropUnreadBody()
		}
	}()
	switch d.pool.acquireNew(&c.slot, &c.sig, r.Context(), d.draining.Done()) {
	case queueFull:
		d.refuse(w, c.req, "server overloaded")
		return
	case abandoned:
		if d.closing.Load() {
			d.refuse(w, c.req, "server shutting down")
		}
		return // otherwise the client is gone: nobody to answer
	}
	holding = true
	handedOff = d.serve(c, outNone, &holding)
}

// releaseSlot gives up a pool slot, starting the step of the detached
// request it goes to, if it goes to one.
func (d *Dispatcher) releaseSlot() {
	if next := d.pool.release(); next != nil {
		go d.runDetached(next)
	}
}

// runDetached runs the steps of detached requests on one goroutine, which
// holds a pool slot: c's, then, as long as the pool hands the slot to
// another detached request when a step ends, that one's. A burst of wake-
// ups (a broadcast) runs on a few goroutines whose stacks have grown
// already, not on a new goroutine for each.
func (d *Dispatcher) runDetached(c *Continuation) {
	for c != nil {
		c = d.stepDetached(c)
	}
}

// stepDetached goes on with a detached request whose wait has ended, and
// returns the detached request the slot goes to next, if any.
func (d *Dispatcher) stepDetached(c *Continuation) (next *Continuation) {
	holding, handedOff, returned := true, false, false
	defer func() {
		if !handedOff {
			d.requestDone()
		}
		if holding {
			next = d.pool.release()
			if next != nil && !returned { // runtime.Goexit: this goroutine is going
				go d.runDetached(next)
				next = nil
			}
		}
	}()
	handedOff = d.serve(c, c.woken(), &holding)
	returned = true
	return nil
}

// serve runs the request from where it stands, holding a pool slot: from
// its first dispatch (out is outNone), or from the end of a wait that
// ended with out. It runs dispatches, and the waits between them that
// stay attached, until the request finishes; it returns handedOff true
// when the request has detached to wait instead: this goroutine is then
// done with it, and the pool hands it to another when the wait ends. The
// slot is the caller's to give back unless *holding says it was given back
// already (serve does, before an attached request waits or finishes).
func (d *Dispatcher) serve(c *Continuation, out outcome, holding *bool) (handedOff bool) {
	cut := true // unless run returns: runtime.Goexit cuts the connection, as with net/http
	defer func() {
		if handedOff {
			return
		}
		// Every way out comes through here, runtime.Goexit in a handler or
		// a listener included: end the request (and a suspension its last
		// dispatch left behind), and a detached request's hold on its
		// connection.
		c.finish()
		if c.dc != nil {
			d.endDetached(c, cut)
		}
	}()
	handedOff, cut = d.run(c, out, holding)
	return handedOff
}

// run is serve's loop. It reports whether the request detached, or else
// whether its response was cut short by a panic.
func (d *Dispatcher) run(c *Continuation, out outcome, holding *bool) (handedOff, cut bool) {
	kind := kindInitial
	if out != outNone {
		var ok bool
		if kind, ok = c.afterWait(out); !ok {
			return false, false
		}
	}
	for {
		c.beginDispatch(kind != kindInitial)
		d.metrics.dispatches[kind].Inc()
		if p, stack, ok := d.runHandler(c); !ok {
			cut = d.recovered(c, p, stack)
			if cut && c.dc == nil {
				d.releaseSlot()
				*holding = false
				c.finish()
				panic(http.ErrAbortHandler) // net/http drops the connection quietly
			}
			return false, cut // a detached connection is closed by endDetached
		}
		why := d.prepareWait(c)
		next, timeout := c.returned()
		switch {
		case next == stepRedispatch: // resumed before the handler returned
			kind = kindResumed
			continue // same goroutine, same slot, at once
		case next == stepLeave:
			return true, false
		case next == stepFinish && c.dc != nil:
			return false, false // the slot stays, for finishing the response
		}
		d.releaseSlot()
		*holding = false
		if next == stepFinish {
			return false, false
		}
		if why != detachedOK {
			d.metrics.attachedWaits[why].Inc()
		}
		var ok bool
		if kind, ok = c.afterWait(c.park(timeout)); !ok {
			return false, false
		}
		d.pool.acquireAgain(&c.slot, &c.sig)
		*holding = true
	}
}

// afterWait says what follows a wait that ended with out: the kind of the
// next dispatch, or false when the request ends instead (Complete, the
// client gone, or an OnTimeout listener's Complete).
func (c *Continuation) afterWait(out outcome) (dispatchKind, bool) {
	switch out {
	case outExpired:
		if c.expire() {
			return 0, false
		}
		return kindExpired, true
	case outResumed:
		return kindResumed, true
	}
	return 0, false
}

// runHandler runs one dispatch, turning a panic into a value.
func (d *Dispatcher) runHandler(c *Continuation) (p any, stack []byte, ok bool) {
	defer func() {
		if !ok {
			p = recover()
			if p != http.ErrAbortHandler {
				stack = debug.Stack()
			}
		}
	}()
	c.h.ServeHTTP(&c.rw, c.req)
	return nil, nil, true
}

// recovered answers a request whose dispatch panicked, and reports whether
// the connection must be aborted instead: as net/http does for
// http.ErrAbortHandler, and for a response already partly written (the
// client would otherwise take a truncated response for a whole one).
func (d *Dispatcher) recovered(c *Continuation, p any, stack []byte) (abort bool) {
	completed := c.panicked()
	if p == http.ErrAbortHandler {
		return true
	}
	d.logger.Error("continuation: panic serving request",
		"method", c.req.Method, "path", c.req.URL.Path, "panic", fmt.Sprint(p), "stack", string(stack))
	switch {
	case !c.rw.written:
		http.Error(c.rw.w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return false
	case completed: // Complete was called: what was written is the response
		return false
	default:
		return true
	}
}

// callListener runs one listener callback, containing its panic.
func (d *Dispatcher) callListener(c *Continuation, f func(*Continuation), name string) {
	defer func() {
		if p := recover(); p != nil {
			d.logger.Error("continuation: panic in listener", "callback", name,
				"path", c.req.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	f(c)
}

// refuse answers a new request 503 with Retry-After. If some of r's body
// may still be on an HTTP/1.x connection, the connection closes after the
// answer, so that it does not wait for the body (see closeAfter).
func (d *Dispatcher) refuse(w http.ResponseWriter, r *http.Request, reason string) {
	if hasBody(r) {
		if b, ok := r.Body.(*requestBody); !ok || b.rest != nil {
			closeAfter(w, r)
		}
	}
	d.metrics.rejected.Inc()
	now := time.Now().UnixNano()
	if last := d.lastRefusalLog.Load(); now-last > int64(time.Second) && d.lastRefusalLog.CompareAndSwap(last, now) {
		d.logger.Warn("continuation: refusing new requests", "reason", reason)
	}
	w.Header().Set("Retry-After", "1")
	http.Error(w, reason, http.StatusServiceUnavailable)
}

func (d *Dispatcher) reserveSuspension() error {
	if d.closing.Load() {
		return ErrShutdown
	}
	n := d.suspended.Add(1)
	if limit := d.cfg.maxSuspended; limit > 0 && n > int64(limit) {
		d.suspended.Add(-1)
		return ErrOverloaded
	}
	d.metrics.suspended.Inc()
	return nil
}

func (d *Dispatcher) releaseSuspension(held time.Duration) {
	d.suspended.Add(-1)
	d.metrics.suspended.Dec()
	d.metrics.suspendDuration.Observe(held.Seconds())
}

func (d *Dispatcher) requestDone() {
	if d.active.Add(-1) == 0 && d.closing.Load() {
		d.drainOnce.Do(d.drainedNow)
	}
}

// drainedNow marks the Dispatcher drained: nothing is left to watch, so
// the poller goes, and Shutdown returns.
func (d *Dispatcher) drainedNow() {
	d.stopPoller()
	close(d.drained)
}

// Suspended returns the number of requests suspended now.
func (d *Dispatcher) Suspended() int { return int(d.suspended.Load()) }

// Detached returns the number of requests detached from net/http now:
// waiting with no goroutine, or dispatched on one the pool started (see
// the package doc, "Detaching").
func (d *Dispatcher) Detached() int { return int(d.detachedNow.Load()) }

// Drain begins a graceful shutdown and returns at once, without waiting
// for it: new requests get 503 with Retry-After, requests still reading
// their body get 503 and their connection closed, Suspend fails with
// ErrShutdown, and every suspended request, attached or detached, is
// expired (its OnTimeout listeners run and it is dispatched with IsExpired
// true) so that its handler answers now. Shutdown waits for the requests
// to finish. Drain may be called more than once, and from several
// goroutines.
//
// [http.Server.Shutdown] waits for active requests without waking them, so
// a parked long-poll would hold it until its timeout; and it does not
// know detached requests at all. Drain is what
// [http.Server.RegisterOnShutdown] wants, a function that starts the
// shutdown and does not wait for it; Shutdown then waits for what the
// server's does not:
//
//	srv.RegisterOnShutdown(d.Drain)
//	err := srv.Shutdown(ctx) // returns once the attached requests have answered
//	if err != nil {
//		srv.Close()
//	}
//	err = errors.Join(err, d.Shutdown(ctx)) // and the detached ones
func (d *Dispatcher) Drain() {
	if d.closing.CompareAndSwap(false, true) {
		d.stopAll()       // attached requests watch this
		d.drainDetached() // detached ones wait nowhere
	}
	if d.active.Load() == 0 {
		d.drainOnce.Do(d.drainedNow)
	}
}

// Shutdown is Drain, then a wait until every request has finished: it
// returns nil then, or ctx's error if ctx ends first. It may be called
// more than once, and from several goroutines.
func (d *Dispatcher) Shutdown(ctx context.Context) error {
	d.Drain()
	select {
	case <-d.drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
