package middleware

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/cometkit/cometkit/continuation"
)

// Continuations returns chi middleware that serves every request of the
// router through a continuation.Dispatcher built with opts, so every
// handler behind it may suspend:
//
//	r := chi.NewRouter()
//	r.Use(middleware.Continuations())
//
// To shut the Dispatcher down (every parked request answered before the
// server stops), keep the Middleware instead: use New(opts...).Handler and
// call its Shutdown.
func Continuations(opts ...continuation.Option) func(http.Handler) http.Handler {
	return New(opts...).Handler
}

// A Middleware builds a continuation.Dispatcher around every handler it
// wraps and can shut them all down.
type Middleware struct {
	opts []continuation.Option

	mu          sync.Mutex
	dispatchers []*continuation.Dispatcher
}

// New returns a Middleware whose Dispatchers take opts. Pass a
// continuation.WithMetrics registry here to watch them.
func New(opts ...continuation.Option) *Middleware {
	return &Middleware{opts: opts}
}

// Handler wraps next in a Dispatcher; it is the middleware, for r.Use. A
// redispatch runs next again with the request as it was when it reached
// this middleware: chi's route context is put back as it was then, because
// chi fills it in while routing (URL parameters, route patterns, the path
// left for a mounted sub-router), so chi.URLParam and RoutePattern answer
// the same in every dispatch.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	d := continuation.NewDispatcher(restoreRoute(next), m.opts...)
	m.mu.Lock()
	m.dispatchers = append(m.dispatchers, d)
	m.mu.Unlock()
	return d
}

// Shutdown shuts down every Dispatcher the middleware built: new requests
// get 503, parked requests are expired so their handlers answer, and
// Shutdown returns when all have finished or ctx ends. Wire it before the
// server's own Shutdown:
//
//	srv.RegisterOnShutdown(func() { mw.Shutdown(context.Background()) })
func (m *Middleware) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	ds := append([]*continuation.Dispatcher(nil), m.dispatchers...)
	m.mu.Unlock()
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Go(func() { errs[i] = d.Shutdown(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// routeAttr keeps the chi route context as it was at the first dispatch.
const routeAttr = "github.com/cometkit/cometkit/middleware.route"

// restoreRoute puts chi's route context back, at each redispatch, to what
// it was when the request first reached the middleware. chi only appends
// to the context's slices while routing, so a copy of the struct made then
// keeps its view of them.
func restoreRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rctx := chi.RouteContext(r.Context()); rctx != nil {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				c.SetAttribute(routeAttr, *rctx)
			} else if saved, ok := c.Attribute(routeAttr).(chi.Context); ok {
				*rctx = saved
			}
		}
		next.ServeHTTP(w, r)
	})
}
