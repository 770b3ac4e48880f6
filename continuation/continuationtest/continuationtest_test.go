package continuationtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// parking is a handler that suspends every first dispatch without a
// timeout and answers a redispatch with how it was woken.
func parking(parked chan<- *continuation.Continuation) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		switch {
		case c.IsExpired():
			io.WriteString(w, "expired")
		case c.IsResumed():
			io.WriteString(w, "resumed")
		default:
			c.SetTimeout(0)
			if err := c.Suspend(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			if parked != nil {
				parked <- c
			}
		}
	})
}

// Start serves in process: Wait returns the answer, and Disconnect ends a
// waiting request as a client that leaves does, without an answer.
func TestStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parked := make(chan *continuation.Continuation, 1)
		d := continuation.NewDispatcher(parking(parked))

		call := continuationtest.Start(d, httptest.NewRequest(http.MethodGet, "/", nil))
		require.NoError(t, (<-parked).Resume())
		assert.Equal(t, "resumed", call.Wait().Body.String())
		assert.False(t, call.Aborted())

		call = continuationtest.Start(d, httptest.NewRequest(http.MethodGet, "/", nil))
		c := <-parked
		synctest.Wait()
		select {
		case <-call.Done():
			t.Fatal("Done closed while the request waits")
		default:
		}
		call.Disconnect()
		<-call.Done()
		<-c.Done()
		assert.Empty(t, call.Recorder.Body.String())
		assert.ErrorIs(t, c.Resume(), continuation.ErrCompleted)
	})
}

// Aborted tells a handler that aborted the response (http.ErrAbortHandler,
// runtime.Goexit) from one that returned.
func TestAborted(t *testing.T) {
	for name, abort := range map[string]func(){
		"ErrAbortHandler": func() { panic(http.ErrAbortHandler) },
		"Goexit":          runtime.Goexit,
	} {
		t.Run(name, func(t *testing.T) {
			d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "half")
				abort()
			}))
			call := continuationtest.Start(d, httptest.NewRequest(http.MethodGet, "/", nil))
			assert.True(t, call.Aborted())
			assert.Equal(t, "half", call.Wait().Body.String())
		})
	}
}

// A server from NewServer drains its Dispatcher when the test ends, so a
// request still waiting answers (as expired) instead of holding the
// server's Close forever.
func TestNewServerDrainsAtCleanup(t *testing.T) {
	d := continuation.NewDispatcher(parking(nil))
	var answer <-chan continuationtest.Answer
	outlives := t.Context() // the subtest's is cancelled before its cleanups
	t.Run("test", func(t *testing.T) {
		srv := continuationtest.NewServer(t, d)
		answer = continuationtest.Get(outlives, srv.Client(), srv.URL)
		continuationtest.WaitSuspended(t, d, 1)
	})
	a := <-answer
	require.NoError(t, a.Err)
	assert.Equal(t, "expired", a.Body)
	assert.Zero(t, d.Suspended())
}

// Get and Do return at once and deliver the answer when it has all
// arrived; a request whose context is cancelled while it waits ends on
// both sides, with the context's error.
func TestGetAndDo(t *testing.T) {
	parked := make(chan *continuation.Continuation, 1)
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			io.Copy(w, r.Body)
			return
		}
		parking(parked).ServeHTTP(w, r)
	}))
	srv := continuationtest.NewServer(t, d)
	client := srv.Client()

	answer := continuationtest.Get(t.Context(), client, srv.URL)
	c := <-parked
	continuationtest.WaitSuspended(t, d, 1)
	select {
	case a := <-answer:
		t.Fatalf("answered while the request waits: %+v", a)
	default:
	}
	require.NoError(t, c.Resume())
	a := <-answer
	require.NoError(t, a.Err)
	assert.Equal(t, http.StatusOK, a.Response.StatusCode)
	assert.Equal(t, "resumed", a.Body)

	ctx, cancel := context.WithCancel(t.Context())
	answer = continuationtest.Get(ctx, client, srv.URL)
	c = <-parked
	cancel()
	a = <-answer
	assert.ErrorIs(t, a.Err, context.Canceled)
	assert.Nil(t, a.Response)
	<-c.Done() // the server saw the client leave
	assert.ErrorIs(t, c.Resume(), continuation.ErrCompleted)

	a = <-continuationtest.Get(t.Context(), client, "://no scheme")
	assert.Error(t, a.Err)
	assert.Nil(t, a.Response)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, strings.NewReader("posted"))
	require.NoError(t, err)
	a = <-continuationtest.Do(client, req)
	require.NoError(t, a.Err)
	assert.Equal(t, http.StatusCreated, a.Response.StatusCode)
	assert.Equal(t, "posted", a.Body)
}

// fakeTB records what the helpers report, instead of failing the real test.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	failures []string
	cleanups []func()
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

func (f *fakeTB) Error(args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = append(f.failures, fmt.Sprint(args...))
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Error(fmt.Sprintf(format, args...))
	runtime.Goexit()
}

func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// WaitSuspended returns once enough requests are suspended, and fails the
// test when they never are.
func TestWaitSuspended(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parked := make(chan *continuation.Continuation, 2)
		d := continuation.NewDispatcher(parking(parked))
		continuationtest.Start(d, httptest.NewRequest(http.MethodGet, "/", nil))
		continuationtest.Start(d, httptest.NewRequest(http.MethodGet, "/", nil))
		continuationtest.WaitSuspended(t, d, 2)
		assert.Equal(t, 2, d.Suspended())

		tb := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			continuationtest.WaitSuspended(tb, d, 3)
		}()
		<-done
		require.Len(t, tb.failures, 1)
		assert.Equal(t, "continuationtest: 2 requests suspended after a minute, want 3", tb.failures[0])
		d.Drain()
	})
}

// VerifyNoLeaks fails a test that leaves a goroutine behind, and passes
// one that does not.
func TestVerifyNoLeaks(t *testing.T) {
	clean := &fakeTB{TB: t}
	continuationtest.VerifyNoLeaks(clean)
	done := make(chan struct{})
	go func() { <-done }()
	close(done)
	clean.runCleanups()
	assert.Empty(t, clean.failures)

	leaky := &fakeTB{TB: t}
	continuationtest.VerifyNoLeaks(leaky)
	release := make(chan struct{})
	go func() { <-release }()
	leaky.runCleanups()
	close(release)
	require.Len(t, leaky.failures, 1)
	assert.Contains(t, leaky.failures[0], "found unexpected goroutines")
}

// The Dispatcher's own requests through NewUnstartedServer, over HTTP/2
// without TLS, configured before Start.
func TestNewUnstartedServer(t *testing.T) {
	parked := make(chan *continuation.Continuation, 1)
	d := continuation.NewDispatcher(parking(parked))
	srv := continuationtest.NewUnstartedServer(t, d)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	client := &http.Client{Transport: &http.Transport{Protocols: &p}}
	defer client.CloseIdleConnections()

	answer := continuationtest.Get(t.Context(), client, srv.URL)
	c := <-parked
	require.NoError(t, c.Resume())
	select {
	case a := <-answer:
		require.NoError(t, a.Err)
		assert.Equal(t, "HTTP/2.0", a.Response.Proto)
		assert.Equal(t, "resumed", a.Body)
	case <-time.After(30 * time.Second):
		t.Fatal("no answer")
	}
}

// ServeModes: a Detached server's waiting requests detach, an Attached
// server's do not; both answer the same, and a Detached server's end
// waits for its detached requests.
func TestServeModes(t *testing.T) {
	for _, mode := range continuationtest.ServeModes {
		t.Run(mode.String(), func(t *testing.T) {
			parked := make(chan *continuation.Continuation, 1)
			d := continuation.NewDispatcher(parking(parked))
			srv := mode.NewServer(t, d)
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			answer := continuationtest.Get(t.Context(), client, srv.URL)
			c := <-parked
			continuationtest.WaitSuspended(t, d, 1)
			if mode == continuationtest.Detached {
				continuationtest.WaitDetached(t, d, 1)
			} else {
				assert.Zero(t, d.Detached())
			}
			require.NoError(t, c.Resume())
			a := <-answer
			require.NoError(t, a.Err)
			assert.Equal(t, "resumed", a.Body)
		})
	}
}

// WaitDetached fails the test when the requests never detach.
func TestWaitDetachedFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := continuation.NewDispatcher(parking(nil))
		continuationtest.Start(d, httptest.NewRequest(http.MethodGet, "/", nil))
		continuationtest.WaitSuspended(t, d, 1)
		tb := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			continuationtest.WaitDetached(tb, d, 1) // in process: nothing to detach
		}()
		<-done
		require.Len(t, tb.failures, 1)
		assert.Equal(t, "continuationtest: 0 requests detached after a minute, want 1", tb.failures[0])
		d.Drain()
	})
}
