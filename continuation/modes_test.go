package continuation_test

// The behaviour of a request over a real connection, in both ways a
// server serves waiting requests: attached, each on its net/http
// goroutine, and detached from net/http, with no goroutine while it
// waits. Every test here runs in both modes and expects the same; in
// detached mode it also checks that the requests did detach, so that a
// request quietly staying attached cannot pass for a detached one.

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
)

// wire is a Dispatcher served over loopback in one mode, with a client.
type wire struct {
	mode   continuationtest.ServeMode
	d      *continuation.Dispatcher
	url    string
	client *http.Client
}

func newWire(t *testing.T, mode continuationtest.ServeMode, h http.Handler, opts ...continuation.Option) *wire {
	t.Helper()
	d := continuation.NewDispatcher(h, append([]continuation.Option{continuation.WithLogger(discardLogger())}, opts...)...)
	srv := mode.NewServer(t, d)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000}}
	t.Cleanup(client.CloseIdleConnections)
	return &wire{mode: mode, d: d, url: srv.URL, client: client}
}

// waiting waits until n requests wait; in detached mode, detached.
func (w *wire) waiting(t *testing.T, n int) {
	t.Helper()
	continuationtest.WaitSuspended(t, w.d, n)
	if w.mode == continuationtest.Detached {
		continuationtest.WaitDetached(t, w.d, n)
	}
}

// settled waits until no request is suspended or detached: a detached
// request's connection goes back to the server just after its Done.
func (w *wire) settled(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return w.d.Suspended() == 0 && w.d.Detached() == 0 },
		30*time.Second, time.Millisecond, "suspended %d, detached %d", w.d.Suspended(), w.d.Detached())
}

// waitForever suspends every first dispatch without a timeout, for the
// tests of requests that end without a redispatch: it hands each waiting
// request out with its context, and records its end.
type waitForever struct {
	parked       chan parkedRequest
	completed    chan struct{} // closed by the first request's OnComplete
	redispatched atomic.Bool
}

type parkedRequest struct {
	c   *continuation.Continuation
	ctx context.Context
}

func newWaitForever() *waitForever {
	return &waitForever{parked: make(chan parkedRequest, 1), completed: make(chan struct{})}
}

func (h *waitForever) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if !c.IsInitial() {
		h.redispatched.Store(true)
		return
	}
	c.SetTimeout(0)
	c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { close(h.completed) }})
	if err := c.Suspend(); err != nil {
		panic(err)
	}
	select {
	case h.parked <- parkedRequest{c, r.Context()}:
	default:
	}
}

// get sends a GET in the background; the answer arrives on the channel.
func (w *wire) get(ctx context.Context, path string) <-chan continuationtest.Answer {
	return continuationtest.Get(ctx, w.client, w.url+path)
}

// await returns an answer, or fails the test if none comes in 30 s.
func await(t *testing.T, ch <-chan continuationtest.Answer) continuationtest.Answer {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no answer in 30 s")
		return continuationtest.Answer{}
	}
}

// forEachMode runs test in each ServeMode: detached only on Linux, the one
// system with a poller (elsewhere a Detached server's requests wait
// attached, which the attached run covers).
func forEachMode(t *testing.T, test func(t *testing.T, mode continuationtest.ServeMode)) {
	for _, mode := range continuationtest.ServeModes {
		if mode == continuationtest.Detached && runtime.GOOS != "linux" {
			continue
		}
		t.Run(mode.String(), func(t *testing.T) { test(t, mode) })
	}
}

// Suspend, Resume with an attribute, answer; then expiry; then Complete
// from another goroutine that wrote the answer: each ends the wait, once,
// with the listeners told in order.
func TestModesWaitEndings(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		var hist history
		cs := make(chan *continuation.Continuation, 1)
		w := newWire(t, mode, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			switch {
			case c.IsExpired():
				hist.add("expired")
				rw.WriteHeader(http.StatusNoContent)
			case c.IsResumed():
				hist.add("resumed")
				io.WriteString(rw, c.Attribute("msg").(string))
			default:
				c.SetTimeout(0)
				if r.URL.Query().Has("timeout") {
					c.SetTimeout(50 * time.Millisecond)
				}
				c.AddListener(continuation.ListenerFuncs{
					Timeout:  func(*continuation.Continuation) { hist.add("onTimeout") },
					Complete: func(*continuation.Continuation) { hist.add("onComplete") },
					Dispatch: func(*continuation.Continuation) { hist.add("onDispatch") },
				})
				require.NoError(t, c.Suspend())
				cs <- c
			}
		}))

		answer := w.get(t.Context(), "/")
		c := <-cs
		w.waiting(t, 1)
		c.SetAttribute("msg", "hello")
		require.NoError(t, c.Resume())
		r := await(t, answer)
		require.NoError(t, r.Err)
		assert.Equal(t, "hello", r.Body)
		<-c.Done()
		assert.Equal(t, []string{"onDispatch", "resumed", "onComplete"}, hist.get())
		assert.ErrorIs(t, c.Resume(), continuation.ErrCompleted)
		w.settled(t)

		hist = history{}
		answer = w.get(t.Context(), "/?timeout")
		c = <-cs
		r = await(t, answer)
		require.NoError(t, r.Err)
		assert.Equal(t, http.StatusNoContent, r.Response.StatusCode)
		<-c.Done()
		assert.Equal(t, []string{"onTimeout", "onDispatch", "expired", "onComplete"}, hist.get())

		hist = history{}
		answer = w.get(t.Context(), "/")
		c = <-cs
		w.waiting(t, 1)
		go func() { // an event source answers by itself
			rw := c.ResponseWriter()
			rw.Header().Set("Content-Type", "text/plain")
			io.WriteString(rw, "completed")
			assert.NoError(t, c.Complete())
		}()
		r = await(t, answer)
		require.NoError(t, r.Err)
		assert.Equal(t, "completed", r.Body)
		assert.Equal(t, "text/plain", r.Response.Header.Get("Content-Type"))
		<-c.Done()
		assert.Equal(t, []string{"onComplete"}, hist.get())
		w.settled(t)
	})
}

// A stream: each cycle writes an event, flushes it and suspends again. The
// client reads each event before the next Resume, so each was on the wire
// while the request waited.
func TestModesStream(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		cs := make(chan *continuation.Continuation, 1)
		w := newWire(t, mode, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			n, _ := c.Attribute("n").(int)
			if c.IsInitial() {
				rw.Header().Set("Content-Type", "text/event-stream")
				rw.WriteHeader(http.StatusOK)
				require.NoError(t, http.NewResponseController(rw).Flush())
			} else {
				io.WriteString(rw, "data: "+strings.Repeat("x", n)+"\n\n")
				require.NoError(t, http.NewResponseController(rw).Flush())
			}
			if n == 4 {
				return
			}
			c.SetAttribute("n", n+1)
			c.SetTimeout(0)
			require.NoError(t, c.Suspend())
			cs <- c
		}))
		resp, err := w.client.Get(w.url)
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, []string{"chunked"}, resp.TransferEncoding)
		br := bufio.NewReader(resp.Body)
		for n := 1; n <= 4; n++ {
			c := <-cs
			w.waiting(t, 1)
			require.NoError(t, c.Resume())
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "data: "+strings.Repeat("x", n)+"\n", line)
			_, err = br.ReadString('\n')
			require.NoError(t, err)
		}
		rest, err := io.ReadAll(br)
		require.NoError(t, err)
		assert.Empty(t, rest)
	})
}

// A panic in a redispatch: answered 500 if nothing was written; the
// connection is cut if the response had begun (the client sees an error,
// not a truncated response); runtime.Goexit cuts it too. OnComplete runs
// each time and the Dispatcher goes on serving.
func TestModesPanics(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		var completions atomic.Int32
		cs := make(chan *continuation.Continuation, 1)
		w := newWire(t, mode, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsInitial() {
				if r.URL.Path == "/ok" {
					io.WriteString(rw, "ok")
					return
				}
				c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { completions.Add(1) }})
				if r.URL.Path == "/started" {
					rw.WriteHeader(http.StatusOK)
					io.WriteString(rw, "part")
					http.NewResponseController(rw).Flush()
				}
				c.SetTimeout(0)
				require.NoError(t, c.Suspend())
				cs <- c
				return
			}
			switch r.URL.Path {
			case "/goexit":
				io.WriteString(rw, "half")
				runtime.Goexit()
			case "/abort":
				panic(http.ErrAbortHandler)
			}
			panic("boom")
		}), continuation.WithWorkers(1))
		// A request whose connection is cut before anything was sent on
		// it would be sent again on a new one: no keep-alive here.
		w.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

		for _, tt := range []struct {
			path string
			code int // 0: the connection is cut
		}{
			{"/boom", http.StatusInternalServerError},
			{"/started", 0},
			{"/goexit", 0},
			{"/abort", 0},
		} {
			answer := w.get(t.Context(), tt.path)
			c := <-cs
			w.waiting(t, 1)
			require.NoError(t, c.Resume())
			r := await(t, answer)
			if tt.code == 0 {
				assert.Error(t, r.Err, tt.path)
			} else {
				require.NoError(t, r.Err, tt.path)
				assert.Equal(t, tt.code, r.Response.StatusCode, tt.path)
			}
			<-c.Done()
			r = await(t, w.get(t.Context(), "/ok"))
			require.NoError(t, r.Err)
			assert.Equal(t, "ok", r.Body, "served after %s", tt.path)
		}
		assert.Equal(t, int32(4), completions.Load())
		w.settled(t)
	})
}

// A client that goes away while its request waits ends the request: no
// redispatch, OnComplete, Done, and r.Context() is cancelled, for code
// that kept it from the first dispatch.
func TestModesDisconnect(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		h := newWaitForever()
		w := newWire(t, mode, h)
		ctx, cancel := context.WithCancel(t.Context())
		answer := w.get(ctx, "/")
		p := <-h.parked
		w.waiting(t, 1)
		select {
		case <-p.ctx.Done():
			t.Fatal("the request's context was cancelled while the client waited")
		default:
		}
		cancel()
		assert.ErrorIs(t, await(t, answer).Err, context.Canceled)
		select {
		case <-p.c.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the server did not notice the client went away")
		}
		select {
		case <-p.ctx.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the request's context was not cancelled")
		}
		assert.False(t, h.redispatched.Load())
		assert.ErrorIs(t, p.c.Resume(), continuation.ErrCompleted)
		w.settled(t)
	})
}

// Shutdown answers every waiting request through its expiry dispatch and
// returns once they have all finished; a detached one's connection closes
// after the answer, as net/http's do while it shuts down.
func TestModesShutdown(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		const n = 20
		w := newWire(t, mode, &waiters{}, continuation.WithDefaultTimeout(0))
		var answers []<-chan continuationtest.Answer
		for range n {
			answers = append(answers, w.get(t.Context(), "/"))
		}
		w.waiting(t, n)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		require.NoError(t, w.d.Shutdown(ctx))
		for _, a := range answers {
			r := await(t, a)
			require.NoError(t, r.Err)
			assert.Equal(t, http.StatusNoContent, r.Response.StatusCode)
		}
		assert.Zero(t, w.d.Suspended())
		assert.Zero(t, w.d.Detached(), "Shutdown returned with requests detached")
		r := await(t, w.get(t.Context(), "/"))
		require.NoError(t, r.Err)
		assert.Equal(t, http.StatusServiceUnavailable, r.Response.StatusCode)
	})
}

// A POST whose body the Dispatcher read ahead waits like a GET (and, in
// detached mode, detaches: its body is at its end); a redispatch reads
// what the first dispatch left of it.
func TestModesBodyReadAhead(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		cs := make(chan *continuation.Continuation, 1)
		w := newWire(t, mode, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			c := continuation.FromRequest(r)
			if c.IsResumed() {
				rest, err := io.ReadAll(r.Body)
				assert.NoError(t, err)
				io.WriteString(rw, c.Attribute("head").(string)+"|"+string(rest))
				return
			}
			head := make([]byte, 3)
			_, err := io.ReadFull(r.Body, head)
			require.NoError(t, err)
			c.SetAttribute("head", string(head))
			require.NoError(t, c.Suspend())
			cs <- c
		}))
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, w.url, strings.NewReader("payload"))
		require.NoError(t, err)
		answer := continuationtest.Do(w.client, req)
		c := <-cs
		w.waiting(t, 1)
		require.NoError(t, c.Resume())
		r := await(t, answer)
		require.NoError(t, r.Err)
		assert.Equal(t, "pay|load", r.Body)
	})
}

// The races, over the wire: each suspension is ended by exactly one of
// Resume, Complete, expiry, the client leaving and Shutdown; the losers
// get an error; there is one redispatch at most and one OnComplete.
func TestModesRaces(t *testing.T) {
	const rounds = 50
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		t.Run("resume/expiry", func(t *testing.T) {
			s := newRaceServer(time.Millisecond)
			w := newWire(t, mode, s)
			for i := range rounds {
				s.redispatch.Store(0)
				s.timeouts.Store(0)
				s.completions.Store(0)
				answer := w.get(t.Context(), "/")
				c := <-s.cs
				time.Sleep(time.Duration(i%10) * 200 * time.Microsecond)
				err := c.Resume()
				r := await(t, answer)
				require.NoError(t, r.Err)
				<-c.Done()
				require.Equal(t, int32(1), s.redispatch.Load())
				require.Equal(t, int32(1), s.completions.Load())
				requireOneEnding(t, err, r.Body, s.timeouts.Load())
			}
		})
		t.Run("resume/complete", func(t *testing.T) {
			s := newRaceServer(0)
			w := newWire(t, mode, s)
			for range rounds {
				s.redispatch.Store(0)
				answer := w.get(t.Context(), "/")
				c := <-s.cs
				resumeErr, completeErr := together(c.Resume, c.Complete)
				r := await(t, answer)
				require.NoError(t, r.Err)
				requireResumeOrComplete(t, resumeErr, completeErr, r.Body, s.redispatch.Load())
			}
		})
		t.Run("resume/disconnect", func(t *testing.T) {
			s := newRaceServer(0)
			w := newWire(t, mode, s)
			for i := range rounds {
				s.redispatch.Store(0)
				s.completions.Store(0)
				ctx, cancel := context.WithCancel(t.Context())
				answer := w.get(ctx, "/")
				c := <-s.cs
				if i%2 == 0 {
					w.waiting(t, 1)
				}
				var resumeErr error
				var wg sync.WaitGroup
				wg.Go(func() { resumeErr = c.Resume() })
				wg.Go(cancel)
				wg.Wait()
				await(t, answer)
				<-c.Done()
				require.Equal(t, int32(1), s.completions.Load())
				if resumeErr == nil {
					require.Equal(t, int32(1), s.redispatch.Load())
				} else {
					require.Zero(t, s.redispatch.Load())
					requireLost(t, resumeErr)
				}
			}
			w.settled(t)
		})
	})
}

// Resume racing Shutdown, over the wire: the request is answered once, by
// whichever won.
func TestModesResumeRacesShutdown(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		for range 20 {
			s := newRaceServer(0)
			w := newWire(t, mode, s)
			answer := w.get(t.Context(), "/")
			c := <-s.cs
			w.waiting(t, 1)
			resumeErr, shutdownErr := together(c.Resume, func() error { return w.d.Shutdown(t.Context()) })
			r := await(t, answer)
			require.NoError(t, r.Err)
			require.NoError(t, shutdownErr)
			require.Equal(t, int32(1), s.redispatch.Load())
			requireOneEnding(t, resumeErr, r.Body, s.timeouts.Load())
		}
	})
}

// http.Server.WriteTimeout counts from the request's arrival in both
// modes: an answer written after it fails, and the client sees the
// connection end without a response.
func TestModesWriteTimeout(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		cs := make(chan *continuation.Continuation, 1)
		d := continuation.NewDispatcher(suspendEach(t, cs, func(rw http.ResponseWriter, _ *continuation.Continuation) {
			io.WriteString(rw, "too late")
		}))
		srv := mode.NewUnstartedServer(t, d)
		srv.Config.WriteTimeout = 100 * time.Millisecond
		srv.Start()
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		w := &wire{mode: mode, d: d, url: srv.URL, client: client}
		answer := w.get(t.Context(), "/")
		c := <-cs
		w.waiting(t, 1)
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, c.Resume())
		assert.Error(t, await(t, answer).Err)
	})
}
