// Package middleware mounts cometkit's continuations in a chi router:
//
//	mw := middleware.New(continuation.WithMetrics(reg))
//	r := chi.NewRouter()
//	r.Use(mw.Handler) // or r.Use(middleware.Continuations())
//	r.Get("/rooms/{room}/poll", poll) // poll may Suspend; chi.URLParam works in every dispatch
//	srv.RegisterOnShutdown(func() { mw.Shutdown(context.Background()) })
//
// Every dispatch of a request (the first, and each after Resume or expiry)
// runs the handlers after the middleware again, with chi's route context as
// it was when the request reached the middleware.
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
// Check reports the orders above that break suspended requests (Recoverer
// after Continuations, Throttle on either side) at start-up.
package middleware
