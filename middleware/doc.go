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
package middleware
