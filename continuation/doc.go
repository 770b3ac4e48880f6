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
//		if c.IsInitial() {
//			c.SetTimeout(25 * time.Second)
//			if err := c.Suspend(); err != nil {
//				http.Error(w, err.Error(), http.StatusServiceUnavailable)
//				return
//			}
//			room.add(c.Handle()) // after Suspend; the event calls SetAttribute, then Resume
//			return
//		}
//		if c.IsExpired() { // first: see "Life cycle"
//			w.WriteHeader(http.StatusNoContent) // nothing happened in time
//			return
//		}
//		msg, _ := c.Attribute("msg").(string) // resumed by an event
//		io.WriteString(w, msg)
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
// A waiting request holds no worker of the pool and no goroutine per
// timer: one runtime timer per request, reused across suspensions, starts
// a goroutine only if it fires. What else it holds depends on whether it
// detached (next section). Attached, Go gives a request to a goroutine
// until its handler returns, so a suspended request keeps that net/http
// goroutine, net/http's buffers for the connection, and net/http's
// goroutine that watches the connection for the client leaving: about
// 23 KiB of heap and stacks, two goroutines. Detached, it keeps the
// Continuation, the *http.Request with its context, and the connection
// itself: about 2.9 KiB, no goroutine (BenchmarkWaitingMemory, with a
// handler that keeps nothing of its own).
//
// A request whose context is cancelled while it waits has lost its client:
// it finishes without a redispatch. A context that reaches its deadline (a
// timeout middleware before the Dispatcher) expires the suspension
// instead, so the handler still answers.
//
// # Detaching
//
// A server serves with detaching in one line, with the functions that
// stand for the http.Server methods of the same names:
//
//	srv := &http.Server{Addr: ":8080", Handler: d}
//	srv.RegisterOnShutdown(d.Drain)
//	go continuation.ListenAndServe(srv) // or Serve, ServeTLS, ListenAndServeTLS
//
// ([DetachingListener] does the same for a server started another way.)
// Then a request that waits detaches from net/http, when it can: the
// Dispatcher takes its connection over, net/http's goroutines and buffers
// for it go, and the request waits with no goroutine at all. One goroutine
// per Dispatcher, the poller, watches every detached connection for the
// client hanging up (epoll, Linux), which ends the suspension as a
// disconnect does. Resume, Complete, expiry, Drain and a hang-up queue the
// request on the pool, which starts a goroutine for it once it grants a
// slot; the redispatch writes the response on the connection, as
// net/http's writer would have (the same bytes, http.ResponseController
// included: Flush, deadlines, Hijack). When the response is complete, the
// connection goes back to the http.Server for its next request, with any
// bytes the client sent after the request (pipelining); the next poll of a
// long-poll client comes on the same connection.
//
// A request detaches when its dispatch has returned suspended, it came
// over HTTP/1.1 through one of those listeners, on Linux, its
// ResponseWriter can be hijacked (through wrappers' Unwrap, as
// http.ResponseController finds it), its body has been read to the end
// (the Dispatcher reads bodies ahead up to [WithBodyBuffer]), its context
// has no deadline, and the response, if it has begun, is framed as
// net/http frames it (no Transfer-Encoding or trailers of the handler's).
// Otherwise it waits attached, as described above: HTTP/2 streams (which
// share their connection), HTTP/1.0, other systems, a wrapper without
// Unwrap, a body still on the connection, a listener whose connections
// give no socket to watch. cometkit_attached_waits_total counts those
// waits by reason.
//
// The contract's behaviour is the same either way (the package's tests of
// behaviour over the wire run in both modes). What differs, and can be
// seen:
//
//   - Middleware placed before the Dispatcher sees ServeHTTP return when
//     the request detaches: a logger there logs the wait, not the answer;
//     later writes through its wrapper of the ResponseWriter fail with
//     http.ErrHijacked. Middleware that must see the answer belongs
//     behind the Dispatcher.
//   - [http.Server.Shutdown] does not know detached connections (nor does
//     Close): Drain answers them (they close after their answer), and
//     [Dispatcher.Shutdown] waits for them. Call it after the server's.
//   - The http.Server sees a connection handed back as a new one:
//     ConnState reports it StateNew, ConnContext runs again, and its next
//     request is read under ReadHeaderTimeout (not IdleTimeout), as a new
//     connection's first. With cleartext HTTP/2 enabled
//     (Protocols.SetUnencryptedHTTP2), a client may go on in HTTP/2 by
//     prior knowledge there, as it may on any new connection; a proxy
//     that shares its connections to the server among clients should not
//     enable it.
//     (The listener closes one that has not begun a request when the
//     server shuts down, as the server closes idle connections.) The
//     listener sets the server's BaseContext and ConnState, wrapping
//     those it had.
//   - Over TLS, bytes of a pipelined request that net/http had already
//     read cannot go back with the connection (net/http needs the
//     *tls.Conn itself, unwrapped): that response says Connection: close,
//     and the client sends the request again on a new connection.
//   - A response begun before the wait, with bytes net/http had not yet
//     sent, is sent when the request detaches (net/http's Hijack would
//     drop them), chunked where net/http might have computed a
//     Content-Length at the end.
//   - The OnTimeout and OnComplete listeners of a detached request run on
//     a worker, since that is what gives it a goroutine.
//   - Over TLS, the poller sees the connection, not the TLS session: a
//     client that sends close_notify but keeps the TCP connection open is
//     not seen to leave (net/http's background read would see it); its
//     wait ends by its timeout, or when the TCP connection closes.
//   - A client that closes its sending side while it waits ends the wait
//     as a disconnect, as with net/http; detached, also when it has
//     pipelined a request first (net/http, holding those bytes, stops
//     watching the connection).
//
// http.Server.WriteTimeout keeps counting from the request's arrival, as
// net/http counts it. The poller is started by the first request that
// detaches and stops when the Dispatcher has drained.
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
// A dispatch holds its worker while it writes, and a write blocks while
// the client reads nothing: bound what a dispatch writes, as net/http's
// WriteTimeout would if a long-poll could have one (it cannot: the answer
// comes long after the request). Set a deadline before writing an answer,
// http.NewResponseController(w).SetWriteDeadline(time.Now().Add(10 *
// time.Second)), which works detached too and ends with the response; the
// package sse bounds each of its writes so.
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
// request, attached or detached, so its handler answers now; it returns
// at once, as [http.Server.RegisterOnShutdown] wants.
// [Dispatcher.Shutdown] is Drain and a wait for every request to finish,
// the detached ones included, which the server's Shutdown does not see.
// Wire Drain in front of the server's shutdown, and wait for both:
//
//	srv.RegisterOnShutdown(d.Drain)
//	err := srv.Shutdown(ctx)
//	if err != nil {
//		srv.Close()
//	}
//	err = errors.Join(err, d.Shutdown(ctx))
//
// # Metrics
//
// [WithMetrics] registers, on the Registerer given and no other:
// cometkit_continuations_suspended (gauge), cometkit_dispatches_total
// (counter, label kind = initial, resumed or expired),
// cometkit_dispatch_queue_length (gauge), cometkit_requests_rejected_total
// (counter), cometkit_suspend_duration_seconds (histogram, up to 10
// minutes), cometkit_requests_detached (gauge) and
// cometkit_attached_waits_total (counter, label reason = protocol,
// listener, platform, connection, poller, shutdown, deadline, body,
// writer, framing or late; see "Detaching"). Dispatchers sharing a
// registry share these collectors.
//
// # Testing
//
// Package [github.com/cometkit/cometkit/continuation/continuationtest]
// serves requests through a Dispatcher in process (for [testing/synctest]),
// over loopback sockets, attached or detached, waits for requests to
// suspend or detach and checks for leaked goroutines.
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
