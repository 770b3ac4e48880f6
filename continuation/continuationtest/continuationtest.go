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
// the test's end; [WaitSuspended] waits for requests to suspend, and
// [VerifyNoLeaks] fails a test that leaves goroutines behind:
//
//	func TestPoll(t *testing.T) {
//		continuationtest.VerifyNoLeaks(t)
//		d := continuation.NewDispatcher(poll)
//		srv := continuationtest.NewServer(t, d)
//		answer := make(chan string, 1)
//		go func() { answer <- getBody(srv.Client(), srv.URL+"/poll") }()
//		continuationtest.WaitSuspended(t, d, 1)
//		publish("hello")
//		if got := <-answer; got != "hello" {
//			t.Errorf("body = %q", got)
//		}
//	}
//
// The server's Close also closes the idle connections of srv.Client(), so
// that the leak check does not count them.
package continuationtest

import (
	"context"
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
func NewServer(tb testing.TB, d *continuation.Dispatcher) *httptest.Server {
	tb.Helper()
	srv := NewUnstartedServer(tb, d)
	srv.Start()
	return srv
}

// NewUnstartedServer is NewServer without the Start, for a test that
// configures the server first (srv.Config.Protocols for HTTP/2 without
// TLS, srv.Config.ConnState, srv.EnableHTTP2 with StartTLS).
func NewUnstartedServer(tb testing.TB, d *continuation.Dispatcher) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(d)
	tb.Cleanup(func() {
		d.Drain()
		srv.Close()
	})
	return srv
}

// WaitSuspended waits until at least n requests are suspended on d, and
// fails the test if that takes a minute.
func WaitSuspended(tb testing.TB, d *continuation.Dispatcher, n int) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for d.Suspended() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("continuationtest: %d requests suspended after a minute, want %d", d.Suspended(), n)
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
