package continuation

import (
	"context"
	"sync/atomic"
)

type contextKey struct{}

// requestContext is the context of the request that every dispatch sees:
// net/http's request context with the Continuation attached. It lives
// inside the Continuation, so attaching it allocates nothing.
//
// Its cancellation is its own, because a detached request outlives
// net/http's context: net/http cancels that when ServeHTTP returns, also
// after the connection was taken over. While the request is attached, it
// follows net/http's context (the client went away); once detached, it is
// cancelled when the poller sees the client hang up; either way, no later
// than the request's end. Code that holds r.Context() across suspensions,
// or derives contexts from it in one dispatch and uses them in the next,
// sees the same thing in both modes.
//
// The own cancellation is made lazily, by the first Done (or, once
// detached, the first Value or Err that needs it): a request whose context
// nobody waits on costs nothing more, attached or detached.
type requestContext struct {
	context.Context // net/http's: values, deadline and, until the request detaches, cancellation
	c               *Continuation
	own             atomic.Pointer[ownCancel] // made under c.mu
	detached        atomic.Bool               // set under c.mu
	err             error                     // once detached and with no own: why it ended; under c.mu
}

// ownCancel is a requestContext's own cancellation: a context with the
// parent's values and none of its cancellation, which a derived context
// finds through Value (as the standard library looks for its cancelCtx)
// and registers with directly, without a goroutine.
type ownCancel struct {
	context.Context
	cancel context.CancelFunc
	// unfollow stops passing on the parent's cancellation; nil once the
	// request has detached.
	unfollow func() bool
}

func (ctx *requestContext) Value(key any) any {
	if key == (contextKey{}) {
		return ctx.c
	}
	if o := ctx.own.Load(); o != nil {
		return o.Value(key)
	}
	if ctx.detached.Load() {
		// net/http's cancelled context must not be found as this one's
		// (context.Cause looks for it by Value).
		return ctx.made().Value(key)
	}
	return ctx.Context.Value(key)
}

func (ctx *requestContext) Done() <-chan struct{} {
	if o := ctx.own.Load(); o != nil {
		return o.Done()
	}
	return ctx.made().Done()
}

func (ctx *requestContext) Err() error {
	if o := ctx.own.Load(); o != nil {
		return o.Err()
	}
	if ctx.detached.Load() {
		ctx.c.mu.Lock()
		defer ctx.c.mu.Unlock()
		return ctx.err
	}
	return ctx.Context.Err()
}

// made returns the own cancellation, made now if need be.
func (ctx *requestContext) made() *ownCancel {
	ctx.c.mu.Lock()
	defer ctx.c.mu.Unlock()
	return ctx.ownLocked()
}

// ownLocked returns the own cancellation, making it if need be: one that
// follows net/http's cancellation while the request is attached, and one
// cancelled already if the detached request has ended. Called with c.mu
// held.
func (ctx *requestContext) ownLocked() *ownCancel {
	if o := ctx.own.Load(); o != nil {
		return o
	}
	inner, cancel := context.WithCancel(context.WithoutCancel(ctx.Context))
	o := &ownCancel{Context: inner, cancel: cancel}
	switch {
	case !ctx.detached.Load():
		o.unfollow = context.AfterFunc(ctx.Context, cancel)
	case ctx.err != nil:
		cancel()
	}
	ctx.own.Store(o)
	return o
}

// detach stops following net/http's cancellation, which from now on means
// only that net/http is done with the request, and reports whether the
// client had gone away before that. Called with c.mu held.
func (ctx *requestContext) detach() (alive bool) {
	ctx.detached.Store(true)
	o := ctx.own.Load()
	if o == nil {
		return ctx.Context.Err() == nil
	}
	alive = o.unfollow()
	o.unfollow = nil
	return alive
}

// cancel cancels the context: the detached client hung up, or the request
// has ended. An attached request's context that nobody waited on is left
// to net/http, which cancels it when ServeHTTP returns. Called with c.mu
// held.
func (ctx *requestContext) cancel() {
	o := ctx.own.Load()
	switch {
	case o != nil:
		if o.unfollow != nil {
			o.unfollow() // cancelled here, not on a goroutine of the AfterFunc
		}
		o.cancel()
	case ctx.detached.Load() && ctx.err == nil:
		ctx.err = context.Canceled
	}
}
