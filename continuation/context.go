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
// The own cancellation is made lazily, by the first Done (or by detaching):
// a request whose context nobody waits on costs nothing more.
type requestContext struct {
	context.Context // net/http's: values, deadline and, until the request detaches, cancellation
	c               *Continuation
	own             atomic.Pointer[ownCancel] // made under c.mu
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
	return ctx.Context.Value(key)
}

func (ctx *requestContext) Done() <-chan struct{} {
	if o := ctx.own.Load(); o != nil {
		return o.Done()
	}
	c := ctx.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return ctx.ownLocked(true).Done()
}

func (ctx *requestContext) Err() error {
	if o := ctx.own.Load(); o != nil {
		return o.Err()
	}
	return ctx.Context.Err()
}

// ownLocked returns the own cancellation, making it if need be; follow
// says whether a new one passes on net/http's cancellation (while the
// request is attached). Called with c.mu held.
func (ctx *requestContext) ownLocked(follow bool) *ownCancel {
	if o := ctx.own.Load(); o != nil {
		return o
	}
	inner, cancel := context.WithCancel(context.WithoutCancel(ctx.Context))
	o := &ownCancel{Context: inner, cancel: cancel}
	if follow {
		o.unfollow = context.AfterFunc(ctx.Context, cancel)
	}
	ctx.own.Store(o)
	return o
}

// detach stops following net/http's cancellation, which from now on means
// only that net/http is done with the request, and reports whether the
// client had gone away before that. Called with c.mu held.
func (ctx *requestContext) detach() (alive bool) {
	o := ctx.ownLocked(false)
	if o.unfollow != nil {
		alive = o.unfollow()
		o.unfollow = nil
	} else {
		alive = ctx.Context.Err() == nil
	}
	return alive && o.Err() == nil
}

// cancel cancels the context: the detached client hung up, or the request
// has ended. An attached request's context that nobody waited on is left
// to net/http, which cancels it when ServeHTTP returns. Called with c.mu
// held.
func (ctx *requestContext) cancel() {
	if o := ctx.own.Load(); o != nil {
		if o.unfollow != nil {
			o.unfollow() // cancelled here, not on a goroutine of the AfterFunc
		}
		o.cancel()
	}
}
