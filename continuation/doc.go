// Package continuation implements Jetty-style continuations for net/http: a
// handler can suspend its request, return, and hold no worker while it
// waits; an event resumes it, and the handler runs again, on a bounded
// pool, with the event's data attached.
//
// A [Dispatcher] wraps a handler. Every run of the handler (a dispatch: the
// first, and each one after Resume or expiry) happens on the Dispatcher's
// bounded pool. Inside the handler, [FromRequest] gives the request's
// [Continuation]:
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
// [Dispatcher.Handler] serves further handlers on the same pool and
// limits. A handler served without a Dispatcher gets nil from FromRequest,
// and any method called on it panics saying so.
//
// # Life cycle
//
// A request has one Continuation for its whole life. After
// [Continuation.Suspend], returning from the handler does not end the
// response: the request waits until exactly one of
// [Continuation.Resume], [Continuation.Complete], expiry or client
// disconnect ends the suspension. Resume and expiry dispatch the handler
// again, with the same *http.Request and ResponseWriter (whatever was
// written before stays written); Complete and disconnect end the request.
// A redispatch may suspend again, as many times as it likes, which is how
// a stream is built: resume, write an event, flush, suspend again.
//
// The table gives the result of each call in each state of a request. "ok"
// means the call succeeds; the state it leads to follows the arrow.
//
//	state                     Suspend              Resume / Complete               expiry / disconnect
//	------------------------  -------------------  ------------------------------  ------------------------------
//	dispatching               ok → suspending      ErrNotSuspended                 (not possible: no timer runs,
//	                                                                               and the handler sees r.Context)
//	suspending (dispatch      ErrAlreadySuspended  first call: ok, acts when the   (not possible)
//	still running)                                 dispatch returns; any later
//	                                               call: ErrNotSuspended
//	waiting (returned,        ErrNotDispatched     first call: ok → redispatch     expiry → expiring (straight to
//	holding no worker)                             on the pool, or finished;       the expiry dispatch if the
//	                                               later calls: ErrNotSuspended    request has no listeners);
//	                                                                               disconnect → finished
//	expiring (OnTimeout       ErrNotDispatched     first call, from anyone: ok,    (already expired)
//	listeners running)                             acts when the listeners
//	                                               return (Resume also sets
//	                                               IsResumed; Complete skips the
//	                                               expiry dispatch); any later
//	                                               call: ErrNotSuspended
//	finished                  ErrCompleted         ErrCompleted                    (nothing happens)
//
// Returning from a dispatch without suspending finishes the request; so does
// a panic (see below), and so does [runtime.Goexit] in a handler or a
// listener (net/http drops the connection, and everything the request held
// is given back). When a request finishes, every [Listener]'s OnComplete
// runs once and [Continuation.Done] is closed. The flags answer, during a
// dispatch: IsInitial is true only in the first dispatch (also after
// Suspend, until it returns); IsResumed is true in a dispatch caused by
// Resume; IsExpired in one caused by expiry (check it first: a Resume while
// the OnTimeout listeners run makes both true). Suspend resets IsResumed
// and IsExpired.
//
// # Races and stale handles
//
// Resume, Complete, the timer, the client's disconnect and Drain all race
// to end a waiting suspension. Each attempt takes the continuation's lock
// and succeeds only if the suspension is still undecided, so exactly one
// wins; the others get [ErrNotSuspended] (or [ErrCompleted] once the
// request has finished) and change nothing. Two dispatches of one request
// never run at the same time: a decision taken while the request's
// goroutine is busy (the suspending dispatch, the OnTimeout listeners)
// acts when it is done. There is no notion of "the handler's goroutine":
// an OnTimeout listener may hand the Resume to another goroutine and wait
// for it, and an event source that resumes while the listeners run wins
// like any first caller.
//
// Suspend, unlike the others, belongs to the running dispatch. Called from
// another goroutine it cannot be told apart from the handler's own call: it
// succeeds if it lands before the Dispatcher has seen the dispatch return,
// and the request then waits as if the handler had suspended last thing
// (whoever suspended it must resume or complete it); after that it fails
// with [ErrNotDispatched]. Either way the request is answered once.
//
// A *Continuation stands for the request, across all its suspensions, so
// Continuation.Resume acts on whichever suspension is current. An event
// source that may hold on to a waiter past its suspension (across a
// timeout, say) should keep the [Handle] returned by
// [Continuation.Handle] instead: a Handle names one suspension by its
// sequence number, and its Resume and Complete fail with ErrNotSuspended
// once that suspension has ended, so a late event can never wake a later
// suspension by accident.
//
// # Timeouts
//
// Each suspension expires after the request's timeout
// ([Continuation.SetTimeout], else [WithDefaultTimeout], else 30 s; 0 means
// never), counted from the moment the suspending dispatch returns, not from
// Suspend. On expiry the OnTimeout listeners run first, then the handler is
// dispatched with IsExpired true so it can write its own answer (a
// long-poll's "no news").
//
// # Request bodies
//
// A slow client must not hold a worker, nor a waiting request. So before a
// request takes a worker, the Dispatcher reads its body into memory, on the
// goroutine net/http gave the request, up to [WithBodyBuffer] (64 KiB by
// default); the handler then reads it from memory, and [http.MaxBytesReader]
// and the like work on it as usual. The whole body must arrive within
// [WithBodyTimeout] (30 s by default) of the request reaching the
// Dispatcher: a body that does not is answered 408 Request Timeout without
// a dispatch, and a handler reading the rest of a body longer than the
// buffer gets an error wrapping [os.ErrDeadlineExceeded]. Drain answers a
// request still reading its body 503; a client that leaves in the middle
// of its body is dropped without an answer. A request without a body
// (every GET) costs none of this. Reading ahead also answers a client's
// "Expect: 100-continue" before the handler runs. On HTTP/1.x an answer sent while some of
// the body is still on the connection closes the connection after it,
// since net/http would otherwise read the rest first.
//
// A waiting request never reads its body, so nothing but its own endings
// can keep it. The body decides, though, whether it hears of a disconnect:
// on HTTP/1.1 net/http watches the connection only once the body has been
// read to its end, which the Dispatcher does for every body up to the
// buffer, and the handler may do for a longer one before it suspends. A
// request that waits with body still unread is not told that its client
// left; it ends by its timeout, Resume, Complete or Drain. Over HTTP/2 every
// waiting request hears of it.
//
// # What a waiting request costs
//
// Go gives a request to a goroutine until its handler returns, so a
// suspended request keeps that net/http goroutine (with net/http's own
// buffers), and the part of its body read ahead until the handler has read
// it; nothing else. It holds no worker of the pool, no extra goroutine, and
// no goroutine per timer: one runtime timer per request, reused across
// suspensions, starts a goroutine only if it fires. The dispatches
// themselves run on that same goroutine once it holds a pool slot, so a
// dispatch costs no goroutine handoff.
//
// A request whose context is cancelled while it waits has lost its client:
// it finishes without a redispatch. A context that reaches its deadline (a
// timeout middleware placed before the Dispatcher) expires the suspension
// instead, so the handler still answers.
//
// # Admission and overload
//
// [WithWorkers] bounds the dispatches running at once. A new request that
// finds every worker busy waits in a queue of [WithQueueSize]; beyond it
// the request is answered 503 with Retry-After. A redispatch of an admitted
// request waits too but is never refused and never counts against the
// queue: a broadcast that resumes 20,000 requests must not make the
// re-polls that follow it fail. [WithMaxSuspended] caps the requests
// waiting at once; Suspend beyond it returns [ErrOverloaded].
//
// # Options
//
// An option's argument means what it says, and a default is what you get
// by not passing the option. Zero is accepted only where it means "none"
// and the option says so (WithQueueSize(0): no queue; WithDefaultTimeout(0)
// and SetTimeout(0): never expire; WithBodyBuffer(0): nothing read ahead).
// A value that cannot be meant (a negative size or duration, a pool of no
// workers, a cap of zero, a nil registerer or logger) makes
// [NewDispatcher] panic with a message that names the option.
//
// # Panics
//
// A panic in a dispatch is recovered and logged ([WithLogger]): the client
// gets 500 if nothing was written yet; if Complete was called, what was
// written stands; otherwise the response is broken off, as net/http does
// for a partly written response, and a panic with [http.ErrAbortHandler]
// aborts quietly, as in net/http. OnComplete runs either way, later calls
// get ErrCompleted, and the worker goes back to the pool. A panic in a
// listener is logged and the next listener runs.
//
// # Shutdown
//
// [http.Server.Shutdown] waits for active requests without waking them, so
// a parked long-poll would hold it until its timeout. [Dispatcher.Drain]
// refuses new requests with 503, answers requests still reading their body
// 503, makes Suspend fail with [ErrShutdown] and expires every waiting
// request so its handler answers now; it returns at once, as
// [http.Server.RegisterOnShutdown] wants. [Dispatcher.Shutdown] is Drain
// and a wait for every request to finish. Wire Drain in front of the
// server's shutdown:
//
//	srv.RegisterOnShutdown(d.Drain)
//	if err := srv.Shutdown(ctx); err != nil {
//		srv.Close()
//	}
//
// # Metrics
//
// [WithMetrics] registers, on the Registerer given and no other:
// cometkit_continuations_suspended (gauge), cometkit_dispatches_total
// (counter, label kind = initial, resumed or expired),
// cometkit_dispatch_queue_length (gauge), cometkit_requests_rejected_total
// (counter) and cometkit_suspend_duration_seconds (histogram, up to 10
// minutes). Dispatchers sharing a registry share these collectors.
//
// # Testing
//
// Package [github.com/cometkit/cometkit/continuation/continuationtest]
// serves requests through a Dispatcher in process (for [testing/synctest]),
// over loopback sockets, waits for requests to suspend and checks for
// leaked goroutines.
//
// # Compared with Jetty
//
// The semantics are Jetty 7's continuations, with the choices Jetty left
// open made as its javadoc says: a second Resume fails, a timeout dispatch
// has IsExpired true and IsResumed false, the default timeout is 30 s.
// Jetty's Undispatch is a plain return in Go, and the response given to
// listeners and completers is ResponseWriter. Jetty 9.4 lets only the
// thread running onTimeout resume an expiring request (jetty/jetty.project
// issue 6227); Go has no goroutine identity, so here the first Resume from
// anyone wins, and what that issue protects against, a late event waking a
// later suspension, is what a Handle rules out. Two differences come from
// net/http: a panic after writing cannot discard what was written (Jetty
// resets an uncommitted buffer and sends 500), and a disconnect is noticed
// while waiting (Jetty notices it only at the timeout).
package continuation
