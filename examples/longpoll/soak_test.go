package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
)

var soak = flag.Duration("soak", 0, "how long TestSoak's clients poll (0: the short run CI makes; 60s is the full soak)")

// answerCounter sits in front of the server and checks that every request
// is answered exactly once: one status line, sent by the time ServeHTTP
// returns, whether it was delivered to or timed out. A request whose client
// has gone cannot be answered; it must end all the same, and is counted
// apart.
type answerCounter struct {
	next                    http.Handler
	started, answered, gone atomic.Int64
	unanswered, double      atomic.Int64
}

func (a *answerCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.started.Add(1)
	cw := &countingWriter{ResponseWriter: w}
	a.next.ServeHTTP(cw, r)
	switch {
	case cw.headers == 0 && r.Context().Err() != nil:
		a.gone.Add(1)
	case cw.headers == 0:
		a.unanswered.Add(1)
	case cw.headers == 1:
		a.answered.Add(1)
	default:
		a.double.Add(1)
	}
}

type countingWriter struct {
	http.ResponseWriter
	headers int // status lines sent
}

func (w *countingWriter) WriteHeader(code int) {
	if code >= 200 { // 1xx are informational, not the answer
		w.headers++
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.headers == 0 {
		w.headers++
	}
	return w.ResponseWriter.Write(b)
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// heapAfterGC is the heap in use once garbage is collected. Twice: what
// sync.Pools hold survives one collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// The soak: 2,000 clients long-poll with since= while a publisher sends at
// random intervals (so that many polls time out), and a quarter of the
// clients hang up in the middle of random polls. At the end: every client,
// including those that hung up, has every message once and in order; every
// request was answered exactly once; nothing is left suspended or
// registered; goroutines and heap are back where they started.
//
// CI runs it for 8 s; go test -race -run TestSoak -timeout 10m
// ./examples/longpoll -args -soak 60s
// is the full soak (docs/operations.md).
func TestSoak(t *testing.T) {
	const clients = 2000
	const leavers = clients / 4 // clients [0, leavers) hang up now and then
	duration := 8 * time.Second
	if *soak > 0 {
		duration = *soak
	}

	mgr := clientmgr.New(clientmgr.WithHistory(4096))
	container, err := newContainer(mgr, 10*time.Second,
		continuation.WithDefaultTimeout(time.Second), // shorter than some publish gaps
		continuation.WithQueueSize(clients),          // the re-polls of one broadcast
		continuation.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	counter := &answerCounter{next: container}
	srv := httptest.NewServer(counter)
	defer func() {
		srv.Close()
		container.Shutdown(context.Background())
		mgr.Close()
	}()
	tr := &http.Transport{MaxIdleConnsPerHost: clients + 1}
	client := &http.Client{Transport: tr}

	goroutinesBefore, heapBefore := runtime.NumGoroutine(), heapAfterGC()

	var published atomic.Uint64 // acknowledged messages; Seq n carries "m<n>"
	var hangups, timeouts atomic.Int64
	// The clients poll until stop, then until they have every message.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	received := make([][]uint64, clients)
	for i := range clients {
		wg.Go(func() {
			var since clientmgr.Cursor
			for {
				select {
				case <-stop:
					if since.Seq >= published.Load() {
						return
					}
				default:
				}
				ctx, hangUp := context.Background(), context.CancelFunc(func() {})
				if i < leavers && rand.IntN(10) == 0 {
					ctx, hangUp = context.WithTimeout(ctx, time.Duration(rand.IntN(300))*time.Millisecond)
				}
				b, err := pollSince(ctx, client, srv.URL, since)
				hangUp()
				if ctx.Err() != nil {
					hangups.Add(1)
					continue // and poll again from the same cursor
				}
				if !assert.NoError(t, err, "client %d", i) || !assert.True(t, b.Complete, "client %d told it missed messages", i) {
					return
				}
				if len(b.Messages) == 0 {
					timeouts.Add(1)
				}
				for _, m := range b.Messages {
					if !assert.Equal(t, fmt.Sprint("m", m.Seq), string(m.Data)) {
						return
					}
					received[i] = append(received[i], m.Seq)
				}
				since = b.Next
			}
		})
	}

	// The publisher: random gaps of 0 to 1.5 s, one message at a time, and
	// every fourth gap 1.5 s, so that some polls surely time out.
	var goroutinesPeak int
	var heapMid uint64
	start := time.Now()
	for time.Since(start) < duration {
		n := published.Load() + 1
		gap := time.Duration(rand.IntN(1500)) * time.Millisecond
		if n%4 == 0 {
			gap = 1500 * time.Millisecond
		}
		time.Sleep(gap)
		resp, err := client.PostForm(srv.URL+"/publish", url.Values{"message": {fmt.Sprint("m", n)}})
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		published.Store(n)
		goroutinesPeak = max(goroutinesPeak, runtime.NumGoroutine())
		if heapMid == 0 && time.Since(start) > duration/4 {
			heapMid = heapAfterGC() // with every client connected
		}
	}
	heapEnd := heapAfterGC()
	close(stop)
	wg.Wait()
	tr.CloseIdleConnections()
	t.Logf("%d messages, %d requests, %d hang-ups, %d empty polls (timeouts); heap %d KiB at a quarter, %d KiB at the end",
		published.Load(), counter.started.Load(), hangups.Load(), timeouts.Load(), heapMid>>10, heapEnd>>10)

	want := make([]uint64, published.Load())
	for i := range want {
		want[i] = uint64(i + 1)
	}
	for i, got := range received {
		who := "stayed"
		if i < leavers {
			who = "hung up now and then"
		}
		require.Equal(t, want, got, "client %d (%s): every message exactly once, in order", i, who)
	}
	assert.Positive(t, hangups.Load(), "some polls were hung up on")
	assert.Positive(t, timeouts.Load(), "some polls timed out")

	// Every request answered exactly once; nothing left waiting.
	// (The server may still be ending the requests of the last hang-ups.)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if counter.started.Load() == counter.answered.Load()+counter.gone.Load()+counter.unanswered.Load()+counter.double.Load() {
			break
		}
	}
	assert.Equal(t, counter.started.Load(), counter.answered.Load()+counter.gone.Load(), "requests started %d: answered once %d, client gone %d, never answered %d, answered twice or more %d",
		counter.started.Load(), counter.answered.Load(), counter.gone.Load(), counter.unanswered.Load(), counter.double.Load())
	assert.LessOrEqual(t, counter.gone.Load(), hangups.Load(), "only the clients that hung up went unanswered")
	assert.Zero(t, mgr.Count(topic))

	// No growth: with the clients gone, goroutines come back to where they
	// started, and the heap has not grown between a quarter of the run and
	// its end, nor (beyond the history kept) since the start.
	perClient := float64(goroutinesPeak-goroutinesBefore) / clients
	assert.Less(t, perClient, 8.0, "goroutines per client at the peak")
	goroutinesAfter := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); goroutinesAfter > goroutinesBefore && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		goroutinesAfter = runtime.NumGoroutine()
	}
	assert.LessOrEqual(t, goroutinesAfter, goroutinesBefore, "goroutines after the run, against before it")
	// Mid-run figures move with how many requests are in flight; a leak
	// shows as steady growth, far beyond that.
	assert.Less(t, heapEnd, heapMid+heapMid/2+8<<20, "heap grew during the run")
	assert.Less(t, heapAfterGC(), heapBefore+8<<20, "heap after the run, against before it")
}
