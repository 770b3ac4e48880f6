// Package middleware mounts cometkit's continuations in a chi router:
//
//	mw := middleware.New(continuation.WithMetrics(reg))
//	r := chi.NewRouter()
//	r.Use(mw.Handler) // or r.Use(middleware.Continuations())
//	r.Use(middleware.RequestMetrics(reg)) // after: once per request, when it ends
//	r.Get("/rooms/{room}/poll", poll) // poll may Suspend; chi.URLParam works in every dispatch
//	r.Handle("/metrics", middleware.MetricsHandler(reg))
//
//	srv := &http.Server{Addr: ":8080", Handler: r}
//	srv.RegisterOnShutdown(mw.Drain) // expire suspended requests, so they answer
//	// ... on SIGTERM:
//	srv.Shutdown(ctx)  // the requests net/http still serves
//	mw.Shutdown(ctx)   // and those waiting detached from it (continuation.ListenAndServe)
//
// One [Middleware] is one [continuation.Dispatcher]: one pool of workers and
// one set of limits for every handler it wraps, whether it is used once
// with r.Use or on many routes with r.With. Every dispatch of a request
// (the first, and each after Resume or expiry) runs the handlers after the
// middleware again, with chi's route context as it was when the request
// reached the middleware.
//
// [Middleware.Drain] begins the shutdown and returns at once, which is what
// [http.Server.RegisterOnShutdown] wants: new requests get 503 with
// Retry-After and every suspended request is expired, so that its handler
// answers now rather than at its timeout, and [http.Server.Shutdown] waits
// for the answers. [Middleware.Shutdown] is Drain plus that wait, for use
// without an http.Server.
//
// # chi's own middleware
//
// Middleware before Continuations runs once per request, around all its
// dispatches and the waits between them; middleware after it runs once per
// dispatch. For chi's middleware package (each order is tested):
//
//	RequestID  before: one ID per request (after: a new ID per dispatch)
//	RealIP     either
//	Logger     before: one line per request with its final status
//	           (after: a line per dispatch, the suspended ones as 200)
//	Recoverer  before; the Dispatcher recovers panics in dispatches itself
//	           and answers 500. After, Recoverer would swallow a panic that
//	           follows Suspend, and the request would wait with a 500
//	           already written.
//	Timeout    either: after, it bounds each dispatch; before, its deadline
//	           expires the wait and the handler answers (not chi's 504)
//	Compress   before: one compressed stream across all dispatches
//	Throttle   neither. Before, it holds its token while a request waits,
//	           so it caps waiting clients; after, it answers 429 to a
//	           redispatch that finds it full, dropping an event already
//	           delivered. Bound dispatches with continuation.WithWorkers
//	           and WithQueueSize (a redispatch waits, never refused) and
//	           waiting clients with WithMaxSuspended.
//
// [Check] reports, at start-up, middleware after Continuations that
// swallows panics, as Recoverer does.
//
// # Metrics
//
// [RequestMetrics] labels requests by chi's route pattern, never the raw
// path, and by method and status code from closed sets, so that no client
// can make the registry grow.
//
// # Options
//
// New and Continuations pass their options to [continuation.NewDispatcher],
// which panics on a value that cannot be meant (a negative size, a pool of
// no workers), naming the option; leaving an option out gives its default.
// RequestMetrics and MetricsHandler panic on a nil registry.
package middleware
