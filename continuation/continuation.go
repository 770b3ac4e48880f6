package continuation

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"
)

// A Continuation is one request served through a Dispatcher, for the
// request's whole life: its dispatches, the suspensions between them, its
// attributes and listeners. Its methods are safe for concurrent use, but
// Suspend is only meaningful from the dispatch that is running, and
// IsInitial, IsResumed and IsExpired describe that dispatch.
//
// A Continuation must not be used after the request has finished, except
// that its state-changing methods then return ErrCompleted and its
// attributes stay readable.
type Continuation struct {
	d       *Dispatcher
	h       http.Handler  // what every dispatch runs
	req     *http.Request // what every dispatch sees; its context is &c.ctx
	ctx     requestContext
	rw      responseWriter
	rwMu    sync.Mutex // held by outsideWriter's calls, and while the request detaches
	slot    waiter     // the request's place in the pool's queues; the pool's
	arrived int64      // when the request reached the Dispatcher, in Unix nanoseconds

	mu          sync.Mutex
	phase       phase
	decision    decision // how the current suspension ends, once decided
	ended       outcome  // how the waiting suspension ended, for whoever goes on with the request
	hungUp      bool     // the client of a detached request closed its side of the connection
	initial     bool
	resumed     bool
	expired     bool
	cycle       uint64 // count of successful Suspend calls; names a suspension
	timeout     time.Duration
	suspendedAt time.Time
	deadline    time.Time // when the waiting suspension expires; zero: never
	attrs       []attribute
	listeners   []Listener
	done        chan struct{} // made on the first call to Done
	doneClosed  bool

	// sig carries one wake-up to the request's goroutine: the end of a
	// suspension decided elsewhere (Resume, Complete, the timer), or a pool
	// slot handed over by the pool. The two never overlap: a request waiting
	// for a slot is not suspended.
	sig wakeup

	// dc is the connection of a request that has detached from net/http
	// (see detach.go), set before the request first waits detached and
	// never unset. A detached request has no goroutine while it waits: the
	// end of a suspension queues its next step on the pool, and a
	// goroutine runs it once the pool grants a slot (runDetached).
	dc *detached

	// timer calls onTimer; one per request, reused across suspensions, and
	// owned by the request's goroutine. Why a runtime timer and not a timing
	// wheel: docs/benchmarks.md, "Design choices in the engine".
	timer *time.Timer
}

type phase uint8

const (
	running    phase = iota // a dispatch is running; not suspended
	suspending              // a dispatch is running and has suspended
	suspended               // the dispatch returned; waiting, holding no worker
	expiring                // the suspension expired; OnTimeout listeners run
	between                 // no dispatch, no suspension: the next dispatch or the end is on its way
	finished                // the request is over
)

type decision uint8

const (
	undecided decision = iota
	resumeDecided
	completeDecided
)

// A Listener is told about a request's timeouts and its end. Listeners stay
// registered for the whole request, across every suspension, and are
// called in the order they were added, on the request's own goroutine,
// never while the continuation's lock is held: they may call any method of
// the Continuation. A panic in a listener is logged and the next listener
// still runs.
type Listener interface {
	// OnComplete is called once, when the request has finished: normally,
	// by Complete, after a panic, or because the client went away.
	OnComplete(c *Continuation)
	// OnTimeout is called each time a suspension expires, before the
	// expiry dispatch. It may write to the response, and it may call
	// Resume or Complete, or have another goroutine call them and wait for
	// it: while the OnTimeout listeners run, the first Resume or Complete
	// from anyone decides (Resume marks the expiry dispatch IsResumed too;
	// Complete ends the request without it), and it takes effect once
	// every listener has returned.
	OnTimeout(c *Continuation)
}

// A DispatchListener is a Listener that is also told when each redispatch
// begins, on the request's goroutine, before the handler runs. Event
// sources use it to stop delivering to a request the moment its handler
// starts reading what was delivered (package clientmgr does).
type DispatchListener interface {
	Listener
	OnDispatch(c *Continuation)
}

// ListenerFuncs adapts plain functions to a Listener; nil fields are
// skipped.
type ListenerFuncs struct {
	Complete func(c *Continuation)
	Timeout  func(c *Continuation)
	Dispatch func(c *Continuation)
}

// OnDispatch calls f.Dispatch if it is set.
func (f ListenerFuncs) OnDispatch(c *Continuation) {
	if f.Dispatch != nil {
		f.Dispatch(c)
	}
}

// OnComplete calls f.Complete if it is set.
func (f ListenerFuncs) OnComplete(c *Continuation) {
	if f.Complete != nil {
		f.Complete(c)
	}
}

// OnTimeout calls f.Timeout if it is set.
func (f ListenerFuncs) OnTimeout(c *Continuation) {
	if f.Timeout != nil {
		f.Timeout(c)
	}
}

// FromRequest returns the Continuation of a request served through a
// Dispatcher, or nil. Every method of a nil *Continuation panics with a
// message that says so.
func FromRequest(r *http.Request) *Continuation {
	return FromContext(r.Context())
}

// FromContext returns the Continuation carried by ctx (a request's
// context, or one derived from it), or nil.
func FromContext(ctx context.Context) *Continuation {
	c, _ := ctx.Value(contextKey{}).(*Continuation)
	return c
}

func newContinuation(d *Dispatcher, h http.Handler, w http.ResponseWriter, r *http.Request) *Continuation {
	c := &Continuation{d: d, h: h, initial: true, timeout: d.cfg.defaultTimeout, arrived: time.Now().UnixNano()}
	c.ctx = requestContext{Context: r.Context(), c: c}
	c.req = r.WithContext(&c.ctx)
	c.rw.w = w
	c.rw.recordHead = r.ProtoMajor == 1 && r.ProtoMinor == 1
	c.rw.isHEAD = r.Method == http.MethodHead
	return c
}

// mustBeServed explains the usual mistake behind a nil *Continuation:
// FromRequest found no Dispatcher in front of the handler.
func (c *Continuation) mustBeServed(method string) {
	if c == nil {
		panic("continuation: " + method + " called on a nil *Continuation: the request was not served through a Dispatcher " +
			"(FromRequest returns nil then); serve the handler through continuation.NewDispatcher, " +
			"Dispatcher.Handler or middleware.Continuations")
	}
}

// Request returns the request that every dispatch receives: the same
// *http.Request each time, whose context carries the Continuation.
func (c *Continuation) Request() *http.Request {
	c.mustBeServed("Request")
	return c.req
}

// ResponseWriter returns a writer of the response that every dispatch
// writes, for code that answers the request outside a dispatch: an
// OnTimeout listener, or the goroutine that completes a suspended request
// (write, then Complete). Like any http.ResponseWriter it must not be used
// concurrently with the dispatch, so use it only while the request is
// suspended and before ending the suspension, or from a listener (while
// OnTimeout listeners run, the response is theirs). It may be used as soon
// as Suspend has returned: what the Dispatcher does with the response when
// the suspending dispatch returns (detaching the request) waits for each
// call through this writer, and each such call for it. The suspension may
// end under the writer (the timer, the client leaving, Drain): once the
// next dispatch begins or the request ends, calls fail with
// ErrNotSuspended (WriteHeader does nothing), and a call under way is
// waited for first, so the writer never races the dispatch nor writes a
// finished response.
func (c *Continuation) ResponseWriter() http.ResponseWriter {
	c.mustBeServed("ResponseWriter")
	return outsideWriter{c}
}

// IsInitial reports whether the first dispatch is running. It stays true
// after Suspend until that dispatch returns, and is false in every
// redispatch.
func (c *Continuation) IsInitial() bool {
	c.mustBeServed("IsInitial")
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.initial
}

// IsSuspended reports whether the request is suspended: from a successful
// Suspend until the Resume, Complete or expiry that ends the suspension
// takes effect. Inside OnTimeout it is still true.
func (c *Continuation) IsSuspended() bool {
	c.mustBeServed("IsSuspended")
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.phase == suspending || c.phase == suspended || c.phase == expiring
}

// IsResumed reports whether Resume ended the last suspension. It becomes
// true when Resume is called and false at the next Suspend.
func (c *Continuation) IsResumed() bool {
	c.mustBeServed("IsResumed")
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resumed
}

// IsExpired reports whether the last suspension expired (or was expired by
// Dispatcher.Drain). It is already true inside OnTimeout, and false again
// after the next Suspend. Check it before IsResumed: a Resume while the
// OnTimeout listeners run makes both true.
func (c *Continuation) IsExpired() bool {
	c.mustBeServed("IsExpired")
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired
}

// SetTimeout sets the timeout of this request's suspensions, from the next
// one that starts waiting: the clock starts when the suspending dispatch
// returns. 0 means never expire (a negative d counts as 0).
func (c *Continuation) SetTimeout(d time.Duration) {
	c.mustBeServed("SetTimeout")
	c.mu.Lock()
	c.timeout = max(d, 0)
	c.mu.Unlock()
}

// Suspend marks the request suspended: when the running dispatch returns,
// the response stays open and the request waits, holding no worker, until
// Resume, Complete, expiry or client disconnect. Suspend does not block and
// the handler should return soon after it. Suspend before handing the
// continuation to whatever will resume it, so that a Resume can never come
// first.
//
// Suspend belongs to the running dispatch; call it from the handler. A
// call from another goroutine is not told apart from the handler's own: it
// succeeds if it lands before the Dispatcher has seen the dispatch return,
// and then the request waits exactly as if the handler had suspended last
// thing before returning (whoever suspended must see that it is resumed or
// completed); once the Dispatcher has seen the return, it fails with
// ErrNotDispatched. Either way the request is answered once.
//
// It fails with ErrAlreadySuspended if this dispatch already suspended,
// ErrNotDispatched outside a dispatch, ErrOverloaded beyond
// WithMaxSuspended, ErrShutdown once the Dispatcher is shutting down, and
// ErrCompleted after the request finished.
func (c *Continuation) Suspend() error {
	c.mustBeServed("Suspend")
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.phase {
	case running:
	case suspending:
		return ErrAlreadySuspended
	case finished:
		return ErrCompleted
	default:
		return ErrNotDispatched
	}
	if err := c.d.reserveSuspension(); err != nil {
		return err
	}
	c.phase = suspending
	c.decision = undecided
	c.resumed, c.expired = false, false
	c.cycle++
	c.suspendedAt = time.Now()
	return nil
}

// Resume ends the current suspension with a redispatch: the handler runs
// again on the pool with IsResumed true. It may be called from any
// goroutine, also before the suspending dispatch has returned (the
// redispatch then starts when it returns) and while OnTimeout listeners
// run (the expiry dispatch then starts when they return, with IsExpired
// and IsResumed both true). Exactly one Resume, Complete, expiry or
// disconnect ends each suspension; a Resume that loses returns
// ErrNotSuspended (or ErrCompleted) and has no effect.
//
// Resume acts on whichever suspension is current. Code that may outlive
// the suspension it was given (an event source that holds continuations
// across timeouts) should hold a Handle instead.
func (c *Continuation) Resume() error {
	c.mustBeServed("Resume")
	return c.decide(resumeDecided, 0, false)
}

// Complete ends the current suspension without a redispatch: the response
// is finished with whatever was written, and the request ends. Write the
// response before calling Complete. The rules for who may call it, and
// when, are those of Resume.
func (c *Continuation) Complete() error {
	c.mustBeServed("Complete")
	return c.decide(completeDecided, 0, false)
}

// A Handle names one suspension of a Continuation. Its Resume and Complete
// act only on that suspension: once it has ended they return
// ErrNotSuspended, even if the request has suspended again since, so a
// late event can never wake a later suspension by accident.
type Handle struct {
	c     *Continuation
	cycle uint64
}

// Handle returns a Handle for the request's most recent suspension; take it
// right after Suspend.
func (c *Continuation) Handle() Handle {
	c.mustBeServed("Handle")
	c.mu.Lock()
	defer c.mu.Unlock()
	return Handle{c: c, cycle: c.cycle}
}

// Continuation returns the continuation the handle belongs to.
func (h Handle) Continuation() *Continuation { return h.c }

// Resume is Continuation.Resume, restricted to h's suspension.
func (h Handle) Resume() error {
	h.c.mustBeServed("Handle.Resume")
	return h.c.decide(resumeDecided, h.cycle, true)
}

// Complete is Continuation.Complete, restricted to h's suspension.
func (h Handle) Complete() error {
	h.c.mustBeServed("Handle.Complete")
	return h.c.decide(completeDecided, h.cycle, true)
}

// decide records how the current suspension ends, if nothing decided it
// yet. In the phases where the request's goroutine is running (the
// suspending dispatch, the OnTimeout listeners) that goroutine acts on the
// decision when it gets there; a waiting request is woken now.
func (c *Continuation) decide(d decision, cycle uint64, checkCycle bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase == finished {
		return ErrCompleted
	}
	if checkCycle && cycle != c.cycle {
		return ErrNotSuspended
	}
	switch c.phase {
	case suspending, suspended, expiring:
	default:
		return ErrNotSuspended
	}
	if c.decision != undecided {
		return ErrNotSuspended
	}
	c.decision = d
	if d == resumeDecided {
		c.resumed = true
	}
	if c.phase == suspended {
		out := outResumed
		if d == completeDecided {
			out = outCompleted
		}
		c.endLocked(out)
		c.wakeLocked()
	}
	return nil
}

// A request carries a handful of attributes at most; a slice of them is a
// fraction of a map's size and as quick to search at that length. The key
// is a string for SetAttribute, or any comparable value for
// LoadOrStoreValue.
type attribute struct {
	key   any
	value any
}

// SetAttribute stores v under key for the rest of the request, visible to
// every later dispatch: the way to hand an event's data to the redispatch.
func (c *Continuation) SetAttribute(key string, v any) {
	c.mustBeServed("SetAttribute")
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.attrs {
		if c.attrs[i].key == key {
			c.attrs[i].value = v
			return
		}
	}
	c.attrs = append(c.attrs, attribute{key, v})
}

// Attribute returns the value stored under key, or nil.
func (c *Continuation) Attribute(key string) any {
	c.mustBeServed("Attribute")
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.attrs {
		if a.key == key {
			return a.value
		}
	}
	return nil
}

// RemoveAttribute deletes the value stored under key.
func (c *Continuation) RemoveAttribute(key string) {
	c.mustBeServed("RemoveAttribute")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attrs = slices.DeleteFunc(c.attrs, func(a attribute) bool { return a.key == key })
}

// Value returns the value stored under key by LoadOrStoreValue, or nil.
func (c *Continuation) Value(key any) any {
	c.mustBeServed("Value")
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.attrs {
		if a.key == key {
			return a.value
		}
	}
	return nil
}

// LoadOrStoreValue returns the value stored under key if there is one
// (loaded is true); otherwise it stores v and returns it. It is atomic: of
// several callers, one stores and the others load its value. Like
// context.WithValue, it is for packages that keep their own state with a
// request: use a key of an unexported type, so that no other package can
// read or overwrite it (attributes, string-keyed, are the application's).
func (c *Continuation) LoadOrStoreValue(key, v any) (actual any, loaded bool) {
	c.mustBeServed("LoadOrStoreValue")
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.attrs {
		if a.key == key {
			return a.value, true
		}
	}
	c.attrs = append(c.attrs, attribute{key, v})
	return v, false
}

// AddListener registers l for the rest of the request. It may be called at
// any time, also while the request is suspended; added after the request
// finished, l is never called. Add a listener once, not once per
// suspension: it stays registered across suspensions.
func (c *Continuation) AddListener(l Listener) {
	c.mustBeServed("AddListener")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase != finished {
		c.listeners = append(c.listeners, l)
	}
}

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// Done returns a channel that is closed once the request has finished, for
// any reason, after the OnComplete listeners have run.
func (c *Continuation) Done() <-chan struct{} {
	c.mustBeServed("Done")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.doneClosed {
		return closedChan
	}
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

// The methods below are the request's side of the state machine, called
// by Dispatcher.serve on whichever goroutine runs the request: net/http's,
// or, once the request has detached, one that the pool started.

// A wakeup carries one wake-up at a time to a request's goroutine. Its
// channel is made on first use, by that goroutine, before it lets anyone
// else see it; a request that never waits on its goroutine never makes
// one.
type wakeup struct{ ch chan struct{} }

func (w *wakeup) channel() chan struct{} {
	if w.ch == nil {
		w.ch = make(chan struct{}, 1)
	}
	return w.ch
}

// endSuspensionLocked accounts for the end of a suspension; called exactly
// once per successful Suspend, with c.mu held.
func (c *Continuation) endSuspensionLocked() {
	c.d.releaseSuspension(time.Since(c.suspendedAt))
}

// beginDispatch marks a dispatch running and, for a redispatch, tells the
// DispatchListeners first.
func (c *Continuation) beginDispatch(redispatch bool) {
	c.mu.Lock()
	c.phase = running
	ls := c.listeners
	c.mu.Unlock()
	if !redispatch {
		return
	}
	c.writeBarrier()
	for _, l := range ls {
		if dl, ok := l.(DispatchListener); ok {
			c.d.callListener(c, dl.OnDispatch, "OnDispatch")
		}
	}
}

// suspendedUndecided reports whether the dispatch that just returned
// suspended the request and nothing has decided yet how that suspension
// ends: the request is about to wait.
func (c *Continuation) suspendedUndecided() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.phase == suspending && c.decision == undecided
}

// step is what the request's goroutine does next.
type step uint8

const (
	stepFinish step = iota
	stepPark        // wait on this goroutine
	stepLeave       // the request waits detached: this goroutine is done with it
	stepRedispatch
)

// returned moves the state machine on when a dispatch has returned
// normally, and says what comes next.
func (c *Continuation) returned() (step, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.initial = false
	switch {
	case c.phase != suspending:
		c.phase = between // from here on, a Suspend from elsewhere fails
		return stepFinish, 0
	case c.decision == resumeDecided:
		c.phase = between
		c.endSuspensionLocked()
		return stepRedispatch, 0
	case c.decision == completeDecided:
		c.phase = between
		c.endSuspensionLocked()
		return stepFinish, 0
	}
	if c.dc == nil {
		c.sig.channel() // before anyone can see the suspended phase and signal
	}
	c.phase = suspended
	c.deadline = time.Time{}
	if c.timeout > 0 {
		c.deadline = time.Now().Add(c.timeout)
	}
	if c.dc == nil {
		return stepPark, c.timeout
	}
	// Detached: no goroutine waits, so what park watches is checked here.
	// Drain and the poller look only at requests already waiting, and this
	// one was not yet; the timer is armed under the lock, where the
	// goroutine that goes on with the request (and stops it) will see it.
	switch {
	case c.hungUp:
		c.endLocked(outGone)
		c.wakeLocked()
	case c.d.closing.Load():
		c.endLocked(outExpired)
		c.wakeLocked()
	case c.timeout > 0:
		c.armTimer(c.timeout)
	}
	return stepLeave, 0
}

// panicked moves the state machine on when a dispatch panicked. It reports
// whether Complete had already been called on the suspension that the
// dispatch started, in which case the response counts as finished.
func (c *Continuation) panicked() (completed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.initial = false
	if c.phase == suspending {
		completed = c.decision == completeDecided
		c.endSuspensionLocked()
	}
	c.phase = between
	return completed
}

// outcome is how a wait ended.
type outcome uint8

const (
	outNone outcome = iota // not waited: the first dispatch is next
	outResumed
	outCompleted
	outExpired
	outGone
)

// armTimer starts the expiry clock of a waiting suspension.
func (c *Continuation) armTimer(timeout time.Duration) {
	if c.timer == nil {
		c.timer = time.AfterFunc(timeout, c.onTimer)
	} else {
		c.timer.Reset(timeout)
	}
}

// park blocks the request's goroutine until the suspension ends, and says
// how. It holds no worker; the only cost is this goroutine, blocked on
// c.sig, and, when the suspension has a timeout, one runtime timer reused
// across suspensions, which starts a goroutine only if it fires. It never
// reads the request body: a wait must hear every wake-up at once.
//
// This is where an attached request waits; everything that ends a wait
// (Resume, Complete, the timer, the client, Drain) reaches it here. A
// detached request waits nowhere (see returned and wakeLocked).
func (c *Continuation) park(timeout time.Duration) outcome {
	if timeout > 0 {
		c.armTimer(timeout)
		defer c.timer.Stop()
	}
	gone := c.ctx.Context.Done()
	draining := c.d.draining.Done()
	for {
		// A case that loses its race to another ending is disabled; the
		// winner has signalled (or will signal) c.sig.
		select {
		case <-c.sig.ch:
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.ended
		case <-draining:
			draining = nil
			if c.tryEnd(outExpired) {
				return outExpired
			}
		case <-gone:
			gone = nil
			// A deadline on the request's context (a timeout middleware
			// before the Dispatcher) means time is up, not that the client
			// left: expire, so the handler still answers.
			if errors.Is(c.ctx.Context.Err(), context.DeadlineExceeded) {
				if c.tryEnd(outExpired) {
					return outExpired
				}
			} else if c.tryEnd(outGone) {
				return outGone
			}
		}
	}
}

// woken returns how a detached request's wait ended, for the goroutine
// the pool started to go on with it, and stops the expiry clock.
func (c *Continuation) woken() outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	return c.ended
}

// onTimer expires the waiting suspension when its deadline has come. The
// timer is shared by all of a request's suspensions, so a firing that is
// late for an earlier suspension can land in a later one: the deadline
// tells them apart.
func (c *Continuation) onTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase != suspended || c.deadline.IsZero() || time.Now().Before(c.deadline) {
		return
	}
	c.endLocked(outExpired)
	c.wakeLocked()
}

// tryEnd ends the suspension from the parked goroutine itself (drain,
// disconnect) if nothing else ended it first.
func (c *Continuation) tryEnd(out outcome) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase != suspended {
		return false
	}
	c.endLocked(out)
	return true
}

// drain expires a detached request that is waiting, for Dispatcher.Drain;
// an attached one watches the Dispatcher's draining itself.
func (c *Continuation) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase == suspended {
		c.endLocked(outExpired)
		c.wakeLocked()
	}
}

// hangUp is the poller's news that the client of a detached request has
// closed its side of the connection, as net/http's cancellation of the
// request's context is for an attached one: the context is cancelled, and
// a waiting suspension ends as a disconnect.
func (c *Continuation) hangUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hungUp = true
	c.ctx.cancel()
	if c.phase == suspended {
		c.endLocked(outGone)
		c.wakeLocked()
	}
}

// endLocked ends the waiting suspension with out; called with c.mu held,
// in the suspended phase.
func (c *Continuation) endLocked(out outcome) {
	c.ended = out
	c.phase = between
	if out == outExpired {
		c.expired = true
		if len(c.listeners) > 0 {
			c.phase = expiring // the OnTimeout listeners steer the expiry
		}
	}
	c.endSuspensionLocked()
}

// wakeLocked hands the end of a waiting suspension to whoever goes on with
// the request: the goroutine parked on c.sig or, for a detached request,
// a goroutine that runs it once the pool has a slot for it. Never the
// caller's: that may be anyone (an event source, the timer, the poller),
// holding anything.
func (c *Continuation) wakeLocked() {
	if c.dc == nil {
		c.sig.ch <- struct{}{}
		return
	}
	if c.d.pool.schedule(&c.slot, c) {
		go c.d.runDetached(c)
	}
}

// expire runs the OnTimeout listeners of an expired suspension and says
// whether the expiry ends in Complete instead of the expiry dispatch.
// While they run, the phase is expiring: the first Resume or Complete from
// anyone (a listener, a goroutine it waits for, an event source) decides,
// and acts only now, after the last listener has returned.
func (c *Continuation) expire() (completed bool) {
	c.mu.Lock()
	ls := c.listeners
	run := c.phase == expiring
	c.mu.Unlock()
	if run {
		for _, l := range ls {
			c.d.callListener(c, l.OnTimeout, "OnTimeout")
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.phase = between
	return c.decision == completeDecided
}

// finish ends the request: OnComplete listeners, then Done. Only the first
// call does anything. It is also the way out when a dispatch or a listener
// called runtime.Goexit: a suspension that the dispatch started and never
// returned from ends here.
func (c *Continuation) finish() {
	c.mu.Lock()
	if c.phase == finished {
		c.mu.Unlock()
		return
	}
	if c.phase == suspending {
		c.endSuspensionLocked()
	}
	c.phase = finished
	ls := c.listeners
	c.mu.Unlock()
	c.writeBarrier()
	defer c.closeDone() // even if a listener calls runtime.Goexit
	for _, l := range ls {
		c.d.callListener(c, l.OnComplete, "OnComplete")
	}
}

// closeDone closes Done and ends the request's context, as net/http ends
// it once ServeHTTP has returned.
func (c *Continuation) closeDone() {
	c.mu.Lock()
	c.doneClosed = true
	done := c.done
	c.ctx.cancel()
	c.mu.Unlock()
	if done != nil {
		close(done)
	}
}
