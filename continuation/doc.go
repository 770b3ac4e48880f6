// Package continuation implements Jetty-style continuations for net/http: a
// handler can suspend its request, return, and hold no worker while it
// waits; an event resumes it, and the handler runs again, on a bounded
// pool, with the event's data attached.
//
// A Dispatcher wraps a handler. Every run of the handler (a dispatch: the
// first, and each one after Resume or expiry) happens on the Dispatcher's
// bounded pool. Inside the handler, FromRequest gives the request's
// Continuation:
//
//	func chat(w http.ResponseWriter, r *http.Request) {
//		c := continuation.FromRequest(r)
//		if msg, ok := c.Attribute("msg").(string); ok {
//			io.WriteString(w, msg) // resumed by an event
//			return
//		}
//		if c.IsExpired() {
//			w.WriteHeader(http.StatusNoContent) // nothing happened in time
//			return
//		}
//		c.SetTimeout(25 * time.Second)
//		if err := c.Suspend(); err != nil {
//			http.Error(w, err.Error(), http.StatusServiceUnavailable)
//			return
//		}
//		room.add(c.Handle()) // after Suspend; the event calls SetAttribute, then Resume
//	}
//
//	http.Handle("/poll", continuation.NewDispatcher(http.HandlerFunc(chat)))
//
// # Life cycle
//
// A request has one Continuation for its whole life. After Suspend,
// returning from the handler does not end the response: the request waits
// until exactly one of Resume, Complete, expiry or client disconnect ends
// the suspension. Resume and expiry dispatch the handler again, with the
// same *http.Request and ResponseWriter (whatever was written before stays
// written); Complete and disconnect end the request. A redispatch may
// suspend again, as many times as it likes, which is how a stream is built:
// resume, write an event, flush, suspend again.
//
// The table gives the result of each call in each state of a request. "ok"
// means the call succeeds; the state it leads to follows the arrow.
//
//	state                     Suspend              Resume / Complete               expiry / disconnect
//	------------------------  -------------------  ------------------------------  ------------------------------
//	dispatching               ok → suspending      ErrNotSuspended                 (not possible: no timer runs,
//	                                                                               and the handler sees r.Context)
//	suspending (dispatch      ErrAlreadySuspended  first call: ok, deferred until  (not possible)
//	still running)                                 the dispatch returns; any
//	                                               later call: ErrNotSuspended
//	waiting (returned,        ErrNotDispatched     first call: ok → redispatch     expiry → OnTimeout listeners,
//	holding no worker)                             on the pool, or finished;       then redispatch with IsExpired
//	                                               later calls: ErrNotSuspended    (unless a listener Completes);
//	                                                                               disconnect → finished
//	expiring (OnTimeout       ErrNotDispatched     from a listener: ok (Resume     (already expired)
//	listeners running)                             also sets IsResumed; Complete
//	                                               skips the redispatch); from
//	                                               any other goroutine:
//	                                               ErrNotSuspended
//	finished                  ErrCompleted         ErrCompleted                    (nothing happens)
//
// Returning from a dispatch without suspending finishes the request; so does
// a panic (see below). When a request finishes, every Listener's OnComplete
// runs once and Done is closed. The flags answer, during a dispatch:
// IsInitial is true only in the first dispatch (also after Suspend, until it
// returns); IsResumed is true in a dispatch caused by Resume; IsExpired in
// one caused by expiry (check it first: a listener that resumes from
// OnTimeout makes both true). Suspend resets IsResumed and IsExpired.
//
// # Races and stale handles
//
// Resume, Complete, the timer, the client's disconnect and Shutdown all
// race to end a waiting suspension. Each attempt takes the continuation's
// lock and succeeds only if the suspension is still waiting, so exactly one
// wins; the others get ErrNotSuspended (or ErrCompleted once the request
// has finished) and change nothing. Two dispatches of one request never run
// at the same time: a Resume during the suspending dispatch is deferred
// until it returns.
//
// A *Continuation stands for the request, across all its suspensions, so
// Continuation.Resume acts on whichever suspension is current. An event
// source that may hold on to a waiter past its suspension (across a
// timeout, say) should keep the Handle returned by Continuation.Handle
// instead: a Handle names one suspension by its sequence number, and its
// Resume and Complete fail with ErrNotSuspended once that suspension has
// ended, so a late event can never wake a later suspension by accident.
//
// # Timeouts
//
// Each suspension expires after the request's timeout (SetTimeout, else
// WithDefaultTimeout, else 30 s; 0 means never), counted from the moment
// the suspending dispatch returns, not from Suspend. On expiry the
// OnTimeout listeners run first, then the handler is dispatched with
// IsExpired true so it can write its own answer (a long-poll's "no news").
//
// # What a waiting request costs
//
// Go gives a request to a goroutine until its handler returns, so a
// suspended request keeps that net/http goroutine (with net/http's own
// buffers); nothing else. It holds no worker of the pool, no extra
// goroutine, and no goroutine per timer: one runtime timer per request,
// reused across suspensions, starts a goroutine only if it fires. The
// dispatches themselves run on that same goroutine once it holds a pool
// slot, so a dispatch costs no goroutine handoff.
//
// A request whose context is cancelled while it waits has lost its client:
// it finishes without a redispatch. A context that reaches its deadline (a
// timeout middleware placed before the Dispatcher) expires the suspension
// instead, so the handler still answers.
//
// On HTTP/1.1 net/http notices a client's disconnect only after the request
// body has been read to the end. Before a request waits, the Dispatcher
// therefore reads and discards up to 64 KiB of body the handler left
// unread; a request with a larger unread body is not told of a disconnect,
// and ends by its timeout. Read what you need before suspending.
//
// # Admission and overload
//
// WithWorkers bounds the dispatches running at once. A new request that
// finds every worker busy waits in a queue of WithQueueSize; beyond it the
// request is answered 503 with Retry-After. A redispatch of an admitted
// request waits too but is never refused and never counts against the
// queue: a broadcast that resumes 20,000 requests must not make the
// re-polls that follow it fail. WithMaxSuspended caps the requests waiting
// at once; Suspend beyond it returns ErrOverloaded.
//
// # Panics
//
// A panic in a dispatch is recovered and logged (WithLogger): the client
// gets 500 if nothing was written yet; if Complete was called, what was
// written stands; otherwise the response is broken off, as net/http does
// for a partly written response, and a panic with http.ErrAbortHandler
// aborts quietly, as in net/http. OnComplete runs either way, later calls
// get ErrCompleted, and the worker goes back to the pool. A panic in a
// listener is logged and the next listener runs.
//
// # Shutdown
//
// http.Server.Shutdown waits for active requests without waking them, so a
// parked long-poll would hold it until its timeout. Dispatcher.Shutdown
// refuses new requests with 503, makes Suspend fail with ErrShutdown and
// expires every waiting request so its handler answers now; then it waits
// for every request to finish. Wire it in front of the server's:
//
//	srv.RegisterOnShutdown(func() { _ = d.Shutdown(context.Background()) })
//	if err := srv.Shutdown(ctx); err != nil {
//		srv.Close()
//	}
//
// # Metrics
//
// WithMetrics registers, on the Registerer given and no other:
// cometkit_continuations_suspended (gauge), cometkit_dispatches_total
// (counter, label kind = initial, resumed or expired),
// cometkit_dispatch_queue_length (gauge), cometkit_requests_rejected_total
// (counter) and cometkit_suspend_duration_seconds (histogram, up to 10
// minutes). Dispatchers sharing a registry share these collectors.
//
// # Compared with Jetty
//
// The semantics are Jetty 7's continuations, with the choices Jetty left
// open made as its javadoc says: a second Resume fails, a timeout dispatch
// has IsExpired true and IsResumed false, the default timeout is 30 s.
// Jetty's Undispatch is a plain return in Go, and the response given to
// listeners and completers is ResponseWriter. Two differences come from
// net/http: a panic after writing cannot discard what was written (Jetty
// resets an uncommitted buffer and sends 500), and a disconnect is noticed
// while waiting (Jetty notices it only at the timeout).
package continuation
