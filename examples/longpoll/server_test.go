package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cometkit/cometkit/clientmgr"
	"github.com/cometkit/cometkit/continuation"
	"github.com/cometkit/cometkit/servlet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTestServer(t *testing.T, timeout time.Duration, opts ...clientmgr.Option) (*servlet.Container, *clientmgr.Manager) {
	t.Helper()
	mgr := clientmgr.New(opts...)
	c, err := newContainer(mgr, 10*time.Second, continuation.WithDefaultTimeout(timeout))
	require.NoError(t, err)
	t.Cleanup(func() {
		c.Shutdown(context.Background())
		mgr.Close()
	})
	return c, mgr
}

// async runs one request in the background; the result arrives on the channel.
func async(h http.Handler, req *http.Request) <-chan *httptest.ResponseRecorder {
	out := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		out <- rec
	}()
	return out
}

func get(target string) *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }

func publishForm(msg string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/publish", strings.NewReader(url.Values{"message": {msg}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func decode(t *testing.T, rec *httptest.ResponseRecorder) clientmgr.Batch {
	t.Helper()
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var b clientmgr.Batch
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &b))
	return b
}

// texts are the data of a batch's messages.
func texts(b clientmgr.Batch) []string {
	out := []string{}
	for _, m := range b.Messages {
		out = append(out, string(m.Data))
	}
	return out
}

func TestClassicSubscribe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, mgr := newTestServer(t, time.Minute)
		var subs []<-chan *httptest.ResponseRecorder
		for range 3 {
			subs = append(subs, async(c, get("/subscribe")))
		}
		synctest.Wait()
		require.Equal(t, 3, mgr.Count(topic))

		pub := <-async(c, publishForm("hello <world>"))
		assert.Equal(t, "ok", pub.Body.String())
		for _, sub := range subs {
			rec := <-sub
			assert.Equal(t, http.StatusOK, rec.Code)
			assert.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))
			assert.Equal(t, "hello <world>", rec.Body.String())
		}
		// The classic protocol waits for the next message, not an old one.
		sub := async(c, get("/subscribe"))
		synctest.Wait()
		assert.Equal(t, "ok", (<-async(c, publishForm("again"))).Body.String())
		assert.Equal(t, "again", (<-sub).Body.String())
	})
}

func TestSinceCursor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newTestServer(t, time.Minute)
		for _, m := range []string{"a", "b", "c"} {
			<-async(c, publishForm(m))
		}
		// From the start: everything, complete.
		all := decode(t, <-async(c, get("/subscribe?since=")))
		assert.Equal(t, []string{"a", "b", "c"}, texts(all))
		assert.True(t, all.Complete)
		first := all.Messages[0].Cursor().String()
		// Behind: answered at once from the history.
		b := decode(t, <-async(c, get("/subscribe?since="+first)))
		assert.Equal(t, []string{"b", "c"}, texts(b))
		assert.Equal(t, all.Next, b.Next)
		// Up to date: waits, then gets what comes.
		sub := async(c, get("/subscribe?since="+b.Next.String()))
		synctest.Wait()
		<-async(c, publishForm("d"))
		assert.Equal(t, []string{"d"}, texts(decode(t, <-sub)))
		// A plain Seq from before a restart: the whole history, and the
		// client is told.
		stale := decode(t, <-async(c, get("/subscribe?since=99")))
		assert.Len(t, stale.Messages, 4)
		assert.False(t, stale.Complete)
	})
}

// A cursor from before a restart (another epoch) is never taken at face
// value, even where the new sequence has reached its Seq: the client gets
// every message of the new sequence and complete=false.
func TestCursorFromBeforeARestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before, _ := newTestServer(t, time.Minute)
		<-async(before, publishForm("before"))
		seen := decode(t, <-async(before, get("/subscribe?since="))).Next

		after, _ := newTestServer(t, time.Minute) // a new Manager: the restart
		for _, m := range []string{"one", "two", "three"} {
			<-async(after, publishForm(m))
		}
		b := decode(t, <-async(after, get("/subscribe?since="+seen.String())))
		assert.Equal(t, []string{"one", "two", "three"}, texts(b))
		assert.False(t, b.Complete)
	})
}

func TestTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, mgr := newTestServer(t, 25*time.Second)
		start := time.Now()
		assert.Equal(t, http.StatusNoContent, (<-async(c, get("/subscribe"))).Code)
		assert.Equal(t, 25*time.Second, time.Since(start))
		b := decode(t, <-async(c, get("/subscribe?since=0")))
		assert.Empty(t, b.Messages)
		assert.True(t, b.Complete)
		assert.Zero(t, mgr.Count(topic), "expired subscribers are forgotten")
	})
}

func TestBadInput(t *testing.T) {
	big := strings.Repeat("x", maxMessage+1)
	tests := []struct {
		name   string
		req    *http.Request
		code   int
		reason string
	}{
		{"since=abc", get("/subscribe?since=abc"), http.StatusBadRequest, "bad cursor"},
		{"since=-1", get("/subscribe?since=-1"), http.StatusBadRequest, "bad cursor"},
		{"since with a bad epoch", get("/subscribe?since=!!-3"), http.StatusBadRequest, "bad cursor"},
		{"since overflows", get("/subscribe?since=99999999999999999999999"), http.StatusBadRequest, "bad cursor"},
		{"empty message", publishForm(""), http.StatusBadRequest, "message is empty"},
		{"no message field", httptest.NewRequest(http.MethodPost, "/publish", nil), http.StatusBadRequest, "message is empty"},
		{"publish by GET", get("/publish?message=x"), http.StatusMethodNotAllowed, "method not allowed"},
		{"oversized body", publishForm(big), http.StatusRequestEntityTooLarge, "message too large"},
		{"invalid UTF-8", publishForm("\xff\xfe"), http.StatusBadRequest, "message is not valid UTF-8"},
		{"bad form encoding", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/publish", strings.NewReader("message=%zz"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}(), http.StatusBadRequest, "bad form"},
		{"method not allowed", httptest.NewRequest(http.MethodDelete, "/subscribe", nil), http.StatusMethodNotAllowed, "method not allowed"},
		{"unknown path", get("/nope"), http.StatusNotFound, "404 page not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestServer(t, time.Minute)
			rec := <-async(c, tt.req)
			assert.Equal(t, tt.code, rec.Code)
			assert.Contains(t, rec.Header().Get("Content-Type"), "text/plain")
			assert.True(t, strings.HasPrefix(rec.Body.String(), tt.reason), "reason %q", rec.Body.String())
			if tt.code == http.StatusMethodNotAllowed && tt.req.URL.Path == "/subscribe" {
				assert.Equal(t, "GET, HEAD, OPTIONS", rec.Header().Get("Allow"))
			}
		})
	}
}

func TestShutdownAnswersSubscribers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newTestServer(t, time.Hour)
		classic, cursor := async(c, get("/subscribe")), async(c, get("/subscribe?since=0"))
		synctest.Wait()
		require.NoError(t, c.Shutdown(t.Context()))
		assert.Equal(t, http.StatusNoContent, (<-classic).Code)
		assert.Empty(t, decode(t, <-cursor).Messages)
		late := <-async(c, get("/subscribe"))
		assert.Equal(t, http.StatusServiceUnavailable, late.Code)
		assert.NotEmpty(t, late.Header().Get("Retry-After"))
	})
}

// pollSince makes one long-poll with a cursor over HTTP and decodes its
// answer; any status but 200 is an error.
func pollSince(ctx context.Context, client *http.Client, base string, since clientmgr.Cursor) (clientmgr.Batch, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/subscribe?since="+since.String(), nil)
	resp, err := client.Do(req)
	if err != nil {
		return clientmgr.Batch{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return clientmgr.Batch{}, fmt.Errorf("%s: %s", resp.Status, b)
	}
	var b clientmgr.Batch
	return b, json.NewDecoder(resp.Body).Decode(&b)
}

// The loss test: 50 long-poll clients re-polling with since= over
// loopback while a publisher sends 2,000 messages as fast as it can; every
// client gets every message exactly once, in order.
func TestNoMessageLostOverLoopback(t *testing.T) {
	const clients, messages = 50, 2000
	c, _ := newTestServer(t, time.Minute)
	ts := httptest.NewServer(c)
	defer ts.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: clients + 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	var wg sync.WaitGroup
	received := make([][]uint64, clients)
	for i := range clients {
		wg.Go(func() {
			var since clientmgr.Cursor
			for since.Seq < messages {
				b, err := pollSince(context.Background(), client, ts.URL, since)
				if !assert.NoError(t, err) || !assert.True(t, b.Complete) {
					return
				}
				for _, m := range b.Messages {
					received[i] = append(received[i], m.Seq)
				}
				since = b.Next
			}
		})
	}
	for i := range messages {
		resp, err := client.PostForm(ts.URL+"/publish", url.Values{"message": {fmt.Sprint("m", i+1)}})
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	wg.Wait()
	want := make([]uint64, messages)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	for i, got := range received {
		require.Equal(t, want, got, "client %d: every message exactly once, in order", i)
	}
}

// The event stream over a real connection: the backlog after the cursor,
// then each message as it comes, multi-line data as several data: lines,
// keep-alives on timeouts, and a reconnect with Last-Event-ID that picks up
// what was published while away.
func TestEventStream(t *testing.T) {
	c, _ := newTestServer(t, 100*time.Millisecond)
	srv := httptest.NewServer(c)
	defer srv.Close()
	for _, m := range []string{"a", "b", "c"} {
		<-async(c, publishForm(m))
	}
	open := func(query, lastEventID string) (*http.Response, *bufio.Reader) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/events"+query, nil)
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		return resp, bufio.NewReader(resp.Body)
	}
	// next reads one block (up to a blank line) and returns its lines.
	next := func(r *bufio.Reader) []string {
		var lines []string
		for {
			line, err := r.ReadString('\n')
			require.NoError(t, err)
			if line == "\n" {
				return lines
			}
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
	}

	all, _ := pollSince(t.Context(), srv.Client(), srv.URL, clientmgr.Cursor{})
	id := func(i int) string { return all.Messages[i].Cursor().String() }
	resp, r := open("?since="+id(0), "")
	assert.Equal(t, []string{"retry: 1000", ": connected"}, next(r))
	assert.Equal(t, []string{"id: " + id(1), "event: message", "data: b"}, next(r))
	assert.Equal(t, []string{"id: " + id(2), "event: message", "data: c"}, next(r))
	<-async(c, publishForm("line one\rline two"))
	ev := next(r)
	assert.Equal(t, []string{"event: message", "data: line one", "data: line two"}, ev[1:], "a bare CR cannot inject a field")
	assert.Equal(t, []string{": keep-alive"}, next(r), "after the timeout, the stream stays open")
	resp.Body.Close()

	<-async(c, publishForm("while away"))
	resp, r = open("", strings.TrimPrefix(ev[0], "id: "))
	defer resp.Body.Close()
	next(r) // retry
	assert.Equal(t, []string{"event: message", "data: while away"}, next(r)[1:])

	// A Last-Event-ID from another epoch (before a restart): a "missed"
	// event first, then the history.
	stale, rs := open("", "zzz-1")
	defer stale.Body.Close()
	next(rs) // retry
	missed := next(rs)
	assert.Equal(t, "event: missed", missed[0])
	assert.Equal(t, []string{"event: message", "data: a"}, next(rs)[1:])

	bad, err := srv.Client().Get(srv.URL + "/events?since=x")
	require.NoError(t, err)
	bad.Body.Close()
	assert.Equal(t, http.StatusBadRequest, bad.StatusCode)
}
