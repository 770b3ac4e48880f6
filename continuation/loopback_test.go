package continuation_test

// Real sockets on loopback: thousands of parked requests over HTTP/1.1 and
// over cleartext HTTP/2, disconnect detection, and the goroutine count
// returning to its baseline afterwards.

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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

// waiters is the smallest event source: suspended continuations in a
// synchronized list, all resumed with one message.
type waiters struct {
	mu     sync.Mutex
	list   []continuation.Handle
	parked chan struct{} // if set, one token per request that starts waiting
}

func (ws *waiters) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		return // a probe, answered at once
	}
	c := continuation.FromRequest(r)
	if msg, ok := c.Attribute("msg").(string); ok {
		io.WriteString(w, msg)
		return
	}
	if c.IsExpired() {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := c.Suspend(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	ws.mu.Lock()
	ws.list = append(ws.list, c.Handle())
	ws.mu.Unlock()
	if ws.parked != nil {
		ws.parked <- struct{}{}
	}
}

func (ws *waiters) waitParked() { <-ws.parked }

func (ws *waiters) broadcast(msg string) (resumed int) {
	ws.mu.Lock()
	list := ws.list
	ws.list = nil
	ws.mu.Unlock()
	for _, h := range list {
		h.Continuation().SetAttribute("msg", msg)
		if h.Resume() == nil {
			resumed++
		}
	}
	return resumed
}

func (ws *waiters) len() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.list)
}

// newLoopbackServer starts d on loopback, counting new connections in
// conns if it is not nil.
func newLoopbackServer(t *testing.T, d *continuation.Dispatcher, h2c bool, conns *atomic.Int32) (*httptest.Server, *http.Client) {
	t.Helper()
	ts := continuationtest.NewUnstartedServer(t, d)
	if conns != nil {
		ts.Config.ConnState = func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				conns.Add(1)
			}
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 10000}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		ts.Config.Protocols = &p
		tr.Protocols = &p
		// Up to 1,000 parked streams per connection.
		ts.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
	}
	ts.Start()
	return ts, &http.Client{Transport: tr}
}

// h2cClients returns k clients that each keep to one h2c connection, so
// that each connection carries many parked requests: a Transport left to
// itself dials a new connection for every request that finds none ready.
func h2cClients(k int) []*http.Client {
	clients := make([]*http.Client, k)
	for i := range clients {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		clients[i] = &http.Client{Transport: &http.Transport{
			Protocols: &p,
			HTTP2:     &http.HTTP2Config{StrictMaxConcurrentRequests: true},
		}}
	}
	return clients
}

func closeLoopback(ts *httptest.Server, client *http.Client) {
	client.CloseIdleConnections()
	ts.Close()
}

var wireProto = map[string]string{"HTTP/1.1": "HTTP/1.1", "h2c": "HTTP/2.0"}

// 5,000 requests parked at once, all resumed and answered; afterwards the
// process has no more goroutines than before.
func TestManyParkedRequests(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			const n = 5000
			continuationtest.VerifyNoLeaks(t)
			baseline := runtime.NumGoroutine()
			ws := &waiters{}
			d := continuation.NewDispatcher(ws, continuation.WithDefaultTimeout(0))
			var conns atomic.Int32
			ts, client := newLoopbackServer(t, d, proto == "h2c", &conns)

			clients := []*http.Client{client}
			if proto == "h2c" {
				clients = h2cClients(10)
				for _, c := range clients { // each opens its connection now
					resp, err := c.Head(ts.URL)
					require.NoError(t, err)
					resp.Body.Close()
				}
			}
			var wg sync.WaitGroup
			bodies := make(chan string, n)
			for i := range n {
				client := clients[i%len(clients)]
				wg.Go(func() {
					resp, err := client.Get(ts.URL)
					if !assert.NoError(t, err) {
						return
					}
					defer resp.Body.Close()
					assert.Equal(t, wireProto[proto], resp.Proto)
					b, _ := io.ReadAll(resp.Body)
					bodies <- string(b)
				})
			}
			require.Eventually(t, func() bool { return ws.len() == n }, time.Minute, 10*time.Millisecond,
				"requests suspended: %d of %d", ws.len(), n)
			assert.Equal(t, n, d.Suspended())
			if proto == "HTTP/1.1" {
				// Per parked request: net/http's two server goroutines and
				// the client's three. A goroutine of ours per suspension
				// (or per timer) would make it six.
				perRequest := float64(runtime.NumGoroutine()-baseline) / n
				assert.LessOrEqual(t, perRequest, 5.01, "goroutines per parked request")
			}
			if proto == "h2c" {
				// Many parked requests share each connection.
				assert.Equal(t, len(clients), int(conns.Load()), "connections")
			} else {
				assert.Equal(t, n, int(conns.Load()), "connections")
			}
			assert.Equal(t, n, ws.broadcast("hello"))
			wg.Wait()
			close(bodies)
			got := 0
			for b := range bodies {
				assert.Equal(t, "hello", b)
				got++
			}
			assert.Equal(t, n, got)

			require.NoError(t, d.Shutdown(t.Context()))
			for _, c := range clients {
				c.CloseIdleConnections()
			}
			closeLoopback(ts, client)
		})
	}
}

// A client that goes away while its request is parked ends the request:
// over HTTP/1.1 too, even when the handler left a small request body
// unread (the Dispatcher read it ahead, so that net/http can notice).
func TestDisconnectDetectedOverLoopback(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			completed := make(chan struct{})
			parked := make(chan struct{})
			d := continuation.NewDispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c := continuation.FromRequest(r)
				if !c.IsInitial() {
					t.Error("redispatched after the client went away")
					return
				}
				c.AddListener(continuation.ListenerFuncs{Complete: func(*continuation.Continuation) { close(completed) }})
				require.NoError(t, c.Suspend())
				close(parked)
			}), continuation.WithDefaultTimeout(0))
			ts, client := newLoopbackServer(t, d, proto == "h2c", nil)
			defer closeLoopback(ts, client)
			defer d.Shutdown(context.Background()) // first: answers anything still parked

			ctx, cancel := context.WithCancel(t.Context())
			errc := make(chan error, 1)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL, strings.NewReader("message=unread"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := client.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			<-parked
			cancel()
			assert.ErrorIs(t, <-errc, context.Canceled)
			select {
			case <-completed:
			case <-time.After(30 * time.Second):
				t.Fatal("the server did not notice the client went away")
			}
			assert.Zero(t, d.Suspended())
		})
	}
}
