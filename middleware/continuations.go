package middleware

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/internal/argcheck"
)

// check rejects an argument that cannot be meant, naming the call.
const check = argcheck.Package("middleware")

// Continuations returns chi middleware that serves every request through
// a [continuation.Dispatcher] built with opts, so every handler behind it
// may suspend:
//
//	r := chi.NewRouter()
//	r.Use(middleware.Continuations())
//
// To shut the Dispatcher down (every suspended request answered before the
// server stops), keep the [Middleware] instead: use New(opts...).Handler
// and register its Drain.
func Continuations(opts ...continuation.Option) func(http.Handler) http.Handler {
	return New(opts...).Handler
}

// A Middleware serves every handler it wraps through one
// [continuation.Dispatcher]: one pool and one set of limits
// ([continuation.WithWorkers], [continuation.WithQueueSize],
// [continuation.WithMaxSuspended]), however many routes it wraps and
// wherever in a router they are.
type Middleware struct {
	d *continuation.Dispatcher
}

// New returns a Middleware whose Dispatcher takes opts. Pass a
// [continuation.WithMetrics] registry here to watch it. New panics on an
// option the Dispatcher refuses, naming it.
func New(opts ...continuation.Option) *Middleware {
	// The Dispatcher's own handler is never used: each wrapped handler is
	// served through Dispatcher.Handler.
	return &Middleware{d: continuation.NewDispatcher(http.NotFoundHandler(), opts...)}
}

// Handler wraps next in the Middleware's Dispatcher; it is the middleware,
// for r.Use or r.With. A redispatch runs next again with chi's route
// context as it was when the request reached this middleware, because chi
// fills it in while routing (URL parameters, route patterns, the path left
// for a mounted sub-router): chi.URLParam and RoutePattern answer the same
// in every dispatch.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	check.That(next != nil, "Middleware.Handler", next, "there is no handler to wrap")
	return dispatched{m.d.Handler(restoreRoute(next))}
}

// dispatched is what Handler returns, a type of its own so that Check can
// tell the middleware that gives requests a Continuation from any other.
type dispatched struct{ http.Handler }

// Drain begins a graceful shutdown of the Dispatcher and returns at once:
// new requests get 503 with Retry-After and every suspended request is
// expired, so that its handler answers now (see
// [continuation.Dispatcher.Drain]). It is what
// [http.Server.RegisterOnShutdown] wants:
//
//	srv.RegisterOnShutdown(mw.Drain)
//	err := srv.Shutdown(ctx)                // the requests net/http still serves
//	err = errors.Join(err, mw.Shutdown(ctx)) // and those detached from it
func (m *Middleware) Drain() { m.d.Drain() }

// Shutdown is Drain, then a wait until every request has finished: it
// returns nil then, or ctx's error if ctx ends first. Call it after the
// server's Shutdown: requests that wait detached from net/http
// ([continuation.ListenAndServe]) are answered after the server's
// Shutdown has returned, since it does not know their connections.
func (m *Middleware) Shutdown(ctx context.Context) error { return m.d.Shutdown(ctx) }

// routeAttr keeps a copy of the chi route context as it was at the first
// dispatch.
const routeAttr = "github.com/cometkit/cometkit/middleware.route"

// restoreRoute gives next, in every redispatch, chi's route context as it
// was when the request first reached the middleware. The first dispatch
// keeps a clone of it; each redispatch routes on a clone of that clone, in
// a request context of its own, so that routing again neither sees what
// the earlier dispatches added nor changes the copy kept.
func restoreRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rctx := chi.RouteContext(r.Context()); rctx != nil {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				c.SetAttribute(routeAttr, rctx.Clone())
			} else if saved, ok := c.Attribute(routeAttr).(*chi.Context); ok {
				r = r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, saved.Clone()))
			}
		}
		next.ServeHTTP(w, r)
	})
}
