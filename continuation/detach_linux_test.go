package continuation_test

// Detached requests over loopback: what only a detached request does
// (hand its connection back, keep pipelined bytes, hold no goroutine),
// and what it must do exactly as net/http would (the bytes of the
// response).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/continuation/continuationtest"
	"github.com/cometkit/cometkit/internal/testproc"
)

// rawConn is an HTTP/1.1 connection driven by hand, that records the
// exact bytes of each response it reads.
type rawConn struct {
	net.Conn
	r      *bufio.Reader
	raw    bytes.Buffer
	server *httptest.Server // the one it was dialled to, if known
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return newRawConn(conn)
}

func newRawConn(conn net.Conn) *rawConn {
	rc := &rawConn{Conn: conn}
	// One byte at a time, so that what a response is made of is exactly
	// what was read for it.
	rc.r = bufio.NewReader(io.TeeReader(oneByteReader{conn}, &rc.raw))
	return rc
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

func (rc *rawConn) send(t *testing.T, requests string) {
	t.Helper()
	_, err := io.WriteString(rc.Conn, requests)
	require.NoError(t, err)
}

// response reads one response to a request of method, with the
// informational responses before it, and returns their bytes and its
// body.
func (rc *rawConn) response(t *testing.T, method string) (raw string, resp *http.Response, body string) {
	t.Helper()
	rc.raw.Reset()
	require.NoError(t, rc.SetReadDeadline(time.Now().Add(30*time.Second)))
	resp, err := http.ReadResponse(rc.r, &http.Request{Method: method})
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode <= 199 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(rc.r, &http.Request{Method: method}) // after an informational response
	}
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	return rc.raw.String(), resp, string(b)
}

// closed reports whether the server closed the connection (nothing more
// comes before EOF).
func (rc *rawConn) closed(t *testing.T) bool {
	t.Helper()
	require.NoError(t, rc.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err := rc.r.ReadByte()
	return errors.Is(err, io.EOF)
}

func getRequest(path string, headers ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: test\r\n" + strings.Join(headers, "") + "\r\n"
}

var dateLine = regexp.MustCompile(`(?m)^Date: .*\r$`)

// waitForOne is a handler that suspends every first dispatch (running
// first, if set, for what it writes before suspending) and, resumed, runs
// then: the test steers one request at a time.
type waitForOne struct {
	cs          chan *continuation.Continuation
	first, then func(w http.ResponseWriter, r *http.Request)
}

func (h *waitForOne) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := continuation.FromRequest(r)
	if !c.IsInitial() {
		h.then(w, r)
		return
	}
	if r.URL.Path == "/now" {
		io.WriteString(w, "now")
		return
	}
	if h.first != nil {
		h.first(w, r)
	}
	c.SetTimeout(0)
	if err := c.Suspend(); err != nil {
		panic(err)
	}
	h.cs <- c
}

// waitDetached serves h with detaching, sends a GET on a connection of
// its own, and returns once the request waits detached.
func waitDetached(t *testing.T, h *waitForOne) (*continuation.Dispatcher, *rawConn, *continuation.Continuation) {
	t.Helper()
	d := continuation.NewDispatcher(h)
	srv := continuationtest.Detached.NewServer(t, d)
	rc := dialRaw(t, srv.Listener.Addr().String())
	rc.server = srv
	rc.send(t, getRequest("/"))
	c := <-h.cs
	continuationtest.WaitDetached(t, d, 1)
	return d, rc, c
}

// The response to a detached request is byte for byte the one net/http
// writes for the same handler attached (but for the Date), in every
// framing: a Content-Length computed or set, chunked, HEAD, no body, 1xx,
// trailers, Connection: close asked or set, a body ended by closing. A
// keep-alive connection then carries another request; the others close.
func TestDetachedWireFormat(t *testing.T) {
	long := strings.Repeat("x", 3000)
	tests := []struct {
		name    string
		request string
		first   func(w http.ResponseWriter, r *http.Request)
		then    func(w http.ResponseWriter, r *http.Request)
		close   bool // the connection closes after the response
		body    string
	}{
		{name: "short body: Content-Length", then: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}, body: "hello"},
		{name: "long body: chunked", then: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, long)
		}, body: long},
		{name: "Content-Length set", then: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Content-Type", "text/x-test")
			io.WriteString(w, "hello")
		}, body: "hello"},
		{name: "flushed: chunks", then: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "a")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "bc")
		}, body: "abc"},
		{name: "nothing written", then: func(w http.ResponseWriter, r *http.Request) {}},
		{name: "HEAD, body written", request: "HEAD", then: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}},
		{name: "HEAD, nothing written", request: "HEAD", then: func(w http.ResponseWriter, r *http.Request) {}},
		{name: "204", then: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "7")
			w.WriteHeader(http.StatusNoContent)
		}},
		{name: "304", then: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Etag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		}},
		{name: "103, then 200", then: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "<html>")
		}, body: "<html>"},
		{name: "a status without a text", then: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(599)
			io.WriteString(w, "odd")
		}, body: "odd"},
		{name: "http.Error", then: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "nope", http.StatusTeapot)
		}, body: "nope\n"},
		{name: "trailers", then: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "data")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		}, body: "data"},
		{name: "Connection: close asked", request: "close", then: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "bye")
		}, close: true, body: "bye"},
		{name: "Connection: close set", then: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		}, close: true, body: "bye"},
		{name: "Transfer-Encoding: identity", then: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Transfer-Encoding", "identity")
			io.WriteString(w, "until close")
		}, close: true, body: "until close"},
		{name: "a stream begun before the wait", first: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
		}, then: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "data: 1\n\n")
		}, body: "data: 1\n\n"},
		{name: "a length begun before the wait", first: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "6")
			io.WriteString(w, "abc")
			http.NewResponseController(w).Flush()
		}, then: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "def")
		}, body: "abcdef"},
		{name: "HEAD begun before the wait", request: "HEAD", first: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "6")
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
		}, then: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "abcdef")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			responses := map[continuationtest.ServeMode]string{}
			for _, mode := range continuationtest.ServeModes {
				h := &waitForOne{cs: make(chan *continuation.Continuation, 1), first: tt.first, then: tt.then}
				d := continuation.NewDispatcher(h)
				srv := mode.NewServer(t, d)
				rc := dialRaw(t, srv.Listener.Addr().String())
				method, request := http.MethodGet, getRequest("/")
				switch tt.request {
				case "HEAD":
					method, request = http.MethodHead, "HEAD / HTTP/1.1\r\nHost: test\r\n\r\n"
				case "close":
					request = getRequest("/", "Connection: close\r\n")
				}
				rc.send(t, request)
				c := <-h.cs
				if mode == continuationtest.Detached {
					continuationtest.WaitDetached(t, d, 1)
				}
				require.NoError(t, c.Resume())
				raw, resp, body := rc.response(t, method)
				responses[mode] = dateLine.ReplaceAllString(raw, "Date: (now)\r")
				assert.Equal(t, tt.body, body, mode.String())
				if tt.close {
					assert.True(t, rc.closed(t), "%s: the connection stays open", mode)
					continue
				}
				assert.False(t, resp.Close, mode.String())
				rc.send(t, getRequest("/now"))
				_, _, body = rc.response(t, http.MethodGet)
				assert.Equal(t, "now", body, "%s: the next request on the connection", mode)
			}
			assert.Equal(t, responses[continuationtest.Attached], responses[continuationtest.Detached])
		})
	}
}

// A response begun before the wait with a body that net/http had not yet
// sent: detaching sends it, chunked (net/http would have made it a
// Content-Length had the request ended with it in its buffer), and the
// rest follows in the same framing.
func TestDetachedUnflushedBeforeWait(t *testing.T) {
	h := &waitForOne{
		cs:    make(chan *continuation.Continuation, 1),
		first: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "abc") },
		then:  func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "def") },
	}
	_, rc, c := waitDetached(t, h)
	require.NoError(t, c.Resume())
	raw, resp, body := rc.response(t, http.MethodGet)
	assert.Equal(t, "abcdef", body)
	assert.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	assert.True(t, strings.HasSuffix(raw, "\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"), raw)
}

// A long-poll client keeps its connection: every poll after the first
// comes on the connection a detached response handed back, which net/http
// serves as it serves any connection.
func TestDetachedKeepAlive(t *testing.T) {
	const clients, polls = 20, 5
	ws := &waiters{}
	d := continuation.NewDispatcher(ws, continuation.WithDefaultTimeout(0))
	srv := continuationtest.Detached.NewServer(t, d)
	var dials atomic.Int32
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: clients,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}}
	defer client.CloseIdleConnections()
	for round := range polls {
		answers := make([]<-chan continuationtest.Answer, clients)
		for i := range answers {
			answers[i] = continuationtest.Get(t.Context(), client, srv.URL)
		}
		require.Eventually(t, func() bool { return ws.len() == clients && d.Detached() == clients },
			30*time.Second, time.Millisecond, "round %d: waiting %d, detached %d", round, ws.len(), d.Detached())
		msg := fmt.Sprint("message ", round)
		require.Equal(t, clients, ws.broadcast(msg))
		for _, answer := range answers {
			a := <-answer
			require.NoError(t, a.Err)
			assert.Equal(t, msg, a.Body)
		}
	}
	assert.Equal(t, int32(clients), dials.Load(), "TCP connections dialled")
}

// A client that hangs up while its request is detached is noticed at
// once: the request ends as a disconnect (OnComplete, no redispatch, its
// context cancelled), and nothing of it is left registered, in the
// Dispatcher or in the kernel's epoll set.
func TestDetachedHangUp(t *testing.T) {
	h := newWaitForever()
	d := continuation.NewDispatcher(h)
	srv := continuationtest.Detached.NewServer(t, d)
	rc := dialRaw(t, srv.Listener.Addr().String())
	rc.send(t, getRequest("/"))
	p := <-h.parked
	continuationtest.WaitDetached(t, d, 1)
	assert.Equal(t, 1, continuation.EpollWatched(d))
	assert.NoError(t, p.ctx.Err(), "the context of a detached request, net/http's being cancelled")

	rc.Close()
	select {
	case <-h.completed:
	case <-time.After(10 * time.Second):
		t.Fatal("the hang-up was not noticed")
	}
	<-p.c.Done()
	assert.ErrorIs(t, p.ctx.Err(), context.Canceled)
	assert.False(t, h.redispatched.Load())
	require.Eventually(t, func() bool { return d.Detached() == 0 }, 10*time.Second, time.Millisecond)
	assert.Zero(t, d.Suspended())
	assert.Zero(t, continuation.EpollWatched(d), "connections left in the epoll set")
}

// A detached response whose writes fail (here a client that reads nothing,
// past the write deadline the handler set) keeps none of its buffers once
// the request has ended: nothing in them can be sent any more.
func TestDetachedFailedWriteKeepsNoBuffer(t *testing.T) {
	big := strings.Repeat("x", 32<<20) // more than the sockets hold
	parked := make(chan *continuation.Continuation, 1)
	d := continuation.NewDispatcher(suspendEach(t, parked, func(w http.ResponseWriter, _ *continuation.Continuation) {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		io.WriteString(w, big)
	}))
	srv := continuationtest.Detached.NewServer(t, d)
	conn, err := testproc.DialNonReader(srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, getRequest("/"))
	require.NoError(t, err)
	c := <-parked
	continuationtest.WaitDetached(t, d, 1)
	require.NoError(t, c.Resume())
	require.Eventually(t, func() bool { return d.Detached() == 0 }, 10*time.Second, time.Millisecond, "the request ended")
	assert.False(t, continuation.HoldsWriteBuffers(c), "buffers kept by a request whose connection failed")
}

// Pipelining: a request sent right behind a long-poll (in the same
// packet, or while the long-poll waits) is answered after it, in order,
// on the connection handed back.
func TestDetachedPipelining(t *testing.T) {
	for _, when := range []string{"with the long-poll", "while it waits"} {
		t.Run(when, func(t *testing.T) {
			h := &waitForOne{
				cs:   make(chan *continuation.Continuation, 1),
				then: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "polled") },
			}
			d := continuation.NewDispatcher(h)
			srv := continuationtest.Detached.NewServer(t, d)
			rc := dialRaw(t, srv.Listener.Addr().String())
			if when == "with the long-poll" {
				rc.send(t, getRequest("/poll")+getRequest("/now"))
			} else {
				rc.send(t, getRequest("/poll"))
			}
			c := <-h.cs
			continuationtest.WaitDetached(t, d, 1)
			if when == "while it waits" {
				rc.send(t, getRequest("/now"))
			}
			// Nothing is answered while the long-poll waits.
			require.NoError(t, rc.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
			_, err := rc.r.ReadByte()
			require.True(t, errors.Is(err, context.DeadlineExceeded) || errorIsTimeout(err), "read %v", err)
			assert.Zero(t, rc.raw.Len())

			require.NoError(t, c.Resume())
			_, _, body := rc.response(t, http.MethodGet)
			assert.Equal(t, "polled", body)
			_, _, body = rc.response(t, http.MethodGet)
			assert.Equal(t, "now", body)
		})
	}
}

func errorIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// The goroutines of 5,000 detached requests: none. Then Shutdown answers
// every one (its connection closing after the answer), and the
// goroutines are back to the count before the server started.
func TestDetachedHoldNoGoroutine(t *testing.T) {
	const n = 5000 // two descriptors each in this process, of 20,000
	continuationtest.VerifyNoLeaks(t)
	baseline := runtime.NumGoroutine()
	ws := &waiters{}
	d := continuation.NewDispatcher(ws, continuation.WithDefaultTimeout(0))
	srv := continuationtest.Detached.NewServer(t, d)
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, srv.Listener.Addr().String())
		conns[i].send(t, getRequest("/"))
	}
	continuationtest.WaitDetached(t, d, n)
	// The server's own: its accept loop, the listener's, the poller's.
	const constant = 3
	waitGoroutines(t, baseline+constant, fmt.Sprintf("with %d requests detached", n))

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	require.NoError(t, d.Shutdown(ctx))
	for _, rc := range conns {
		_, resp, _ := rc.response(t, http.MethodGet)
		assert.Equal(t, http.StatusNoContent, resp.StatusCode)
		assert.True(t, resp.Close, "Connection: close while shutting down")
		assert.True(t, rc.closed(t))
	}
	assert.Zero(t, d.Detached())
	srv.Close()
	waitGoroutines(t, baseline, "after Shutdown and Close")
}

// waitGoroutines waits until at most n goroutines run (those of requests
// that ended take a moment to exit), and fails the test with them all if
// that takes 30 s.
func waitGoroutines(t *testing.T, n int, when string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); runtime.NumGoroutine() > n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines %s, want at most %d:\n%s", runtime.NumGoroutine(), when, n, buf[:runtime.Stack(buf, true)])
		}
	}
}

// Why a request stayed attached, counted by reason; each of these waits
// with its net/http goroutine, and the contract holds for it all the same.
func TestAttachedWaitReasons(t *testing.T) {
	type setup struct {
		name   string
		reason string
		wrap   func(h http.Handler) http.Handler
		mode   continuationtest.ServeMode
		listen func(net.Listener) net.Listener // what DetachingListener wraps, if set
		do     func(t *testing.T, url string, client *http.Client) *http.Response
	}
	getIt := func(t *testing.T, url string, client *http.Client) *http.Response {
		resp, err := client.Get(url)
		require.NoError(t, err)
		return resp
	}
	for _, tt := range []setup{
		{name: "not through a DetachingListener", reason: "listener", mode: continuationtest.Attached, do: getIt},
		{name: "HTTP/1.0", reason: "protocol", mode: continuationtest.Detached,
			do: func(t *testing.T, url string, _ *http.Client) *http.Response {
				conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
				require.NoError(t, err)
				t.Cleanup(func() { conn.Close() })
				io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				require.NoError(t, err)
				return resp
			}},
		{name: "a context deadline", reason: "deadline", mode: continuationtest.Detached, do: getIt,
			wrap: func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ctx, cancel := context.WithTimeout(r.Context(), time.Hour)
					defer cancel()
					h.ServeHTTP(w, r.WithContext(ctx))
				})
			}},
		{name: "a writer without Unwrap", reason: "writer", mode: continuationtest.Detached, do: getIt,
			wrap: func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					h.ServeHTTP(struct{ http.ResponseWriter }{w}, r)
				})
			}},
		{name: "a body not read to its end", reason: "body", mode: continuationtest.Detached,
			do: func(t *testing.T, url string, client *http.Client) *http.Response {
				resp, err := client.Post(url+"/unread", "text/plain", strings.NewReader(strings.Repeat("x", 100)))
				require.NoError(t, err)
				return resp
			}},
		{name: "a listener whose connections give no socket", reason: "connection", mode: continuationtest.Attached, do: getIt,
			listen: func(ln net.Listener) net.Listener { return wrappingListener{ln} }},
		{name: "a Transfer-Encoding of the handler's", reason: "framing", mode: continuationtest.Detached,
			do: func(t *testing.T, url string, client *http.Client) *http.Response {
				resp, err := client.Get(url + "/te")
				require.NoError(t, err)
				return resp
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			cs := make(chan *continuation.Continuation, 1)
			var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c := continuation.FromRequest(r)
				if !c.IsInitial() {
					io.WriteString(w, "resumed")
					return
				}
				switch r.URL.Path {
				case "/te":
					w.Header().Set("Transfer-Encoding", "chunked")
					http.NewResponseController(w).Flush()
				}
				c.SetTimeout(0)
				require.NoError(t, c.Suspend())
				cs <- c
			})
			d := continuation.NewDispatcher(h, continuation.WithMetrics(reg), continuation.WithBodyBuffer(10))
			var served http.Handler = d
			if tt.wrap != nil {
				served = tt.wrap(d)
			}
			srv := tt.mode.NewUnstartedServer(t, d)
			srv.Config.Handler = served
			if tt.listen != nil {
				srv.Listener = continuation.DetachingListener(srv.Config, tt.listen(srv.Listener))
			}
			srv.Start()
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			answer := make(chan *http.Response, 1)
			go func() { answer <- tt.do(t, srv.URL, client) }()
			c := <-cs
			require.Eventually(t, func() bool {
				return metricValue(t, reg, "cometkit_attached_waits_total", "reason", tt.reason) == 1
			}, 30*time.Second, time.Millisecond, "waits counted with reason %q", tt.reason)
			assert.Zero(t, d.Detached())
			require.NoError(t, c.Resume())
			resp := <-answer
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, "resumed", strings.TrimSpace(string(b)))
		})
	}
}

// A poller that cannot start (out of descriptors, say) leaves requests
// waiting attached, is tried again a second later rather than by each
// request that waits meanwhile, and is logged once; once it starts,
// requests detach again.
func TestPollerStartFails(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var log testproc.Buffer
	cs := make(chan *continuation.Continuation, 8)
	d := continuation.NewDispatcher(suspendEach(t, cs, nil),
		continuation.WithMetrics(reg), continuation.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	srv := continuationtest.Detached.NewServer(t, d)
	tries, restore := continuation.FailPollerStart(errors.New("epoll_create1: too many open files"))
	defer restore()

	var answers []<-chan continuationtest.Answer
	wait := func() {
		answers = append(answers, continuationtest.Get(t.Context(), srv.Client(), srv.URL))
		<-cs
	}
	for range 5 {
		wait()
	}
	require.Eventually(t, func() bool {
		return metricValue(t, reg, "cometkit_attached_waits_total", "reason", "poller") == 5
	}, 10*time.Second, time.Millisecond)
	assert.Equal(t, 1, tries(), "tried again within the second")
	assert.Equal(t, 1, strings.Count(log.String(), "cannot watch connections"), "logged once")

	restore()
	time.Sleep(1100 * time.Millisecond) // past the retry's second
	wait()
	continuationtest.WaitDetached(t, d, 1)
	d.Drain()
	for _, a := range answers {
		<-a
	}
}

// wrappingListener wraps its connections in a type of its own, as
// netutil.LimitListener does: one that gives no file descriptor.
type wrappingListener struct{ net.Listener }

func (l wrappingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{conn}, nil
}

// The request's context, detached: alive while the request waits (net/http
// cancelled its own when it let the connection go), with its values;
// contexts derived from it in the first dispatch alive too; all cancelled
// when the request ends.
func TestDetachedContext(t *testing.T) {
	type key struct{}
	type kept struct {
		c              *continuation.Continuation
		ctx, derived   context.Context
		seenInRedisp   chan error
		serverInRedisp chan bool
	}
	ks := make(chan *kept, 1)
	var k *kept
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := continuation.FromRequest(r)
		if !c.IsInitial() {
			k.seenInRedisp <- r.Context().Err()
			_, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
			k.serverInRedisp <- ok
			io.WriteString(w, r.Context().Value(key{}).(string))
			return
		}
		derived, cancel := context.WithCancel(r.Context())
		_ = cancel // cancelled with its parent
		c.SetTimeout(0)
		require.NoError(t, c.Suspend())
		ks <- &kept{c: c, ctx: r.Context(), derived: derived, seenInRedisp: make(chan error, 1), serverInRedisp: make(chan bool, 1)}
	}))
	srv := continuationtest.Detached.NewUnstartedServer(t, d)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, "value")))
	})
	srv.Start()
	rc := dialRaw(t, srv.Listener.Addr().String())
	rc.send(t, getRequest("/"))
	k = <-ks
	continuationtest.WaitDetached(t, d, 1)
	time.Sleep(10 * time.Millisecond) // net/http's goroutine has gone, cancelling its context
	assert.NoError(t, k.ctx.Err())
	assert.NoError(t, k.derived.Err())
	assert.NoError(t, context.Cause(k.ctx))
	select {
	case <-k.derived.Done():
		t.Fatal("a context derived in the first dispatch was cancelled")
	default:
	}
	require.NoError(t, k.c.Resume())
	_, _, body := rc.response(t, http.MethodGet)
	assert.Equal(t, "value", body)
	assert.NoError(t, <-k.seenInRedisp)
	assert.True(t, <-k.serverInRedisp)
	<-k.c.Done()
	assert.ErrorIs(t, k.ctx.Err(), context.Canceled)
	assert.ErrorIs(t, k.derived.Err(), context.Canceled)
}

// A redispatch may hijack a detached connection, as it may net/http's:
// the header the response had is sent, the rest is the handler's, and the
// Dispatcher neither writes to the connection nor closes it.
func TestDetachedHijack(t *testing.T) {
	hijacked := make(chan net.Conn, 1)
	h := &waitForOne{
		cs: make(chan *continuation.Continuation, 1),
		then: func(w http.ResponseWriter, r *http.Request) {
			conn, brw, err := http.NewResponseController(w).Hijack()
			require.NoError(t, err)
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\nhello")
			require.NoError(t, brw.Flush())
			hijacked <- conn
		},
	}
	d, rc, c := waitDetached(t, h)
	require.NoError(t, c.Resume())
	conn := <-hijacked
	defer conn.Close()
	<-c.Done()
	require.Eventually(t, func() bool { return d.Detached() == 0 }, 10*time.Second, time.Millisecond)
	assert.Zero(t, continuation.EpollWatched(d))
	_, resp, _ := rc.response(t, http.MethodGet)
	assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	got := make([]byte, 5)
	_, err := io.ReadFull(rc.r, got)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	_, err = conn.Write([]byte("still mine"))
	assert.NoError(t, err, "the Dispatcher closed a hijacked connection")
}

// A handed-back connection is new to the Server (ConnState) and is read
// under its ReadHeaderTimeout: one that stays idle after its detached
// response is closed by net/http as a new connection that sends nothing
// would be.
func TestDetachedHandBackIsNewConnection(t *testing.T) {
	h := &waitForOne{
		cs:   make(chan *continuation.Continuation, 1),
		then: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "polled") },
	}
	d := continuation.NewDispatcher(h)
	srv := httptest.NewUnstartedServer(d)
	var mu sync.Mutex
	var states []http.ConnState
	// Set before DetachingListener, which wraps it.
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		states = append(states, s)
		mu.Unlock()
	}
	srv.Config.ReadHeaderTimeout = 200 * time.Millisecond
	srv.Config.IdleTimeout = time.Hour
	srv.Listener = continuation.DetachingListener(srv.Config, srv.Listener)
	srv.Start()
	t.Cleanup(func() {
		d.Drain()
		srv.Close()
	})
	rc := dialRaw(t, srv.Listener.Addr().String())
	rc.send(t, getRequest("/"))
	c := <-h.cs
	continuationtest.WaitDetached(t, d, 1)
	require.NoError(t, c.Resume())
	rc.response(t, http.MethodGet)
	assert.True(t, rc.closed(t), "the idle connection was not closed")
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateHijacked, http.StateNew, http.StateClosed}
	assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(want, states)
	}, 10*time.Second, time.Millisecond, "connection states")
}

// DetachingListener: connections handed back come out of Accept in order;
// after Close, Accept fails, the accept goroutine is gone (the leak check
// at the end of the package), and a connection handed back is closed.
func TestDetachingListenerClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{}
	dl := continuation.DetachingListener(srv, ln)
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := dl.Accept()
		if err == nil {
			accepted <- conn
		}
		close(accepted)
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	conn := <-accepted
	require.NotNil(t, conn)
	conn.Close()
	require.NoError(t, dl.Close())
	_, err = dl.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	assert.NoError(t, dl.Close(), "a second Close")
}

// BaseContext: DetachingListener keeps the one the Server had.
func TestDetachingListenerKeepsBaseContext(t *testing.T) {
	type key struct{}
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Context().Value(key{}).(string))
	}))
	srv := httptest.NewUnstartedServer(d)
	srv.Config.BaseContext = func(net.Listener) context.Context { return context.WithValue(context.Background(), key{}, "base") }
	srv.Listener = continuation.DetachingListener(srv.Config, srv.Listener)
	srv.Listener = continuation.DetachingListener(srv.Config, srv.Listener) // twice: changed once
	srv.Start()
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	assert.Equal(t, "base", string(b))
	srv.Client().CloseIdleConnections()
}

// TLS: an HTTP/1.1 client's requests detach and keep their connection
// (one handshake for every poll); an HTTP/2 client's wait attached, and
// say why; a pipelined request behind a detached one cannot go back on a
// *tls.Conn, so that connection closes after its response.
func TestDetachedTLS(t *testing.T) {
	cert, roots := testCertificate(t)
	reg := prometheus.NewPedanticRegistry()
	h := &waitForOne{
		cs:   make(chan *continuation.Continuation, 1),
		then: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "polled "+r.Proto) },
	}
	d := continuation.NewDispatcher(h, continuation.WithMetrics(reg))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	// NextProtos without h2: ServeTLS still offers HTTP/2, as net/http's
	// does.
	srv := &http.Server{Handler: d, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"x-other"}}}
	served := make(chan error, 1)
	go func() { served <- continuation.ServeTLS(srv, ln, "", "") }()
	t.Cleanup(func() {
		d.Drain()
		srv.Close()
		assert.ErrorIs(t, <-served, http.ErrServerClosed)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		assert.NoError(t, d.Shutdown(ctx))
	})
	url := "https://" + ln.Addr().String()

	var dials atomic.Int32
	dialer := &net.Dialer{}
	http1 := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}}
	defer http1.CloseIdleConnections()
	for range 3 {
		answer := continuationtest.Get(t.Context(), http1, url)
		c := <-h.cs
		continuationtest.WaitDetached(t, d, 1)
		require.NoError(t, c.Resume())
		a := <-answer
		require.NoError(t, a.Err)
		assert.Equal(t, "polled HTTP/1.1", a.Body)
	}
	assert.Equal(t, int32(1), dials.Load(), "connections (handshakes) for three polls")
	// The last poll's request ends just after its client has the answer.
	require.Eventually(t, func() bool { return d.Detached() == 0 }, 10*time.Second, time.Millisecond)

	http2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	defer http2.CloseIdleConnections()
	answer := continuationtest.Get(t.Context(), http2, url)
	c := <-h.cs
	require.Eventually(t, func() bool { return metricValue(t, reg, "cometkit_attached_waits_total", "reason", "protocol") == 1 },
		30*time.Second, time.Millisecond)
	assert.Zero(t, d.Detached())
	require.NoError(t, c.Resume())
	a := <-answer
	require.NoError(t, a.Err)
	assert.Equal(t, "polled HTTP/2.0", a.Body)

	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	defer conn.Close()
	rc := newRawConn(conn)
	rc.send(t, getRequest("/poll")+getRequest("/now"))
	c = <-h.cs
	require.Eventually(t, func() bool { return d.Detached() == 1 }, 30*time.Second, time.Millisecond)
	require.NoError(t, c.Resume())
	_, resp, body := rc.response(t, http.MethodGet)
	assert.Equal(t, "polled HTTP/1.1", body)
	assert.True(t, resp.Close, "Connection: close, for the pipelined request behind it")
	assert.True(t, rc.closed(t))
}

// testCertificate makes a certificate for 127.0.0.1, and the pool that
// trusts it.
func testCertificate(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "continuation test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// A client that closes its sending side while its request waits (one
// that still reads) ends the wait as a disconnect, and gets what net/http
// sends then in both modes: the response as the request left it, ended.
func TestDetachedHalfClose(t *testing.T) {
	responses := map[continuationtest.ServeMode]string{}
	for _, mode := range continuationtest.ServeModes {
		h := newWaitForever()
		d := continuation.NewDispatcher(h)
		srv := mode.NewServer(t, d)
		rc := dialRaw(t, srv.Listener.Addr().String())
		rc.send(t, getRequest("/"))
		continuationtest.WaitSuspended(t, d, 1)
		if mode == continuationtest.Detached {
			continuationtest.WaitDetached(t, d, 1)
		}
		require.NoError(t, rc.Conn.(*net.TCPConn).CloseWrite())
		<-h.completed
		raw, _, _ := rc.response(t, http.MethodGet)
		responses[mode] = dateLine.ReplaceAllString(raw, "Date: (now)\r")
		assert.True(t, rc.closed(t), mode.String())
		assert.False(t, h.redispatched.Load(), mode.String())
	}
	assert.Equal(t, responses[continuationtest.Attached], responses[continuationtest.Detached])
}

// http.Server.Shutdown closes a connection handed back and idle since, as
// it closes idle ones: to the Server it is new, which alone would hold
// Shutdown for 5 seconds.
func TestDetachedHandBackClosedByShutdown(t *testing.T) {
	h := &waitForOne{
		cs:   make(chan *continuation.Continuation, 1),
		then: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "polled") },
	}
	d, rc, c := waitDetached(t, h)
	srv := rc.server
	require.NoError(t, c.Resume())
	rc.response(t, http.MethodGet)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	srv.Config.RegisterOnShutdown(d.Drain)
	require.NoError(t, srv.Config.Shutdown(ctx), "the Server waited for the connection handed back")
	assert.True(t, rc.closed(t))
}

// A broadcast to detached requests with one worker: the one goroutine
// that gets the worker runs the redispatches one after another, each
// handing the worker to the next; one that calls runtime.Goexit (its
// connection is cut) hands it on too.
func TestDetachedBroadcastOneWorker(t *testing.T) {
	const n = 200
	ws := &waiters{}
	d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if msg, ok := continuation.FromRequest(r).Attribute("msg").(string); ok && r.URL.Path == "/goexit" {
			io.WriteString(w, msg)
			runtime.Goexit()
		}
		ws.ServeHTTP(w, r)
	}), continuation.WithWorkers(1), continuation.WithDefaultTimeout(0))
	srv := continuationtest.Detached.NewServer(t, d)
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, srv.Listener.Addr().String())
		path := "/"
		if i%50 == 0 {
			path = "/goexit"
		}
		conns[i].send(t, getRequest(path))
		require.Eventually(t, func() bool { return ws.len() == i+1 }, 30*time.Second, time.Millisecond)
	}
	continuationtest.WaitDetached(t, d, n)
	require.Equal(t, n, ws.broadcast("hello"))
	for i, rc := range conns {
		if i%50 == 0 {
			assert.True(t, rc.closed(t), "a connection whose handler called runtime.Goexit")
			continue
		}
		_, _, body := rc.response(t, http.MethodGet)
		assert.Equal(t, "hello", body)
	}
	require.Eventually(t, func() bool { return d.Detached() == 0 }, 30*time.Second, time.Millisecond)
}

// http.ResponseController works on a detached response as on net/http's:
// a write deadline that has passed fails the flush, a read deadline and
// full duplex are accepted.
func TestDetachedResponseController(t *testing.T) {
	results := make(chan [3]error, 1)
	h := &waitForOne{
		cs: make(chan *continuation.Continuation, 1),
		then: func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			read, duplex := rc.SetReadDeadline(time.Now().Add(time.Minute)), rc.EnableFullDuplex()
			require.NoError(t, rc.SetWriteDeadline(time.Now().Add(-time.Second)))
			io.WriteString(w, "late")
			results <- [3]error{read, duplex, rc.Flush()}
		},
	}
	_, rc, c := waitDetached(t, h)
	require.NoError(t, c.Resume())
	errs := <-results
	assert.NoError(t, errs[0], "SetReadDeadline")
	assert.NoError(t, errs[1], "EnableFullDuplex")
	assert.ErrorIs(t, errs[2], os.ErrDeadlineExceeded, "Flush after the write deadline")
	assert.True(t, rc.closed(t), "a connection that failed a write is not reused")
}

// Middleware before the Dispatcher sees ServeHTTP return when the request
// detaches, while it still waits; attached, only once it is answered.
func TestModesMiddlewareSeesReturn(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode continuationtest.ServeMode) {
		h := &waitForOne{
			cs:   make(chan *continuation.Continuation, 1),
			then: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "answered") },
		}
		d := continuation.NewDispatcher(h)
		returned := make(chan struct{}, 1)
		srv := mode.NewUnstartedServer(t, d)
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d.ServeHTTP(w, r)
			returned <- struct{}{}
		})
		srv.Start()
		rc := dialRaw(t, srv.Listener.Addr().String())
		rc.send(t, getRequest("/"))
		c := <-h.cs
		continuationtest.WaitSuspended(t, d, 1)
		if mode == continuationtest.Detached {
			select {
			case <-returned:
			case <-time.After(30 * time.Second):
				t.Fatal("ServeHTTP did not return when the request detached")
			}
			assert.True(t, c.IsSuspended())
		} else {
			require.Never(t, func() bool { return len(returned) > 0 }, 100*time.Millisecond, 10*time.Millisecond,
				"ServeHTTP returned while the attached request waits")
		}
		require.NoError(t, c.Resume())
		_, _, body := rc.response(t, http.MethodGet)
		assert.Equal(t, "answered", body)
		if mode == continuationtest.Attached {
			<-returned
		}
	})
}

// A detached client that pipelines a request and then closes its sending
// side is noticed as gone (net/http, holding the pipelined bytes, would
// not notice it while attached).
func TestDetachedPipelinedHalfClose(t *testing.T) {
	h := newWaitForever()
	d := continuation.NewDispatcher(h)
	srv := continuationtest.Detached.NewServer(t, d)
	rc := dialRaw(t, srv.Listener.Addr().String())
	rc.send(t, getRequest("/poll")+getRequest("/next"))
	<-h.parked
	continuationtest.WaitDetached(t, d, 1)
	require.NoError(t, rc.Conn.(*net.TCPConn).CloseWrite())
	select {
	case <-h.completed:
	case <-time.After(10 * time.Second):
		t.Fatal("the half-close was not noticed")
	}
	assert.False(t, h.redispatched.Load())
}

// The gauge of detached requests follows them.
func TestDetachedGauge(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := &waitForOne{
		cs:   make(chan *continuation.Continuation, 1),
		then: func(w http.ResponseWriter, r *http.Request) {},
	}
	d := continuation.NewDispatcher(h, continuation.WithMetrics(reg))
	srv := continuationtest.Detached.NewServer(t, d)
	rc := dialRaw(t, srv.Listener.Addr().String())
	rc.send(t, getRequest("/"))
	c := <-h.cs
	continuationtest.WaitDetached(t, d, 1)
	assert.Equal(t, 1.0, gaugeValue(t, reg, "cometkit_requests_detached"))
	require.NoError(t, c.Resume())
	rc.response(t, http.MethodGet)
	require.Eventually(t, func() bool { return gaugeValue(t, reg, "cometkit_requests_detached") == 0 },
		10*time.Second, time.Millisecond)
	assert.Equal(t, 0.0, metricValue(t, reg, "cometkit_attached_waits_total", "", ""), "waits counted as attached")
}
