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
	d    *Dispatcher
	h    http.Handler  // what every dispatch runs
	req  *http.Request // what every dispatch sees; its context is &c.ctx
	ctx  requestContext
	rw   responseWriter
	slot waiter // the request's place in the pool's queues; the pool's

	mu          sync.Mutex
	phase       phase
	decision    decision // how the current suspension ends, once decided
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

type contextKey struct{}

// requestContext is the request's context with the Continuation attached.
// It lives inside the Continuation, so attaching it allocates nothing.
type requestContext struct {
	context.Context
	c *Continuation
}

func (ctx *requestContext) Value(key any) any {
	if key == (contextKey{}) {
		return ctx.c
	}
	return ctx.Context.Value(key)
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
	c := &Continuation{d: d, h: h, initial: true, timeout: d.cfg.defaultTimeout}
	c.ctx = requestContext{Context: r.Context(), c: c}
	c.req = r.WithContext(&c.ctx)
	c.rw.w = w
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

// ResponseWriter returns the writer every dispatch receives, for code that
// answers the request outside a dispatch: an OnTimeout listener, or the
// goroutine that completes a suspended request (write, then Complete).
// Like any http.ResponseWriter it must not be used concurrently, so use it
// only while the request is suspended and before ending the suspension, or
// from a listener (while OnTimeout listeners run, the response is theirs).
func (c *Continuation) ResponseWriter() http.ResponseWriter {
	c.mustBeServed("ResponseWriter")
	return &c.rw
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
// decision when it gets there; a parked goroutine is woken now.
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
		c.phase = between
		c.endSuspensionLocked()
		c.sig.ch <- struct{}{}
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

// The methods below are the request goroutine's side of the state machine,
// called by Dispatcher.serve.

// A wakeup carries one wake-up at a time to a request's goroutine. Its
// channel is made on first use, by that goroutine, before it lets anyone
// else see it; a request that never waits never makes one.
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
	for _, l := range ls {
		if dl, ok := l.(DispatchListener); ok {
			c.d.callListener(c, dl.OnDispatch, "OnDispatch")
		}
	}
}

// step is what the request goroutine does next.
type step uint8

const (
	stepFinish step = iota
	stepPark
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
	c.sig.channel() // before anyone can see the suspended phase and signal
	c.phase = suspended
	c.deadline = time.Time{}
	if c.timeout > 0 {
		c.deadline = time.Now().Add(c.timeout)
	}
	return stepPark, c.timeout
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
	outResumed outcome = iota
	outCompleted
	outExpired
	outGone
)

// park blocks the request goroutine until the suspension ends, and says
// how. It holds no worker; the only cost is this goroutine, blocked on
// c.sig, and, when the suspension has a timeout, one runtime timer reused
// across suspensions, which starts a goroutine only if it fires. It never
// reads the request body: a wait must hear every wake-up at once.
//
// This is the one place where a request waits; everything that ends a
// wait (Resume, Complete, the timer, the client, Drain) reaches it here.
func (c *Continuation) park(timeout time.Duration) outcome {
	if timeout > 0 {
		if c.timer == nil {
			c.timer = time.AfterFunc(timeout, c.onTimer)
		} else {
			c.timer.Reset(timeout)
		}
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
			switch {
			case c.expired:
				return outExpired
			case c.decision == completeDecided:
				return outCompleted
			}
			return outResumed
		case <-draining:
			draining = nil
			if c.tryEnd(expiring) {
				return outExpired
			}
		case <-gone:
			gone = nil
			// A deadline on the request's context (a timeout middleware
			// before the Dispatcher) means time is up, not that the client
			// left: expire, so the handler still answers.
			if errors.Is(c.ctx.Context.Err(), context.DeadlineExceeded) {
				if c.tryEnd(expiring) {
					return outExpired
				}
			} else if c.tryEnd(between) {
				return outGone
			}
		}
	}
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
	c.endLocked(expiring)
	c.sig.ch <- struct{}{}
}

// tryEnd ends the suspension from the request goroutine (drain,
// disconnect) if nothing else ended it first.
func (c *Continuation) tryEnd(next phase) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase != suspended {
		return false
	}
	c.endLocked(next)
	return true
}

// endLocked ends a waiting suspension with an expiry (next == expiring) or
// a disconnect (next == between).
func (c *Continuation) endLocked(next phase) {
	c.phase = next
	if next == expiring {
		c.expired = true
		if len(c.listeners) == 0 {
			c.phase = between // no listener to steer the expiry
		}
	}
	c.endSuspensionLocked()
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
	defer c.closeDone() // even if a listener calls runtime.Goexit
	for _, l := range ls {
		c.d.callListener(c, l.OnComplete, "OnComplete")
	}
}

func (c *Continuation) closeDone() {
	c.mu.Lock()
	c.doneClosed = true
	done := c.done
	c.mu.Unlock()
	if done != nil {
		close(done)
	}
}
