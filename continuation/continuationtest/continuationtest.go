// Package continuationtest helps test handlers that suspend requests, as
// net/http/httptest helps test handlers.
//
// [Start] serves one request in process: the handler runs on a goroutine
// of its own, writing to an [httptest.ResponseRecorder], with a context
// that [Call.Disconnect] cancels the way net/http does when the client goes
// away. It needs no network, so it works inside a [testing/synctest]
// bubble, where timeouts take no real time:
//
//	synctest.Test(t, func(t *testing.T) {
//		d := continuation.NewDispatcher(poll)
//		call := continuationtest.Start(d, httptest.NewRequest("GET", "/poll", nil))
//		synctest.Wait() // the handler has suspended and returned
//		publish("hello")
//		if got := call.Wait().Body.String(); got != "hello" {
//			t.Errorf("body = %q", got)
//		}
//	})
//
// [NewServer] serves a Dispatcher over real sockets on loopback, and drains
// it before closing, so requests still waiting answer instead of holding
// the test's end; [Get] sends a request that the test answers later,
// [WaitSuspended] waits for requests to suspend, and [VerifyNoLeaks] fails
// a test that leaves goroutines behind:
//
//	func TestPoll(t *testing.T) {
//		continuationtest.VerifyNoLeaks(t)
//		d := continuation.NewDispatcher(poll)
//		srv := continuationtest.NewServer(t, d)
//		answer := continuationtest.Get(t.Context(), srv.Client(), srv.URL+"/poll")
//		continuationtest.WaitSuspended(t, d, 1)
//		publish("hello")
//		if a := <-answer; a.Err != nil || a.Body != "hello" {
//			t.Errorf("body %q, error %v", a.Body, a.Err)
//		}
//	}
//
// The server's Close also closes the idle connections of srv.Client(), so
// that the leak check does not count them.
//
// A test of behaviour over the wire should hold in both ways a server can
// serve waiting requests: attached, each on its net/http goroutine, and
// detached from net/http (see the continuation package doc, "Detaching").
// [ServeModes] runs it both ways:
//
//	for _, mode := range continuationtest.ServeModes {
//		t.Run(mode.String(), func(t *testing.T) {
//			srv := mode.NewServer(t, d)
//			...
//		})
//	}
package continuationtest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
)

// A Call is one request being served in process by [Start].
type Call struct {
	// Recorder is what the handler writes to. Read it once Done is
	// closed, or, inside a synctest bubble, after synctest.Wait.
	Recorder *httptest.ResponseRecorder

	done       chan struct{}
	disconnect context.CancelFunc
	aborted    bool
}

// Start serves r through h on a new goroutine and returns at once. The
// handler sees r with a context derived from r's that [Call.Disconnect]
// cancels, and that is cancelled when ServeHTTP returns, as net/http's is.
//
// A panic that escapes h other than [http.ErrAbortHandler] (a Dispatcher
// recovers every other) crashes the test binary, so that it cannot pass
// unnoticed.
func Start(h http.Handler, r *http.Request) *Call {
	ctx, cancel := context.WithCancel(r.Context())
	call := &Call{Recorder: httptest.NewRecorder(), done: make(chan struct{}), disconnect: cancel}
	go call.serve(h, r.WithContext(ctx))
	return call
}

func (call *Call) serve(h http.Handler, r *http.Request) {
	defer close(call.done)
	defer call.disconnect()
	returned := false
	defer func() {
		if returned {
			return
		}
		// ServeHTTP panicked, or called runtime.Goexit (recover returns
		// nil then): net/http drops the connection either way.
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			panic(p)
		}
		call.aborted = true
	}()
	h.ServeHTTP(call.Recorder, r)
	returned = true
}

// Wait blocks until ServeHTTP has returned and returns the recorded
// response. Inside a synctest bubble a request that never ends fails the
// test as a deadlock instead of hanging it.
func (call *Call) Wait() *httptest.ResponseRecorder {
	<-call.done
	return call.Recorder
}

// Done returns a channel that is closed when ServeHTTP has returned.
func (call *Call) Done() <-chan struct{} { return call.done }

// Disconnect cancels the request's context, as net/http does when the
// client goes away.
func (call *Call) Disconnect() { call.disconnect() }

// Aborted waits until ServeHTTP has ended and reports whether it ended
// without returning: a panic with [http.ErrAbortHandler], or
// runtime.Goexit. net/http answers either by dropping the connection, so
// whatever the recorder holds never reached a client.
func (call *Call) Aborted() bool {
	<-call.done
	return call.aborted
}

// NewServer starts an [httptest.Server] on loopback serving d, and closes
// it when the test ends: d.Drain first, so that requests still waiting
// answer, then the server's Close. To close it sooner, call d.Shutdown (or
// d.Drain) before Close: Close waits for every request, waiting ones too.
// Its waiting requests stay attached; [Detached].NewServer detaches them.
func NewServer(tb testing.TB, d *continuation.Dispatcher) *httptest.Server {
	tb.Helper()
	return Attached.NewServer(tb, d)
}

// NewUnstartedServer is NewServer without the Start, for a test that
// configures the server first (srv.Config.Protocols for HTTP/2 without
// TLS, srv.Config.ConnState, srv.EnableHTTP2 with StartTLS).
func NewUnstartedServer(tb testing.TB, d *continuation.Dispatcher) *httptest.Server {
	tb.Helper()
	return Attached.NewUnstartedServer(tb, d)
}

// A ServeMode is a way for a test server to serve the requests that wait.
type ServeMode struct {
	name   string
	detach bool
}

var (
	// Attached serves with http.Server.Serve: a waiting request keeps its
	// net/http goroutine.
	Attached = ServeMode{"attached", false}

	// Detached serves through [continuation.DetachingListener], as
	// [continuation.Serve] does: a waiting HTTP/1.1 request detaches from
	// net/http. (StartTLS puts the TLS listener outside it, so over TLS
	// requests stay attached; see [continuation.ServeTLS].)
	Detached = ServeMode{"detached", true}

	// ServeModes are both, for a test to run in each.
	ServeModes = []ServeMode{Attached, Detached}
)

func (m ServeMode) String() string { return m.name }

// NewServer starts an [httptest.Server] on loopback serving d in mode m,
// closed when the test ends as [NewServer]'s is. In Detached mode, the
// end also waits for d.Shutdown (a minute at most), since the server's
// Close does not wait for detached requests.
func (m ServeMode) NewServer(tb testing.TB, d *continuation.Dispatcher) *httptest.Server {
	tb.Helper()
	srv := m.NewUnstartedServer(tb, d)
	srv.Start()
	return srv
}

// NewUnstartedServer is [ServeMode.NewServer] without the Start, for a
// test that configures the server first: not its BaseContext or
// ConnState, which a Detached server has wrapped already (set them on an
// httptest.Server of your own, then wrap its Listener with
// [continuation.DetachingListener]).
func (m ServeMode) NewUnstartedServer(tb testing.TB, d *continuation.Dispatcher) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(d)
	if m.detach {
		srv.Listener = continuation.DetachingListener(srv.Config, srv.Listener)
	}
	tb.Cleanup(func() {
		d.Drain()
		srv.Close()
		if m.detach {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := d.Shutdown(ctx); err != nil {
				tb.Errorf("continuationtest: detached requests still running a minute after Drain: %v", err)
			}
		}
	})
	return srv
}

// An Answer is what a client received for a request sent with [Do] or
// [Get].
type Answer struct {
	// Response is the response, with its Body read into Body and closed;
	// nil when no response arrived.
	Response *http.Response

	// Body is the response's body, as much of it as arrived.
	Body string

	// Err is the error that ended the request, or the reading of its
	// body; nil when the whole answer arrived.
	Err error
}

// Do sends req with client from a goroutine of its own and returns at
// once, so that a test can act while the request waits: suspend it,
// resume it, cancel req's context as a client that leaves does. The
// channel receives the [Answer] once the body has been read to its end
// or the request has failed. The goroutine ends with the request; the
// channel has room for the answer, so a test that stops listening
// leaves nothing blocked.
func Do(client *http.Client, req *http.Request) <-chan Answer {
	answer := make(chan Answer, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			answer <- Answer{Err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		answer <- Answer{Response: resp, Body: string(body), Err: err}
	}()
	return answer
}

// Get is [Do] with a GET request for url, made with ctx. A request made
// with a test's t.Context ends as one whose client left when the test
// function returns, before the test's cleanups run (the drain of
// [NewServer] among them).
func Get(ctx context.Context, client *http.Client, url string) <-chan Answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		answer := make(chan Answer, 1)
		answer <- Answer{Err: err}
		return answer
	}
	return Do(client, req)
}

// WaitSuspended waits until at least n requests are suspended on d, and
// fails the test if that takes a minute.
func WaitSuspended(tb testing.TB, d *continuation.Dispatcher, n int) {
	tb.Helper()
	waitFor(tb, "suspended", d.Suspended, n)
}

// WaitDetached waits until at least n requests are detached on d, and
// fails the test if that takes a minute.
func WaitDetached(tb testing.TB, d *continuation.Dispatcher, n int) {
	tb.Helper()
	waitFor(tb, "detached", d.Detached, n)
}

func waitFor(tb testing.TB, what string, count func() int, n int) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for count() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("continuationtest: %d requests %s after a minute, want %d", count(), what, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// VerifyNoLeaks records the goroutines running now and, when the test
// ends (after its other cleanups, so after the servers of NewServer have
// closed), fails it if goroutines started since are still running after
// a grace period. Call it first thing in the test, and not in a test that
// runs in parallel with others (their goroutines would count). Close the
// idle connections of the clients the test made, or theirs count too.
func VerifyNoLeaks(tb testing.TB) {
	tb.Helper()
	before := goleak.IgnoreCurrent()
	tb.Cleanup(func() { goleak.VerifyNone(tb, before) })
}
